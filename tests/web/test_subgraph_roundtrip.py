"""Chisel's editor keeps subgraph workflows made by ComfyUI's frontend intact: each tests/fixtures/subgraphs/ workflow,
loaded into the editor's model (web/, under Node, with our server's /object_info), every instance opened and left,
saved again, converts on the server to the same prompt as the original."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from server.compose import build_registry
from server.config import ServerConfig
from server.paths import ServerFolders
from server.workflow import convert_workflow

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parent / "fixtures" / "subgraphs"


def test_the_editor_saves_frontend_made_subgraph_workflows_back_to_the_same_prompt(tmp_path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the editor's model runs under Node 18+ here")
    config = ServerConfig(base_dir=tmp_path / "base", load_custom_nodes=False)
    registry = build_registry(config, ServerFolders.from_config(config))[0]
    object_info = tmp_path / "object_info.json"
    object_info.write_text(json.dumps(registry.object_info()))
    files = sorted(str(p) for p in FIXTURES.glob("*.json"))
    result = subprocess.run([node, str(HERE / "subgraph_roundtrip.mjs"), str(object_info), *files],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads(result.stdout)
    assert len(saved) == len(files) >= 10
    for file in files:
        original = json.loads(Path(file).read_text())["workflow"]
        assert convert_workflow(saved[file], registry) == convert_workflow(original, registry), Path(file).name
