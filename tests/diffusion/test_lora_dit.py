"""LoRA on Flux.1 and SD3 (MMDiT): each key format people train with, written as a tiny random file for the tiny
models of tests/diffusion/tiny_flow_models.py, loaded through LoraLoaderModelOnly; the patched model's output equals
the output of a copy whose weights were explicitly updated W[rows] += scale · up @ down (up's halves swapped where
diffusers orders (shift, scale))."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from diffusion.dit_layers import FP8_DTYPES, storage_dtypes
from diffusion.families import FLUX, SD3
from diffusion.flow_sampling import FluxSampling, ShiftedFlowSampling
from diffusion.flux import Flux
from diffusion.handles import Model
from diffusion.lora import apply_lora, load_lora_file
from diffusion.lora_keys_dit import dit_aliases, flux_diffusers_names, mmdit_diffusers_names
from diffusion.memory import ModelManager
from diffusion.mmdit import MMDiT
from diffusion.patches import applied_to_model
from nodes.context import RunContext
from nodes.loaders import LoraLoaderModelOnly
from tests.diffusion.tiny_flow_models import TINY_FLUX, TINY_MMDIT, _randomize

DIM_FLUX, DIM_SD3 = TINY_FLUX.hidden_size, TINY_MMDIT.hidden_size


@dataclass(frozen=True)
class Entry:
    """One LoRA layer of a test file: its base key, and what it must adapt."""

    base: str
    module: str
    rows: tuple[int, int] | None = None
    swap: bool = False
    alpha: float | None = 4.0


@pytest.fixture(scope="module")
def flux() -> Flux:
    model = Flux(TINY_FLUX).eval().requires_grad_(False)
    _randomize(model, 0)
    return model


@pytest.fixture(scope="module")
def mmdit() -> MMDiT:
    model = MMDiT(TINY_MMDIT).eval().requires_grad_(False)
    _randomize(model, 10)
    return model


def _handle(module: nn.Module) -> Model:
    if isinstance(module, Flux):
        return Model(unet=module, family=FLUX, sampling=FluxSampling(shift=1.15), name="tiny-flux")
    return Model(unet=module, family=SD3, sampling=ShiftedFlowSampling(shift=3.0), name="tiny-sd3")


def _factors(module: nn.Module, entry: Entry, rank: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    layer = module.get_submodule(entry.module)
    out, in_ = layer.weight.shape[0], layer.weight[0].numel()
    rows = entry.rows[1] if entry.rows else out
    return torch.randn(rank, in_, generator=gen) * 0.3, torch.randn(rows, rank, generator=gen) * 0.3


def _write(path: Path, module: nn.Module, entries: list[Entry], names: tuple[str, str], *, rank: int = 4,
           extra: dict[str, torch.Tensor] | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """A LoRA file with (down, up) under the given factor names; returns the factors by base key."""
    gen = torch.Generator().manual_seed(len(entries))
    tensors: dict[str, torch.Tensor] = dict(extra or {})
    factors = {}
    for entry in entries:
        down, up = _factors(module, entry, rank, gen)
        factors[entry.base] = (down, up)
        tensors[f"{entry.base}.{names[0]}"] = down
        tensors[f"{entry.base}.{names[1]}"] = up
        if entry.alpha is not None:
            tensors[f"{entry.base}.alpha"] = torch.tensor(entry.alpha)
    save_file(tensors, path)
    return factors


def _explicit(module: nn.Module, entries: list[Entry], factors, strength: float) -> nn.Module:
    """A copy with W[rows] += strength · alpha / rank · up @ down, written into the weights."""
    merged = copy.deepcopy(module)
    with torch.no_grad():
        for entry in entries:
            down, up = factors[entry.base]
            if entry.swap:
                shift, scale = up.chunk(2)
                up = torch.cat([scale, shift])
            alpha = entry.alpha if entry.alpha is not None else down.shape[0]
            delta = strength * alpha / down.shape[0] * (up @ down)
            weight = merged.get_submodule(entry.module).weight
            offset, size = entry.rows or (0, weight.shape[0])
            weight[offset:offset + size] += delta.reshape(weight[offset:offset + size].shape)
    return merged


def _inputs(module: nn.Module) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    if isinstance(module, Flux):
        return {"x": torch.randn(1, 16, 4, 6, generator=gen), "timestep": torch.tensor([0.6]),
                "context": torch.randn(1, 5, TINY_FLUX.context_in_dim, generator=gen),
                "y": torch.randn(1, TINY_FLUX.vec_in_dim, generator=gen), "guidance": torch.tensor([3.5])}
    return {"x": torch.randn(1, 16, 4, 6, generator=gen), "timestep": torch.tensor([600.0]),
            "context": torch.randn(1, 5, TINY_MMDIT.context_in_dim, generator=gen),
            "y": torch.randn(1, TINY_MMDIT.adm_in_channels, generator=gen)}


def _run(model: Model) -> torch.Tensor:
    with torch.inference_mode(), applied_to_model(model) as net:
        return net(**_inputs(net))


def _ctx(folder: Path) -> RunContext:
    services = SimpleNamespace(folders=SimpleNamespace(model_path=lambda kind, name: folder / name),
                               models=ModelManager(torch.device("cpu")))
    return RunContext(node_id="n", prompt_id="p", services=services)  # type: ignore[arg-type]


def _check_format(tmp_path: Path, module: nn.Module, entries: list[Entry], names: tuple[str, str],
                  strength: float = 0.8) -> None:
    factors = _write(tmp_path / "lora.safetensors", module, entries, names)
    (patched,) = LoraLoaderModelOnly.run(_ctx(tmp_path), model=_handle(module), lora_name="lora.safetensors",
                                         strength_model=strength)
    assert len(patched.patches) == len(entries)
    expected = _explicit(module, entries, factors, strength)
    with torch.inference_mode():
        want = expected(**_inputs(module))
        base = module(**_inputs(module))
    got = _run(patched)
    assert not torch.allclose(got, base, atol=1e-3)  # the LoRA does something
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(_run(_handle(module)), base, rtol=0, atol=0)  # the shared weights are untouched


# ---------------------------------------------------------------------------------------------------------------
# Flux


def test_kohya_flux_lora(tmp_path, flux) -> None:
    entries = [Entry("lora_unet_double_blocks_0_img_attn_qkv", "double_blocks.0.img_attn.qkv"),
               Entry("lora_unet_double_blocks_0_txt_mlp_0", "double_blocks.0.txt_mlp.0"),
               Entry("lora_unet_single_blocks_1_linear1", "single_blocks.1.linear1", alpha=None),
               Entry("lora_unet_single_blocks_0_modulation_lin", "single_blocks.0.modulation.lin")]
    _check_format(tmp_path, flux, entries, ("lora_down.weight", "lora_up.weight"))


@pytest.mark.parametrize("prefix", ["diffusion_model.", "model.diffusion_model.", ""])
@pytest.mark.parametrize("names", [("lora_A.weight", "lora_B.weight"), ("lora_down.weight", "lora_up.weight")])
def test_bfl_and_comfyui_named_flux_lora(tmp_path, flux, prefix, names) -> None:
    entries = [Entry(f"{prefix}double_blocks.0.img_attn.proj", "double_blocks.0.img_attn.proj"),
               Entry(f"{prefix}double_blocks.0.txt_attn.qkv", "double_blocks.0.txt_attn.qkv"),
               Entry(f"{prefix}single_blocks.1.linear2", "single_blocks.1.linear2"),
               Entry(f"{prefix}final_layer.linear", "final_layer.linear")]
    _check_format(tmp_path, flux, entries, names)


def test_diffusers_flux_lora_adapts_row_blocks_of_the_fused_weights(tmp_path, flux) -> None:
    """ai-toolkit / diffusers / PEFT: q, k, v (and proj_mlp) are separate layers in diffusers, row blocks of
    img_attn.qkv / txt_attn.qkv / linear1 here; norm_out's halves are swapped."""
    d, mlp = DIM_FLUX, TINY_FLUX.mlp_hidden
    t = "transformer."
    entries = [Entry(t + "transformer_blocks.0.attn.to_q", "double_blocks.0.img_attn.qkv", (0, d)),
               Entry(t + "transformer_blocks.0.attn.to_k", "double_blocks.0.img_attn.qkv", (d, d)),
               Entry(t + "transformer_blocks.0.attn.to_v", "double_blocks.0.img_attn.qkv", (2 * d, d), alpha=None),
               Entry(t + "transformer_blocks.0.attn.add_k_proj", "double_blocks.0.txt_attn.qkv", (d, d)),
               Entry(t + "transformer_blocks.0.attn.to_add_out", "double_blocks.0.txt_attn.proj"),
               Entry(t + "transformer_blocks.0.ff.net.0.proj", "double_blocks.0.img_mlp.0"),
               Entry(t + "transformer_blocks.0.norm1_context.linear", "double_blocks.0.txt_mod.lin"),
               Entry(t + "single_transformer_blocks.1.attn.to_k", "single_blocks.1.linear1", (d, d)),
               Entry(t + "single_transformer_blocks.1.proj_mlp", "single_blocks.1.linear1", (3 * d, mlp)),
               Entry(t + "single_transformer_blocks.0.norm.linear", "single_blocks.0.modulation.lin"),
               Entry(t + "single_transformer_blocks.0.proj_out", "single_blocks.0.linear2"),
               Entry(t + "time_text_embed.guidance_embedder.linear_1", "guidance_in.in_layer"),
               Entry(t + "norm_out.linear", "final_layer.adaLN_modulation.1", swap=True)]
    _check_format(tmp_path, flux, entries, ("lora_A.weight", "lora_B.weight"))


def test_onetrainer_and_comfyui_linear1_qkv_spellings(tmp_path, flux) -> None:
    d = DIM_FLUX
    entries = [Entry("lora_transformer_single_transformer_blocks_0_attn_to_v", "single_blocks.0.linear1", (2 * d, d)),
               Entry("diffusion_model.single_blocks.1.linear1_qkv", "single_blocks.1.linear1", (0, 3 * d))]
    _check_format(tmp_path, flux, entries, ("lora_down.weight", "lora_up.weight"))


def test_every_diffusers_flux_name_has_a_layer_of_its_rows_size(flux) -> None:
    for name, target in flux_diffusers_names(flux).items():
        layer = flux.get_submodule(target.module)
        offset, size = target.rows or (0, layer.weight.shape[0])
        assert offset + size <= layer.weight.shape[0], name
    aliases = dit_aliases(flux)
    assert aliases["lora_unet_double_blocks_0_img_attn_qkv"].module == "double_blocks.0.img_attn.qkv"


# ---------------------------------------------------------------------------------------------------------------
# SD3


def test_diffusers_sd3_lora(tmp_path, mmdit) -> None:
    d, t = DIM_SD3, "transformer."
    last = TINY_MMDIT.depth - 1
    entries = [Entry(t + "transformer_blocks.0.attn.to_q", "joint_blocks.0.x_block.attn.qkv", (0, d)),
               Entry(t + "transformer_blocks.0.attn.to_v", "joint_blocks.0.x_block.attn.qkv", (2 * d, d)),
               Entry(t + "transformer_blocks.0.attn.add_q_proj", "joint_blocks.0.context_block.attn.qkv", (0, d)),
               Entry(t + "transformer_blocks.0.attn2.to_k", "joint_blocks.0.x_block.attn2.qkv", (d, d)),
               Entry(t + "transformer_blocks.0.attn.to_add_out", "joint_blocks.0.context_block.attn.proj"),
               Entry(t + "transformer_blocks.0.ff_context.net.0.proj", "joint_blocks.0.context_block.mlp.fc1"),
               Entry(t + f"transformer_blocks.{last}.norm1.linear", f"joint_blocks.{last}.x_block.adaLN_modulation.1"),
               Entry(t + f"transformer_blocks.{last}.norm1_context.linear",
                     f"joint_blocks.{last}.context_block.adaLN_modulation.1", swap=True),
               Entry(t + "proj_out", "final_layer.linear")]
    _check_format(tmp_path, mmdit, entries, ("lora_A.weight", "lora_B.weight"))


def test_kohya_and_comfyui_named_sd3_lora(tmp_path, mmdit) -> None:
    entries = [Entry("lora_unet_joint_blocks_0_x_block_attn_qkv", "joint_blocks.0.x_block.attn.qkv"),
               Entry("diffusion_model.joint_blocks.1.x_block.mlp.fc2", "joint_blocks.1.x_block.mlp.fc2"),
               Entry("lora_transformer_transformer_blocks_1_attn_add_k_proj",
                     "joint_blocks.1.context_block.attn.qkv", (DIM_SD3, DIM_SD3))]
    _check_format(tmp_path, mmdit, entries, ("lora_down.weight", "lora_up.weight"))


def test_every_diffusers_sd3_name_of_a_layer_here_fits_its_rows(mmdit) -> None:
    """The pre-only last block has no context output layers and only block 0 has attn2 (MMDiT-X): those diffusers
    names are left out of the alias table; every other fits."""
    names = mmdit_diffusers_names(mmdit)
    aliases = dit_aliases(mmdit)
    for name, target in names.items():
        try:
            layer = mmdit.get_submodule(target.module)
        except AttributeError:
            assert "transformer." + name not in aliases
            continue
        offset, size = target.rows or (0, layer.weight.shape[0])
        assert offset + size <= layer.weight.shape[0], name
        assert aliases["transformer." + name] == target


# ---------------------------------------------------------------------------------------------------------------
# Reporting, strength 0, fp8


def test_unmatched_keys_are_reported_and_the_rest_applies(tmp_path, flux, caplog) -> None:
    entries = [Entry("transformer.transformer_blocks.0.attn.to_q", "double_blocks.0.img_attn.qkv", (0, DIM_FLUX))]
    stray = {"transformer.transformer_blocks.9.attn.to_q.lora_A.weight": torch.zeros(4, DIM_FLUX),
             "transformer.transformer_blocks.9.attn.to_q.lora_B.weight": torch.zeros(DIM_FLUX, 4),
             "diffusion_model.double_blocks.0.img_attn.qkv.diff_b": torch.zeros(3 * DIM_FLUX)}
    _write(tmp_path / "lora.safetensors", flux, entries, ("lora_A.weight", "lora_B.weight"), extra=stray)
    _, _, not_loaded = apply_lora(_handle(flux), None, load_lora_file(tmp_path / "lora.safetensors"),
                                  strength_model=1.0, strength_clip=0.0)
    assert not_loaded == sorted(stray)
    with caplog.at_level(logging.WARNING, logger="nodes.loaders"):
        (patched,) = LoraLoaderModelOnly.run(_ctx(tmp_path), model=_handle(flux), lora_name="lora.safetensors",
                                             strength_model=1.0)
    assert len(patched.patches) == 1 and "3 keys match no module" in caplog.text


def test_strength_zero_is_the_base_model_bit_for_bit(tmp_path, flux) -> None:
    entries = [Entry("lora_unet_double_blocks_0_img_attn_qkv", "double_blocks.0.img_attn.qkv")]
    _write(tmp_path / "lora.safetensors", flux, entries, ("lora_down.weight", "lora_up.weight"))
    model = _handle(flux)
    (same,) = LoraLoaderModelOnly.run(_ctx(tmp_path), model=model, lora_name="lora.safetensors", strength_model=0.0)
    assert same is model
    torch.testing.assert_close(_run(same), _run(model), rtol=0, atol=0)


def test_lora_on_fp8_stored_flux_computes_in_the_compute_dtype(tmp_path, flux) -> None:
    """fp8 Linear weights are upcast per layer; the LoRA's factors take the compute dtype, not fp8."""
    fp8 = copy.deepcopy(flux)
    dtypes = storage_dtypes(fp8, torch.float32, torch.float8_e4m3fn)
    with torch.no_grad():
        for name, p in fp8.named_parameters():
            p.data = p.data.to(dtypes[name])
    assert any(p.dtype in FP8_DTYPES for p in fp8.parameters())
    upcast = copy.deepcopy(fp8)
    with torch.no_grad():
        for p in upcast.parameters():
            p.data = p.data.float()
    qkv = "double_blocks.0.img_attn.qkv"
    entries = [Entry("transformer.transformer_blocks.0.attn.to_k", qkv, (DIM_FLUX, DIM_FLUX)),
               Entry("lora_unet_single_blocks_0_linear2", "single_blocks.0.linear2")]
    factors = _write(tmp_path / "lora.safetensors", fp8, entries, ("lora_A.weight", "lora_B.weight"))
    (patched,) = LoraLoaderModelOnly.run(_ctx(tmp_path), model=_handle(fp8), lora_name="lora.safetensors",
                                         strength_model=1.0)
    with torch.inference_mode():
        want = _explicit(upcast, entries, factors, 1.0)(**_inputs(fp8))
    torch.testing.assert_close(_run(patched), want, rtol=1e-4, atol=1e-4)


def test_row_slice_patches_merge_into_the_weights_as_the_hooks_add(tmp_path, flux) -> None:
    """"merged" mode (W += ΔW for the context, restored after) gives the hooks' output for row-slice patches."""
    d = DIM_FLUX
    entries = [Entry("transformer.single_transformer_blocks.0.attn.to_q", "single_blocks.0.linear1", (0, d)),
               Entry("transformer.single_transformer_blocks.0.proj_mlp", "single_blocks.0.linear1",
                     (3 * d, TINY_FLUX.mlp_hidden))]
    _write(tmp_path / "lora.safetensors", flux, entries, ("lora_A.weight", "lora_B.weight"))
    (patched,) = LoraLoaderModelOnly.run(_ctx(tmp_path), model=_handle(flux), lora_name="lora.safetensors",
                                         strength_model=1.0)
    before = flux.single_blocks[0].linear1.weight.clone()
    with torch.inference_mode(), applied_to_model(patched, mode="merged") as net:
        merged_out = net(**_inputs(net))
    assert torch.equal(flux.single_blocks[0].linear1.weight, before)
    torch.testing.assert_close(merged_out, _run(patched), rtol=1e-4, atol=1e-4)


def test_kohya_flux_lora_with_text_encoder_keys_patches_clip_l_and_t5(tmp_path, flux) -> None:
    """lora_te1_ is CLIP-L; T5 is lora_te3_ (ComfyUI) or lora_te2_ (OneTrainer's Flux LoRAs)."""
    from diffusion.handles import Clip, TextEncoderHandle
    from diffusion.t5 import T5Encoder
    from diffusion.text_encoders import build_text_encoder
    from tests.diffusion.tiny_flow_models import TINY_CLIP_L, TINY_T5

    clip_l, t5 = build_text_encoder(TINY_CLIP_L).eval(), T5Encoder(TINY_T5).eval()
    encoders = (TextEncoderHandle(FLUX.text_encoders[0], clip_l), TextEncoderHandle(FLUX.text_encoders[1], t5))
    clip = Clip(encoders=encoders, tokenizer=None, family=FLUX)  # type: ignore[arg-type]
    w = TINY_CLIP_L.width
    gen = torch.Generator().manual_seed(0)
    t5_q = t5.get_submodule("encoder.block.0.layer.0.SelfAttention.q").weight.shape
    t5_wo = t5.get_submodule("encoder.block.1.layer.1.DenseReluDense.wo").weight.shape
    tensors = {}
    for base, shape in (("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", (w, w)),
                        ("lora_te3_encoder_block_0_layer_0_SelfAttention_q", t5_q),
                        ("lora_te2_encoder_block_1_layer_1_DenseReluDense_wo", t5_wo),
                        ("lora_unet_double_blocks_0_img_attn_proj", (DIM_FLUX, DIM_FLUX))):
        tensors[base + ".lora_down.weight"] = torch.randn(2, shape[1], generator=gen)
        tensors[base + ".lora_up.weight"] = torch.randn(shape[0], 2, generator=gen)
    save_file(tensors, tmp_path / "lora.safetensors")
    model, new_clip, not_loaded = apply_lora(_handle(flux), clip, load_lora_file(tmp_path / "lora.safetensors"),
                                             strength_model=1.0, strength_clip=1.0)
    assert not_loaded == []
    assert [p.target for p in model.patches] == ["double_blocks.0.img_attn.proj"]
    assert sorted((p.root, p.target) for p in new_clip.patches) == [
        ("clip_l", "text_model.encoder.layers.0.self_attn.q_proj"),
        ("t5xxl", "encoder.block.0.layer.0.SelfAttention.q"),
        ("t5xxl", "encoder.block.1.layer.1.DenseReluDense.wo")]
