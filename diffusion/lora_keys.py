"""LoRA key names -> module names of the model at hand.

LoRA files name the layer they adapt in one of several conventions; every one is turned into the same thing here: an
alias table `file base key -> module name` built from the model itself, so one dictionary lookup resolves a key.

    kohya sd-scripts   lora_unet_<module path, dots as underscores>        SD1/SD2: diffusers paths; SDXL: LDM paths
                       lora_te_ / lora_te1_ / lora_te2_ + text_model_encoder_layers_0_self_attn_q_proj ...
    LDM / ComfyUI      model.diffusion_model.input_blocks.1.1.proj_in, diffusion_model.…, lora_unet_input_blocks_…
                       cond_stage_model.transformer.text_model.…, text_encoders.clip_l.transformer.text_model.…
    diffusers / PEFT   unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q, text_encoder(_2).text_model.…

Underscored names cannot be turned back into dotted ones (module names contain underscores), which is why the tables
go from the model's module names to every alias rather than parsing the file's keys.

The diffusers <-> LDM UNet map is derived from a `UNetConfig`, block by block, in the order `UNetModel` builds them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

from torch import nn

from diffusion.families import TextEncoderSlot
from diffusion.unet import UNetConfig

LoraPart = Literal["down", "up", "mid", "alpha"]

# Tensor-name endings of the low-rank factors, per convention (checked in order; the first that matches wins).
# "down" maps input -> rank (A), "up" rank -> output (B); "mid" is LoCon/LyCORIS Tucker's spatial core.
_PART_SUFFIXES: tuple[tuple[str, LoraPart], ...] = (
    (".lora_down.weight", "down"),  # kohya, LDM, ComfyUI
    (".lora_up.weight", "up"),
    (".lora_mid.weight", "mid"),
    (".alpha", "alpha"),
    (".lora_A.weight", "down"),  # PEFT (diffusers >= 0.22)
    (".lora_B.weight", "up"),
    (".lora.down.weight", "down"),  # diffusers LoRACompatibleLinear/Conv
    (".lora.up.weight", "up"),
    ("_lora.down.weight", "down"),  # diffusers attention processors: attn1.processor.to_q_lora.down.weight
    ("_lora.up.weight", "up"),
)
# diffusers attention-processor LoRAs name the projection under ".processor."; the module itself is the attention's.
_PROCESSOR = re.compile(r"\.processor\.(to_q|to_k|to_v|to_out)$")

# Key beginnings that address a text encoder (everything else is taken to address the UNet).
TEXT_ENCODER_PREFIXES = (
    "lora_te_", "lora_te1_", "lora_te2_", "lora_te3_", "text_encoder.", "text_encoder_2.", "cond_stage_model.",
    "conditioner.", "text_encoders.",
)


def split_lora_key(key: str) -> tuple[str, LoraPart] | None:
    """A file key -> (base key naming the module, which factor), or None for a tensor no supported format has."""
    for suffix, part in _PART_SUFFIXES:
        if key.endswith(suffix):
            base = key[: -len(suffix)]
            if suffix.startswith("_lora."):
                base = _PROCESSOR.sub(lambda m: "." + ("to_out.0" if m.group(1) == "to_out" else m.group(1)), base)
            return base, part
    return None


def is_text_encoder_key(base: str) -> bool:
    """Whether a base key addresses a text encoder (kohya lora_te*, diffusers text_encoder*, LDM prefixes)."""
    return base.startswith(TEXT_ENCODER_PREFIXES)


# ---------------------------------------------------------------------------------------------------------------
# UNet: diffusers <-> LDM

# diffusers ResnetBlock2D names -> the LDM ResBlock's (Sequential indices as in unet.ResBlock).
RESNET_NAMES: Mapping[str, str] = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
# Per transformer block, the weight-bearing modules (same names in diffusers' BasicTransformerBlock and LDM's).
_TRANSFORMER_BLOCK_NAMES = (
    "norm1", "norm2", "norm3", "ff.net.0.proj", "ff.net.2",
    *(f"{attn}.{proj}" for attn in ("attn1", "attn2") for proj in ("to_q", "to_k", "to_v", "to_out.0")),
)

BlockKind = Literal["layer", "resnet", "transformer"]


@dataclass(frozen=True)
class _Block:
    diffusers: str
    ldm: str
    kind: BlockKind
    depth: int = 0  # transformer blocks, for kind "transformer"
    has_shortcut: bool = False  # resnet with a 1x1 skip convolution (channel count changes)


def _unet_blocks(config: UNetConfig) -> Iterator[_Block]:
    """The UNet's blocks with both names, in the order UNetModel builds them."""
    nrb, levels, mc = config.num_res_blocks, len(config.channel_mult), config.model_channels
    yield _Block("conv_in", "input_blocks.0.0", "layer")
    yield _Block("time_embedding.linear_1", "time_embed.0", "layer")
    yield _Block("time_embedding.linear_2", "time_embed.2", "layer")
    if config.adm_in_channels is not None:
        yield _Block("add_embedding.linear_1", "label_emb.0.0", "layer")
        yield _Block("add_embedding.linear_2", "label_emb.0.2", "layer")

    index, ch, skips = 1, mc, [mc]
    for level, mult in enumerate(config.channel_mult):
        depth = config.transformer_depth[level]
        for j in range(nrb):
            yield _Block(f"down_blocks.{level}.resnets.{j}", f"input_blocks.{index}.0", "resnet",
                         has_shortcut=ch != mult * mc)
            ch = mult * mc
            if depth > 0:
                yield _Block(f"down_blocks.{level}.attentions.{j}", f"input_blocks.{index}.1", "transformer", depth)
            skips.append(ch)
            index += 1
        if level != levels - 1:
            yield _Block(f"down_blocks.{level}.downsamplers.0.conv", f"input_blocks.{index}.0.op", "layer")
            skips.append(ch)
            index += 1

    yield _Block("mid_block.resnets.0", "middle_block.0", "resnet")
    last = 1
    if config.transformer_depth_middle > 0:
        yield _Block("mid_block.attentions.0", "middle_block.1", "transformer", config.transformer_depth_middle)
        last = 2
    yield _Block("mid_block.resnets.1", f"middle_block.{last}", "resnet")

    index = 0
    for up, level in enumerate(reversed(range(levels))):
        mult, depth = config.channel_mult[level], config.transformer_depth_output[up]
        for j in range(nrb + 1):
            # Output ResBlocks take the skip concatenated to their input, so the width always changes (a shortcut).
            yield _Block(f"up_blocks.{up}.resnets.{j}", f"output_blocks.{index}.0", "resnet",
                         has_shortcut=ch + skips.pop() != mult * mc)
            ch = mult * mc
            if depth > 0:
                yield _Block(f"up_blocks.{up}.attentions.{j}", f"output_blocks.{index}.1", "transformer", depth)
            if level != 0 and j == nrb:
                position = 2 if depth > 0 else 1
                yield _Block(f"up_blocks.{up}.upsamplers.0.conv", f"output_blocks.{index}.{position}.conv", "layer")
            index += 1

    yield _Block("conv_norm_out", "out.0", "layer")
    yield _Block("conv_out", "out.2", "layer")


def unet_diffusers_to_ldm(config: UNetConfig) -> dict[str, str]:
    """Every weight-bearing module of the UNet: diffusers name -> LDM (checkpoint) name.

    E.g. SD1.5: "down_blocks.1.resnets.0.conv1" -> "input_blocks.4.0.in_layers.2",
    "up_blocks.1.upsamplers.0.conv" -> "output_blocks.5.2.conv".
    """
    names: dict[str, str] = {}
    for block in _unet_blocks(config):
        if block.kind == "layer":
            names[block.diffusers] = block.ldm
        elif block.kind == "resnet":
            for d_name, l_name in RESNET_NAMES.items():
                if d_name != "conv_shortcut" or block.has_shortcut:
                    names[f"{block.diffusers}.{d_name}"] = f"{block.ldm}.{l_name}"
        else:
            for name in ("norm", "proj_in", "proj_out"):
                names[f"{block.diffusers}.{name}"] = f"{block.ldm}.{name}"
            for k in range(block.depth):
                for name in _TRANSFORMER_BLOCK_NAMES:
                    inner = f"transformer_blocks.{k}.{name}"
                    names[f"{block.diffusers}.{inner}"] = f"{block.ldm}.{inner}"
    return names


def lora_targets(module: nn.Module) -> dict[str, nn.Module]:
    """The modules a LoRA can adapt (Linear and Conv2d), by name."""
    return {name: m for name, m in module.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


def underscored(name: str) -> str:
    """A module name in kohya's spelling (dots as underscores)."""
    return name.replace(".", "_")


def unet_aliases(unet: nn.Module, config: UNetConfig) -> dict[str, str]:
    """Every base key a LoRA file may use for a UNet layer -> the LDM module name (Linear/Conv2d layers only)."""
    targets = lora_targets(unet)
    diffusers_of = {ldm: d for d, ldm in unet_diffusers_to_ldm(config).items()}
    aliases: dict[str, str] = {}
    for name in targets:
        spellings = [name, "lora_unet_" + underscored(name)]
        spellings += ["model.diffusion_model." + name, "diffusion_model." + name]
        if (d := diffusers_of.get(name)) is not None:
            spellings += [d, "unet." + d, "lora_unet_" + underscored(d)]
        for alias in spellings:
            aliases[alias] = name
    return aliases


# ---------------------------------------------------------------------------------------------------------------
# Text encoders

# OpenCLIP checkpoint names of the text layers that exist one-to-one in the HF-named module (q/k/v are fused in
# OpenCLIP's in_proj, so a LoRA on in_proj has no single target and stays unmatched).
_HF_TO_OPEN_CLIP = (
    (r"text_model\.encoder\.layers\.(\d+)\.self_attn\.out_proj", r"transformer.resblocks.\1.attn.out_proj"),
    (r"text_model\.encoder\.layers\.(\d+)\.mlp\.fc1", r"transformer.resblocks.\1.mlp.c_fc"),
    (r"text_model\.encoder\.layers\.(\d+)\.mlp\.fc2", r"transformer.resblocks.\1.mlp.c_proj"),
)


def _kohya_text_prefix(slot: TextEncoderSlot, encoder_count: int) -> str:
    """sd-scripts: "lora_te_" for a single text encoder; SDXL's CLIP-L is te1 and bigG te2; T5 is te3 (SD3, and
    Flux in ComfyUI's table; OneTrainer's Flux LoRAs name it te2, an extra alias in text_encoder_aliases)."""
    if slot.name == "t5xxl":
        return "lora_te3_"
    if slot.name == "clip_g":
        return "lora_te2_"
    return "lora_te1_" if encoder_count > 1 else "lora_te_"


def text_encoder_aliases(slot: TextEncoderSlot, encoder: nn.Module, *, encoder_count: int) -> dict[str, str]:
    """Every base key a LoRA file may use for a layer of this text encoder -> its module name (HF CLIP names).

    encoder_count: how many text encoders the family has (decides kohya's lora_te_ vs lora_te1_).
    """
    diffusers_prefix = "text_encoder_2." if slot.name == "clip_g" else "text_encoder."
    kohya_prefix = _kohya_text_prefix(slot, encoder_count)
    open_clip = slot.prefix.endswith(".model.")  # OpenCLIP layout in the checkpoint: its own names
    aliases: dict[str, str] = {}
    for name in lora_targets(encoder):
        spellings = [
            kohya_prefix + underscored(name),
            diffusers_prefix + name,
            f"text_encoders.{slot.name}.transformer.{name}",  # ComfyUI's own LoRA saves
        ]
        if name.startswith("text_model."):
            spellings.append(diffusers_prefix + name[len("text_model."):])  # transformers 5 drops "text_model."
        if slot.name == "t5xxl" and encoder_count == 2:
            spellings.append("lora_te2_" + underscored(name))  # OneTrainer's Flux LoRAs (CLIP-L + T5)
        if not open_clip:
            spellings.append(slot.prefix + name)
        else:
            for pattern, replacement in _HF_TO_OPEN_CLIP:
                if re.fullmatch(pattern, name):
                    spellings.append(slot.prefix + re.sub(pattern, replacement, name))
            if name == "text_projection":
                spellings.append(slot.prefix + name)
        for alias in spellings:
            aliases[alias] = name
    return aliases


__all__ = [
    "RESNET_NAMES",
    "TEXT_ENCODER_PREFIXES",
    "LoraPart",
    "is_text_encoder_key",
    "lora_targets",
    "split_lora_key",
    "text_encoder_aliases",
    "unet_aliases",
    "underscored",
    "unet_diffusers_to_ldm",
]
