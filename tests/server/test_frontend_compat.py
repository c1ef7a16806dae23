"""Regression tests for incompatibilities the real ComfyUI frontend revealed (tests/compat/ drives it in Chromium)."""

from __future__ import annotations

from pathlib import Path


async def test_internal_folder_paths_lists_each_model_kind_with_its_directories(client, config) -> None:
    # The 1.58.1 frontend's missing-model check calls GET /internal/folder_paths (ComfyUI's /internal sub-app).
    response = await client.get("/internal/folder_paths")
    assert response.status == 200
    body = await response.json()
    assert Path(config.models_dir / "checkpoints") in [Path(p) for p in body["checkpoints"]]
    assert Path(config.models_dir / "loras") in [Path(p) for p in body["loras"]]
    assert all(isinstance(dirs, list) and all(isinstance(d, str) for d in dirs) for dirs in body.values())
    # as in ComfyUI, the internal routes have no /api twin
    assert (await client.get("/api/internal/folder_paths")).status == 404
