"""The diffusion benchmarks still run, print their tables and measure the right things (tiny sizes, seconds).

The full runs (SD1.5 512x512, a 2 GB file) are done by hand; these keep the scripts from rotting: the same code paths
with tiny widths, in this process, plus one real worker process.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch

from bench import checkpoint_load, unet_speed
from bench.common import run_worker
from diffusion.checkpoint import detect_unet_config

MANIFESTS = Path(__file__).resolve().parent.parent / "fixtures" / "manifests"
HAS_DIFFUSERS = importlib.util.find_spec("diffusers") is not None
DURATION = r"([0-9.]+) (ms|s)\b"


def _manifest(name: str) -> dict:
    return json.loads((MANIFESTS / name).read_text())


def _seconds(cell: str) -> float:
    match = re.match(DURATION, cell.strip())
    assert match, f"not a duration: {cell!r}"
    value = float(match.group(1))
    return value / 1e3 if match.group(2) == "ms" else value


def _rows(text: str, first_cell: str) -> list[list[str]]:
    return [[c.strip() for c in line.split("|")] for line in text.splitlines()
            if line.startswith(first_cell) and "|" in line]


def test_unet_speed_tiny_prints_step_times_and_matches_diffusers_output(capsys, tmp_path):
    saved = tmp_path / "unet.txt"
    assert unet_speed.main(["--family", "tiny", "--isolation", "inline", "--warmup", "1", "--steps", "2",
                            "--save", str(saved)]) == 0
    out = capsys.readouterr().out
    rows = _rows(out, "tiny 64x64 ")
    assert [r[0] for r in rows] == ["tiny 64x64 Chisel"] + (["tiny 64x64 diffusers"] if HAS_DIFFUSERS else [])
    for row in rows:
        assert _seconds(row[1]) > 0 and float(row[2]) > 0
        assert "n=2" in row[1]
    if HAS_DIFFUSERS:
        assert re.fullmatch(r"[0-9.]+x", rows[0][3]), rows[0]
        relative = float(re.search(r"relative ([0-9.e+-]+)", out).group(1))
        assert relative < 1e-4, "the two UNets disagree: the weight map or the config differs"
    else:
        assert "no baseline" in out
    assert saved.read_text().startswith("date: ") and "tiny 64x64 Chisel" in saved.read_text()


def test_checkpoint_load_tiny_prints_cold_and_warm_rows_and_deletes_its_file(capsys, tmp_path):
    assert checkpoint_load.main(["--tiny", "--isolation", "inline", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = _rows(out, "cold") + _rows(out, "warm")
    assert [(r[0], r[1].split(":")[0].split(" ")[0]) for r in rows] == [
        (cache, method) for cache in ("cold", "warm") for method in ("read", "naive", "Chisel")
    ]
    for row in rows:
        assert _seconds(row[2]) > 0 and float(row[4]) > 0
    assert re.fullmatch(r"[0-9.]+x", rows[2][3])
    assert "same weights: yes" in out
    assert list(tmp_path.iterdir()) == [], "the temporary checkpoint must be deleted"


def test_load_worker_runs_in_its_own_process(tmp_path):
    path = tmp_path / "tiny.safetensors"
    size = checkpoint_load.write_checkpoint(path, "tiny", torch.float16)
    result = run_worker("bench.checkpoint_load", {"name": "read", "path": str(path), "method": "read",
                                                  "isolation": "subprocess"}, timeout=120)
    assert result["seconds"] > 0 and result["process_peak"] > size


def test_load_bench_file_has_the_released_sd15_keys_shapes_and_size():
    manifest = _manifest("sd15.json")
    layout = checkpoint_load.checkpoint_layout("sd15", torch.float16)
    assert {k: list(shape) for k, (shape, _) in layout.items()} == manifest["tensors"]
    assert {k: str(d).removeprefix("torch.") for k, (_, d) in layout.items()
            if not d.is_floating_point} == manifest["dtype_overrides"]
    fp16_bytes = sum(torch.Size(s).numel() * (2 if d == torch.float16 else d.itemsize) for s, d in layout.values())
    assert 2.0e9 < fp16_bytes < 2.2e9  # the "2 GB" file of the issue


@pytest.mark.parametrize(("family", "manifest"), [("sd15", "sd15.json"), ("sdxl", "sdxl_base.json")])
def test_unet_bench_configs_are_the_released_checkpoints(family, manifest):
    shapes = {k: tuple(v) for k, v in _manifest(manifest)["tensors"].items()}
    assert unet_speed.CONFIGS[family] == detect_unet_config(shapes, path=manifest)


@pytest.mark.skipif(not HAS_DIFFUSERS, reason="diffusers (the [bench] extra) is not installed")
def test_sdxl_weights_map_onto_diffusers_strictly():
    # SDXL cannot run here; this checks its config and name map with shapes only (meta tensors, no arithmetic).
    from diffusers import UNet2DConditionModel

    cfg = unet_speed.CONFIGS["sdxl"]
    with torch.device("meta"):
        ours = unet_speed.UNetModel(cfg)
        twin = UNet2DConditionModel(**unet_speed.diffusers_unet_config(cfg))
    mapped = unet_speed.diffusers_state_dict(ours.state_dict(), cfg)
    assert len(mapped) == len(ours.state_dict())
    twin.load_state_dict(mapped, strict=True, assign=True)


def test_first_prompt_tiny_times_a_real_server_from_start_to_each_image(capsys, tmp_path):
    from bench import first_prompt

    saved = tmp_path / "first.txt"
    assert first_prompt.main(["--tiny", "--save", str(saved)]) == 0
    out = capsys.readouterr().out
    rows = _rows(out, "server start") + _rows(out, "built-in model") + _rows(out, "tiny layout")
    assert len(rows) == 6, out
    assert all(_seconds(row[1]) > 0 for row in rows)
    assert "first prompt incl. load" in rows[1][0] and "first prompt incl. load" in rows[3][0]
    assert saved.read_text().startswith("date: ")
