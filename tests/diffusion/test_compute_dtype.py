"""The compute dtype of the flow transformers on a CPU (issue 11): bf16 / fp8 Flux and SD3 files compute in bf16
where the CPU has native bf16, fp32 / fp16 files and the SD UNets keep fp32, and an explicit dtype always wins."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import diffusion.model_files as model_files
from diffusion.memory import ModelManager
from diffusion.model_files import (
    cpu_has_native_bf16,
    flow_compute_dtype,
    load_diffusion_model,
    load_flow_checkpoint,
)
from nodes.context import RunContext
from nodes.model_parts import UNETLoader
from nodes.services import Services, model_manager
from tests.diffusion.tiny_flow_models import write_tiny_flux_checkpoint, write_tiny_flux_parts

CPU = torch.device("cpu")
F32, BF16 = torch.float32, torch.bfloat16
FP8 = torch.float8_e4m3fn


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return write_tiny_flux_parts(tmp_path_factory.mktemp("dtype"))


@pytest.fixture
def native_bf16(monkeypatch):
    """Pretend the CPU has (True) or lacks (False) native bf16."""
    def set_to(value: bool) -> None:
        monkeypatch.setattr(model_files, "cpu_has_native_bf16", lambda: value)
    return set_to


# (file's tensor dtypes, UNETLoader storage, CPU has bf16) -> compute dtype, with the manager's automatic dtype.
AUTO_RULE = [
    (["F32"] * 4, None, True, F32),
    (["F16"] * 4, None, True, F32),
    (["BF16"] * 4, None, True, BF16),
    (["BF16"] * 4, None, False, F32),
    (["F8_E4M3"] * 3 + ["BF16"] * 2, None, True, BF16),  # flux1-dev-fp8: fp8 matrices, bf16 norms and biases
    (["F8_E5M2"] * 3 + ["F32"] * 2, None, True, BF16),
    (["F8_E4M3"] * 3 + ["BF16"] * 2, None, False, F32),
    (["F16"] * 4, FP8, True, BF16),  # UNETLoader's fp8 storage: the weights are held in fp8
    (["F32"] * 4, FP8, False, F32),
]


@pytest.mark.parametrize(("codes", "storage", "native", "want"), AUTO_RULE)
def test_the_cpu_rule_with_the_automatic_dtype(codes, storage, native, want):
    assert flow_compute_dtype(codes, CPU, F32, storage=storage, auto_dtype=True, cpu_bf16=native) == want
    assert flow_compute_dtype(codes, CPU, None, storage=storage, auto_dtype=True, cpu_bf16=native) == want


@pytest.mark.parametrize("native", [True, False])
def test_an_explicit_dtype_wins(native):
    for codes in (["BF16"], ["F8_E4M3"], ["F32"], ["F16"]):
        for dtype in (F32, BF16, torch.float16):  # --weight-dtype fp32 / bf16 / fp16
            assert flow_compute_dtype(codes, CPU, dtype, cpu_bf16=native) == dtype
    # Without any dtype (library callers) the CPU computes in fp32, as before.
    assert flow_compute_dtype(["BF16"], CPU, None, cpu_bf16=native) == F32
    # Off the CPU the manager's choice stands (bf16 on recent GPUs).
    assert flow_compute_dtype(["F32"], torch.device("meta"), BF16, auto_dtype=True, cpu_bf16=native) == BF16


def test_native_bf16_is_read_from_the_cpu_flags():
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else None
    if flags is None:
        pytest.skip("no /proc/cpuinfo")
    words = set(flags.split())
    assert cpu_has_native_bf16() == bool(words & {"avx512_bf16", "amx_bf16", "bf16"})


def test_only_the_server_manager_refines_the_automatic_dtype():
    assert not ModelManager(CPU).auto_dtype  # library and test managers: fp32 on the CPU, as ComfyUI
    assert model_manager("cpu", None).auto_dtype and model_manager("cpu", "auto").auto_dtype
    for explicit in ("fp32", "bf16", "fp16"):
        assert not model_manager("cpu", explicit).auto_dtype


def _velocity(module: torch.nn.Module) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x, ctx, y = (torch.randn(1, 16, 4, 4, generator=gen), torch.randn(1, 3, 32, generator=gen),
                 torch.randn(1, 32, generator=gen))
    with torch.no_grad():
        return module(x, torch.tensor([0.6]), ctx, y=y, guidance=torch.tensor([3.5])).float()


def test_a_bf16_flux_file_computes_in_bf16_close_to_fp32(parts, native_bf16):
    native_bf16(True)
    reference = load_diffusion_model(parts.flux_path, dtype=F32)
    assert reference.module.compute_dtype == F32
    loaded = load_diffusion_model(parts.flux_path, dtype=F32, auto_dtype=True)
    assert loaded.module.compute_dtype == BF16 and loaded.module.img_in.weight.dtype == BF16
    want, got = _velocity(reference.module), _velocity(loaded.module)
    assert torch.isfinite(got).all()
    assert 0 < (got - want).norm() / want.norm() < 0.05
    # fp8 storage asked for on the same file: fp8 matrices upcast to bf16 per layer.
    fp8 = load_diffusion_model(parts.flux_path, dtype=F32, weight_dtype="fp8_e4m3fn", auto_dtype=True)
    assert fp8.storage == FP8 and fp8.module.compute_dtype == BF16
    assert (_velocity(fp8.module) - want).norm() / want.norm() < 0.2
    native_bf16(False)
    assert load_diffusion_model(parts.flux_path, dtype=F32, auto_dtype=True).module.compute_dtype == F32


def test_single_file_flux_checkpoints_follow_the_rule(parts, native_bf16, tmp_path):
    native_bf16(True)
    path = write_tiny_flux_checkpoint(tmp_path / "all-in-one.safetensors", parts)
    loaded = load_flow_checkpoint(path, dtype=F32, auto_dtype=True)
    assert loaded.model.module.compute_dtype == BF16
    assert loaded.vae is None or next(loaded.vae.parameters()).dtype == F32  # the VAE keeps fp32
    assert all(next(te.module.parameters()).dtype == F32 for te in loaded.text_encoders.values())
    assert load_flow_checkpoint(path, dtype=F32).model.module.compute_dtype == F32


class _Folders:
    def __init__(self, path: Path) -> None:
        self.path = path

    def model_path(self, folder: str, name: str) -> Path:
        return self.path


def test_unet_loader_uses_the_managers_rule(parts, native_bf16):
    native_bf16(True)
    for manager, want in ((ModelManager(CPU, cpu_bf16_flow=True), BF16), (ModelManager(CPU), F32),
                          (ModelManager(CPU, weight_dtype="fp32", cpu_bf16_flow=True), F32)):
        ctx = RunContext(node_id="1", prompt_id="p", services=Services(folders=_Folders(parts.flux_path),
                                                                       models=manager))
        (model,) = UNETLoader.run(ctx, unet_name="tiny-flux1-dev.safetensors", weight_dtype="default")
        assert model.unet.compute_dtype == want
