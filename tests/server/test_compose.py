"""`chisel serve` and `chisel run` share one wiring (server/compose.py): what the command line sets reaches the engine
either way."""

from __future__ import annotations

import io
import json
from pathlib import Path

from server.cli import _parser, config_from_args, run_workflow
from server.compose import compose
from server.routes.state import STATE
from tests.server.conftest import make_config

GB = 1024**3


def _config(tmp_path: Path, command: list[str]):
    base = make_config(tmp_path)  # a base folder laid out like the tests' servers (test editor, no custom nodes)
    args = _parser().parse_args([*command, "--base-dir", str(base.base_dir), "--no-custom-nodes"])
    return config_from_args(args)


async def test_serve_cache_budgets_from_the_command_line_reach_the_engine(tmp_path, aiohttp_client):
    from server.app import create_app

    config = _config(tmp_path, ["serve", "--port", "0", "--cache-ram", "0.5", "--cache-vram", "0.25", "--cpu"])
    app = create_app(config)
    await aiohttp_client(app)  # starts the app: the engine is built at startup
    state = app[STATE]
    stats = state.engine.cache.stats()
    assert (stats.cpu_budget, stats.gpu_budget) == (GB // 2, GB // 4)
    # one wiring: the engine runs the executor the composition root built, with the services nodes get
    assert state.engine.executor is state.runtime.executor and state.engine.cache is state.runtime.executor.cache
    assert str(state.services.models.device) == "cpu"


def test_run_cache_budgets_from_the_command_line_reach_the_engine(tmp_path):
    config = _config(tmp_path, ["run", "unused.json", "--cache-ram", "0.75", "--cache-vram", "0.125"])
    workflow = tmp_path / "prompt.json"
    workflow.write_text(json.dumps({"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8,
                                                                                 "batch_size": 1, "color": 0}},
                                    "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}))
    seen = []
    out, err = io.StringIO(), io.StringIO()
    code = run_workflow(config, workflow, [], out=out, err=err, progress=False, on_runtime=seen.append)
    assert code == 0, err.getvalue()
    (runtime,) = seen
    stats = runtime.executor.cache.stats()
    assert (stats.cpu_budget, stats.gpu_budget) == (GB * 3 // 4, GB // 8)
    assert stats.entries == 2  # the run went through that executor and its cache
    assert "done in" in out.getvalue()


def test_compose_builds_every_part_from_one_config(tmp_path):
    config = make_config(tmp_path, cache_ram_bytes=123_456, cache_vram_bytes=7_890, device="cpu")
    runtime = compose(config)
    stats = runtime.executor.cache.stats()
    assert (stats.cpu_budget, stats.gpu_budget) == (123_456, 7_890)
    assert runtime.registry.get("KSampler") is not None and runtime.folders.directory("output") == config.output_dir
    assert runtime.services.folders is runtime.folders and runtime.services.settings.save_metadata
