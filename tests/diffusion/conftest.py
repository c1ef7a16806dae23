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


@pytest.fixture(autouse=True, scope="session")
def _single_intra_op_thread():
    """Tiny models run faster on one thread: with several test processes sharing the cores, OpenMP workers that
    wait on each other turn 1 ms ops into 10 ms ones (measured: 22 s -> 2 s for the UNet/VAE tests)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
