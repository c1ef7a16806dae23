"""Runs the editor's own unit tests (graph model, serialization, commands, ... in web/**/*.test.js) with `node --test`,
so that pytest (and CI) covers them too."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parents[2] / "web"


def test_editor_unit_tests_pass_under_node() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the editor's unit tests need Node 18+ (`node --test web/`)")
    result = subprocess.run([node, "--test", "."], cwd=WEB, capture_output=True, text=True, timeout=300)
    summary = [line for line in result.stdout.splitlines() if line.startswith(("# tests", "# pass", "# fail"))]
    failed = [line for line in result.stdout.splitlines() if line.startswith("not ok")]
    assert result.returncode == 0, "\n".join(failed + summary) + "\n" + result.stdout[-4000:] + result.stderr[-2000:]
    assert any(line.startswith("# pass") and int(line.split()[-1]) > 0 for line in summary), summary
