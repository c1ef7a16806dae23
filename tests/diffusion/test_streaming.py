"""Streaming (low-VRAM mode) on the CPU: a manager budget smaller than the model makes it run with its blocks copied
to the "device" one at a time; the output is bit-identical to the normal run, with LoRA and with fp8 storage, and
the weights are the same tensors afterwards."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from diffusion.dit_layers import storage_dtypes
from diffusion.families import FLUX
from diffusion.flow_sampling import FluxSampling
from diffusion.flux import Flux
from diffusion.handles import Model
from diffusion.lora import apply_lora, load_lora_file
from diffusion.memory import ModelManager, module_bytes
from diffusion.mmdit import MMDiT
from diffusion.streaming import can_stream, stream_units, streamed
from diffusion.unet import UNetConfig, UNetModel
from nodes.ksampler import model_ready
from tests.diffusion.tiny_flow_models import TINY_FLUX, TINY_MMDIT, _randomize

TINY_UNET = UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, transformer_depth=(1, 1),
                       transformer_depth_middle=1, transformer_depth_output=(1, 1), context_dim=16, num_heads=4)


def _flux() -> Flux:
    model = Flux(TINY_FLUX).eval().requires_grad_(False)
    _randomize(model, 0)
    return model


def _flux_inputs() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    return {"x": torch.randn(1, 16, 4, 6, generator=gen), "timestep": torch.tensor([0.6]),
            "context": torch.randn(1, 5, TINY_FLUX.context_in_dim, generator=gen),
            "y": torch.randn(1, TINY_FLUX.vec_in_dim, generator=gen), "guidance": torch.tensor([3.5])}


def _snapshot(module: nn.Module) -> dict[str, tuple[int, int]]:
    return {name: (id(t), t.data_ptr()) for name, t in [*module.named_parameters(), *module.named_buffers()]}


def _streamed_output(module: nn.Module, inputs: dict, budget: int) -> tuple[torch.Tensor, ModelManager]:
    models = ModelManager(torch.device("cpu"), budget_bytes=budget)
    before = _snapshot(module)
    with torch.inference_mode(), models.on_device(module):
        out = module(**inputs)
    assert _snapshot(module) == before  # the same tensors, pointing at the same CPU data again
    return out, models


def test_a_budget_smaller_than_the_model_streams_it_bit_for_bit() -> None:
    flux = _flux()
    with torch.inference_mode():
        want = flux(**_flux_inputs())
    budget = module_bytes(flux) // 2
    got, models = _streamed_output(flux, _flux_inputs(), budget)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    plan = models.last_stream
    assert models.streamed_runs == 1 and plan is not None
    assert plan.streamed and plan.resident  # partly resident (the first blocks), the rest streamed
    assert "single_blocks.1" in plan.streamed
    assert plan.uploads == len(plan.streamed)  # each streamed unit runs once per forward
    assert plan.resident_bytes < plan.peak_bytes <= budget


def test_a_budget_below_one_block_still_runs_one_block_at_a_time() -> None:
    flux = _flux()
    with torch.inference_mode():
        want = flux(**_flux_inputs())
    got, models = _streamed_output(flux, _flux_inputs(), budget=1)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    plan = models.last_stream
    assert plan is not None and not plan.resident
    largest = max(sum(t.numel() * t.element_size() for t in u.parameters()) for _, u in stream_units(flux))
    assert plan.peak_bytes == largest


def test_a_model_that_fits_is_not_streamed() -> None:
    flux = _flux()
    models = ModelManager(torch.device("cpu"), budget_bytes=module_bytes(flux) + 1)
    with models.on_device(flux):
        pass
    assert models.streamed_runs == 0 and models.stats()["streamed_runs"] == 0


def test_streamed_lora_model_through_model_ready_equals_the_normal_run(tmp_path) -> None:
    flux = _flux()
    gen = torch.Generator().manual_seed(3)
    d = TINY_FLUX.hidden_size
    save_file({"transformer.transformer_blocks.0.attn.to_k.lora_A.weight": torch.randn(4, d, generator=gen),
               "transformer.transformer_blocks.0.attn.to_k.lora_B.weight": torch.randn(d, 4, generator=gen),
               "lora_unet_single_blocks_1_linear2.lora_down.weight": torch.randn(4, d + TINY_FLUX.mlp_hidden,
                                                                                 generator=gen),
               "lora_unet_single_blocks_1_linear2.lora_up.weight": torch.randn(d, 4, generator=gen)},
              tmp_path / "lora.safetensors")
    base = Model(unet=flux, family=FLUX, sampling=FluxSampling(shift=1.15), name="tiny")
    model, _, _ = apply_lora(base, None, load_lora_file(tmp_path / "lora.safetensors"), strength_model=0.7,
                             strength_clip=0.0)
    outputs = []
    for budget in (None, module_bytes(flux) // 3):
        models = ModelManager(torch.device("cpu"), budget_bytes=budget)
        with torch.inference_mode(), model_ready(models, model):
            outputs.append(flux(**_flux_inputs()))
        assert models.streamed_runs == (0 if budget is None else 1)
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=0)
    with torch.inference_mode():
        assert not torch.equal(outputs[0], flux(**_flux_inputs()))


def test_fp8_stored_weights_stream_in_fp8_and_upcast_per_layer() -> None:
    flux = _flux()
    dtypes = storage_dtypes(flux, torch.float32, torch.float8_e4m3fn)
    with torch.no_grad():
        for name, p in flux.named_parameters():
            p.data = p.data.to(dtypes[name])
    with torch.inference_mode():
        want = flux(**_flux_inputs())
    got, models = _streamed_output(flux, _flux_inputs(), budget=module_bytes(flux) // 2)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    plan = models.last_stream
    assert plan is not None and flux.single_blocks[1].linear1.weight.dtype == torch.float8_e4m3fn
    # fp8 travels as stored: one byte per weight element
    assert plan.uploaded_bytes == sum(module_bytes(flux.get_submodule(name)) for name in plan.streamed)


def test_mmdit_and_unet_stream_bit_for_bit() -> None:
    mmdit = MMDiT(TINY_MMDIT).eval().requires_grad_(False)
    _randomize(mmdit, 10)
    gen = torch.Generator().manual_seed(1)
    inputs = {"x": torch.randn(1, 16, 4, 6, generator=gen), "timestep": torch.tensor([600.0]),
              "context": torch.randn(1, 5, TINY_MMDIT.context_in_dim, generator=gen),
              "y": torch.randn(1, TINY_MMDIT.adm_in_channels, generator=gen)}
    with torch.inference_mode():
        want = mmdit(**inputs)
    got, models = _streamed_output(mmdit, inputs, budget=module_bytes(mmdit) // 3)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert models.last_stream is not None and "joint_blocks.1" in models.last_stream.streamed

    unet = UNetModel(TINY_UNET).eval().requires_grad_(False)
    _randomize(unet, 2)
    inputs = {"x": torch.randn(1, 4, 8, 8, generator=gen), "timesteps": torch.tensor([500.0]),
              "context": torch.randn(1, 3, 16, generator=gen)}
    with torch.inference_mode():
        want = unet(**inputs)
    got, models = _streamed_output(unet, inputs, budget=module_bytes(unet) // 3)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert models.last_stream is not None and "output_blocks.2" in models.last_stream.streamed


def test_an_error_inside_a_streamed_block_leaves_the_weights_in_place() -> None:
    flux = _flux()
    before = _snapshot(flux)
    inputs = _flux_inputs()
    inputs["context"] = torch.randn(1, 5, TINY_FLUX.context_in_dim + 1)  # txt_in's matmul fails
    with pytest.raises(RuntimeError), torch.inference_mode(), streamed(flux, "cpu", budget_bytes=1):
        flux(**inputs)
    assert _snapshot(flux) == before
    assert not flux.txt_in._forward_pre_hooks and not flux.txt_in._forward_hooks


def test_only_block_networks_stream() -> None:
    """A text encoder or VAE over the budget is moved whole as before (their parents read their children)."""
    from diffusion.t5 import T5Encoder
    from diffusion.vae import AutoencoderKL
    from tests.diffusion.tiny_flow_models import TINY_AE, TINY_T5

    models = ModelManager(torch.device("cpu"), budget_bytes=1)
    with models.on_device(T5Encoder(TINY_T5), AutoencoderKL(TINY_AE)):
        pass
    assert models.streamed_runs == 0
    assert can_stream(_flux()) and can_stream(UNetModel(TINY_UNET))
    wide_table = MMDiT(dataclasses.replace(TINY_MMDIT, pos_embed_max_size=96))  # SD3.5: the table outweighs the blocks
    assert module_bytes(wide_table.joint_blocks) < module_bytes(wide_table) / 2 and can_stream(wide_table)
