"""Shared fixtures for the diffusion tests: the released-checkpoint manifests (key -> shape)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

MANIFEST_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "manifests"


def load_manifest(name: str) -> dict:
    """One manifest JSON (see tests/fixtures/manifests/README.md); `tensors` maps key -> shape list."""
    return json.loads((MANIFEST_DIR / f"{name}.json").read_text())


def manifest_shapes(name: str, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """Key -> shape of every tensor under `prefix`, with the prefix stripped."""
    tensors = load_manifest(name)["tensors"]
    return {k[len(prefix) :]: tuple(v) for k, v in tensors.items() if k.startswith(prefix)}


@pytest.fixture
def manifest() -> Callable[[str], dict]:
    return load_manifest
