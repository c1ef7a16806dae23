"""LoRA key names -> layers of the flow-matching transformers (Flux.1, SD3 MMDiT), the counterpart of lora_keys.py's
UNet tables.

    BFL / ComfyUI      double_blocks.0.img_attn.qkv, diffusion_model.…, model.diffusion_model.…
    kohya sd-scripts   lora_unet_double_blocks_0_img_attn_qkv, lora_unet_single_blocks_3_linear1 (the BFL names)
    diffusers / PEFT   transformer.transformer_blocks.0.attn.to_q, transformer.single_transformer_blocks.0.proj_mlp,
    (ai-toolkit,       …; also lora_transformer_<underscored> (OneTrainer), lycoris_<underscored> (SimpleTuner),
    SimpleTuner)       base_model.model.<name> (SD3)

diffusers keeps q, k and v (and Flux's single-block MLP input) as separate layers where the released weights fuse
them into one Linear (``img_attn.qkv``, ``linear1``, ``x_block.attn.qkv``): such a LoRA adapts a block of output rows
of the fused weight, a `LoraTarget` with `rows`. diffusers' final norm (``norm_out.linear``, and SD3's last
``norm1_context.linear``) orders its output (shift, scale) where the checkpoint orders (scale, shift): `swap_halves`.
The tables follow ComfyUI's ``comfy/utils.py`` (flux_to_diffusers, mmdit_to_diffusers) and ``comfy/lora.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from diffusion.flux import Flux
from diffusion.lora_keys import lora_targets, underscored
from diffusion.mmdit import MMDiT


@dataclass(frozen=True)
class LoraTarget:
    """What one LoRA base key adapts: a layer, or a block of its output rows."""

    module: str
    """Dotted module name (the checkpoint's, without "diffusion_model.")."""
    rows: tuple[int, int] | None = None
    """(offset, size): the output rows the LoRA's up factor gives (q, k or v of a fused qkv); None = all."""
    swap_halves: bool = False
    """The file's output halves come in the other order: diffusers' (shift, scale), the checkpoint's (scale, shift)."""


def _slices(name: str, width: int, parts: tuple[str, ...]) -> Iterator[tuple[str, LoraTarget]]:
    """diffusers' separate projections -> consecutive `width`-row blocks of the fused layer `name`."""
    for index, part in enumerate(parts):
        yield part, LoraTarget(name, (index * width, width))


def flux_diffusers_names(flux: Flux) -> dict[str, LoraTarget]:
    """diffusers FluxTransformer2DModel layer names -> Flux layers (ComfyUI's flux_to_diffusers)."""
    cfg = flux.config
    dim = cfg.hidden_size
    names: dict[str, LoraTarget] = {}
    for i in range(cfg.depth):
        src, dst = f"transformer_blocks.{i}", f"double_blocks.{i}"
        for part, target in _slices(f"{dst}.img_attn.qkv", dim, ("to_q", "to_k", "to_v")):
            names[f"{src}.attn.{part}"] = target
        for part, target in _slices(f"{dst}.txt_attn.qkv", dim, ("add_q_proj", "add_k_proj", "add_v_proj")):
            names[f"{src}.attn.{part}"] = target
        for d_name, name in (("attn.to_out.0", "img_attn.proj"), ("attn.to_add_out", "txt_attn.proj"),
                             ("norm1.linear", "img_mod.lin"), ("norm1_context.linear", "txt_mod.lin"),
                             ("ff.net.0.proj", "img_mlp.0"), ("ff.net.2", "img_mlp.2"),
                             ("ff_context.net.0.proj", "txt_mlp.0"), ("ff_context.net.2", "txt_mlp.2")):
            names[f"{src}.{d_name}"] = LoraTarget(f"{dst}.{name}")
    for i in range(cfg.depth_single_blocks):
        src, dst = f"single_transformer_blocks.{i}", f"single_blocks.{i}"
        for part, target in _slices(f"{dst}.linear1", dim, ("to_q", "to_k", "to_v")):
            names[f"{src}.attn.{part}"] = target
        names[f"{src}.proj_mlp"] = LoraTarget(f"{dst}.linear1", (3 * dim, cfg.mlp_hidden))
        names[f"{src}.norm.linear"] = LoraTarget(f"{dst}.modulation.lin")
        names[f"{src}.proj_out"] = LoraTarget(f"{dst}.linear2")
    for d_name, name in (("x_embedder", "img_in"), ("context_embedder", "txt_in"), ("proj_out", "final_layer.linear"),
                         ("time_text_embed.timestep_embedder.linear_1", "time_in.in_layer"),
                         ("time_text_embed.timestep_embedder.linear_2", "time_in.out_layer"),
                         ("time_text_embed.text_embedder.linear_1", "vector_in.in_layer"),
                         ("time_text_embed.text_embedder.linear_2", "vector_in.out_layer"),
                         ("time_text_embed.guidance_embedder.linear_1", "guidance_in.in_layer"),
                         ("time_text_embed.guidance_embedder.linear_2", "guidance_in.out_layer")):
        names[d_name] = LoraTarget(name)
    names["norm_out.linear"] = LoraTarget("final_layer.adaLN_modulation.1", swap_halves=True)
    return names


def mmdit_diffusers_names(mmdit: MMDiT) -> dict[str, LoraTarget]:
    """diffusers SD3Transformer2DModel layer names -> MMDiT layers (ComfyUI's mmdit_to_diffusers)."""
    cfg = mmdit.config
    dim = cfg.hidden_size
    names: dict[str, LoraTarget] = {}
    for i in range(cfg.depth):
        src, dst = f"transformer_blocks.{i}", f"joint_blocks.{i}"
        for part, target in _slices(f"{dst}.x_block.attn.qkv", dim, ("to_q", "to_k", "to_v")):
            names[f"{src}.attn.{part}"] = target
        for part, target in _slices(f"{dst}.context_block.attn.qkv", dim, ("add_q_proj", "add_k_proj", "add_v_proj")):
            names[f"{src}.attn.{part}"] = target
        for part, target in _slices(f"{dst}.x_block.attn2.qkv", dim, ("to_q", "to_k", "to_v")):
            names[f"{src}.attn2.{part}"] = target
        for d_name, name in (("attn.to_out.0", "x_block.attn.proj"), ("attn.to_add_out", "context_block.attn.proj"),
                             ("attn2.to_out.0", "x_block.attn2.proj"),
                             ("norm1.linear", "x_block.adaLN_modulation.1"),
                             ("norm1_context.linear", "context_block.adaLN_modulation.1"),
                             ("ff.net.0.proj", "x_block.mlp.fc1"), ("ff.net.2", "x_block.mlp.fc2"),
                             ("ff_context.net.0.proj", "context_block.mlp.fc1"),
                             ("ff_context.net.2", "context_block.mlp.fc2")):
            names[f"{src}.{d_name}"] = LoraTarget(f"{dst}.{name}")
    last = cfg.depth - 1
    names[f"transformer_blocks.{last}.norm1_context.linear"] = LoraTarget(
        f"joint_blocks.{last}.context_block.adaLN_modulation.1", swap_halves=True)
    for d_name, name in (("pos_embed.proj", "x_embedder.proj"), ("context_embedder", "context_embedder"),
                         ("time_text_embed.timestep_embedder.linear_1", "t_embedder.mlp.0"),
                         ("time_text_embed.timestep_embedder.linear_2", "t_embedder.mlp.2"),
                         ("time_text_embed.text_embedder.linear_1", "y_embedder.mlp.0"),
                         ("time_text_embed.text_embedder.linear_2", "y_embedder.mlp.2"),
                         ("proj_out", "final_layer.linear")):
        names[d_name] = LoraTarget(name)
    names["norm_out.linear"] = LoraTarget("final_layer.adaLN_modulation.1", swap_halves=True)
    return names


def dit_aliases(model: Flux | MMDiT) -> dict[str, LoraTarget]:
    """Every base key a LoRA file may use for a layer of this Flux / MMDiT -> what it adapts (Linear/Conv2d only;
    diffusers names whose layer this model lacks, e.g. Flux schnell's guidance_in, are left out)."""
    targets = lora_targets(model)
    aliases: dict[str, LoraTarget] = {}
    for name in targets:
        target = LoraTarget(name)
        for alias in (name, "diffusion_model." + name, "model.diffusion_model." + name,
                      "lora_unet_" + underscored(name)):
            aliases[alias] = target
    if isinstance(model, Flux):
        diffusers = flux_diffusers_names(model)
        dim = model.config.hidden_size
        for i in range(model.config.depth_single_blocks):  # ComfyUI's "linear1_qkv": the attention rows of linear1
            aliases[f"single_blocks.{i}.linear1_qkv"] = LoraTarget(f"single_blocks.{i}.linear1", (0, 3 * dim))
            aliases[f"diffusion_model.single_blocks.{i}.linear1_qkv"] = aliases[f"single_blocks.{i}.linear1_qkv"]
    else:
        diffusers = mmdit_diffusers_names(model)
    for d_name, target in diffusers.items():
        if target.module not in targets:
            continue
        for alias in ("transformer." + d_name, "base_model.model." + d_name, "lora_transformer_" + underscored(d_name),
                      "lycoris_" + underscored(d_name)):
            aliases.setdefault(alias, target)
    return aliases


__all__ = ["LoraTarget", "dit_aliases", "flux_diffusers_names", "mmdit_diffusers_names"]
