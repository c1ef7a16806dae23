"""The device budget from the command line (ComfyUI's --lowvram / --novram / --reserve-vram, and Chisel's
--vram-budget) reaches the model manager through the composition root, and a run under a tiny budget streams the
model and still saves its image."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from server.cli import _parser, config_from_args, run_workflow
from server.compose import compose
from server.config import REPO_ROOT

GB = 1024**3


def _config(tmp_path: Path, *flags: str):
    args = _parser().parse_args(["run", "unused.json", "--base-dir", str(tmp_path / "base"), "--no-custom-nodes",
                                 *flags])
    return config_from_args(args)


def test_budget_and_reserve_flags_reach_the_model_manager(tmp_path):
    config = _config(tmp_path, "--cpu", "--vram-budget", "0.5", "--reserve-vram", "2")
    assert (config.vram_budget_bytes, config.reserve_vram_bytes) == (GB // 2, 2 * GB)
    models = compose(config).services.models
    assert (models.budget_bytes, models.reserve_bytes) == (GB // 2, 2 * GB)
    plain = compose(_config(tmp_path, "--cpu")).services.models
    assert plain.budget_bytes is None and plain.reserve_bytes == GB  # the manager's default reserve
    # --lowvram / --novram are for an accelerator: on the CPU there is nothing to stream to.
    for flag, mode in (("--lowvram", "low"), ("--novram", "none")):
        config = _config(tmp_path, "--cpu", flag)
        assert config.vram_mode == mode and compose(config).services.models.budget_bytes is None
    with pytest.raises(SystemExit):  # one of --lowvram / --novram / --vram-budget
        _config(tmp_path, "--lowvram", "--novram")


def test_novram_on_an_accelerator_streams_everything(tmp_path, monkeypatch):
    import diffusion.memory

    monkeypatch.setattr(diffusion.memory, "pick_device", lambda choice="auto": torch.device("meta"))
    assert compose(_config(tmp_path, "--novram")).services.models.budget_bytes == 0
    assert compose(_config(tmp_path, "--lowvram")).services.models.budget_bytes is None  # no total to halve
    assert compose(_config(tmp_path, "--novram", "--reserve-vram", "0")).services.models.reserve_bytes == 0


def test_chisel_run_under_a_tiny_budget_streams_and_saves_the_image(tmp_path):
    args = _parser().parse_args([
        "run", str(REPO_ROOT / "workflows" / "api" / "txt2img.json"), "--base-dir", str(tmp_path / "base"),
        "--no-custom-nodes", "--cpu", "--vram-budget", "0.001", "--set", "5.batch_size=1", "--set", "3.steps=3"])
    config = config_from_args(args)
    seen = []
    out, err = io.StringIO(), io.StringIO()
    code = run_workflow(config, Path(args.workflow), args.set, out=out, err=err, progress=False,
                        on_runtime=seen.append)
    assert code == 0, err.getvalue()
    models = seen[0].services.models
    assert models.budget_bytes == int(0.001 * GB)
    assert models.streamed_runs > 0 and models.last_stream is not None and models.last_stream.streamed
    plan = models.last_stream
    assert plan.uploads > 0 and plan.peak_bytes < plan.uploaded_bytes  # never the whole model on the device at once
    [png] = (config.output_dir).glob("*.png")
    assert png.stat().st_size > 0
