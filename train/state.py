"""Resumable training state without pickle: tensors in one .safetensors file, everything else in JSON beside it.

A state is a flat mapping of named tensors (module weights, EMA weights, optimizer moments) plus a JSON-able dict
(step, optimizer hyper-parameters). Both files are written to a temporary name and renamed, so a run killed while
saving keeps its previous checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from safefiles import atomic_path


def save_state(path: Path, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    """Write `path`.safetensors and `path`.json atomically (the JSON, written last, marks the state complete)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    weights, info = path.with_suffix(".safetensors"), path.with_suffix(".json")
    # Both temp files are written before either is renamed; the blocks end inner first: weights, then the JSON.
    with atomic_path(info) as tmp_i, atomic_path(weights) as tmp_w:
        # safetensors stores no 0-dim views of shared storage; clone to contiguous, detached CPU tensors.
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, str(tmp_w))
        tmp_i.write_text(json.dumps(meta, indent=1))


def load_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The state saved at `path`, or None when there is none (or only a half-written one)."""
    weights, info = path.with_suffix(".safetensors"), path.with_suffix(".json")
    if not (weights.exists() and info.exists()):
        return None
    return load_file(str(weights)), json.loads(info.read_text())


def prefixed(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in module.state_dict().items()}


def unprefixed(prefix: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def optimizer_tensors(prefix: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state_dict into named tensors and the JSON-able rest (param groups, tensor shapes)."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    shapes: dict[str, list[int]] = {}
    for index, entry in sd["state"].items():
        for name, value in entry.items():
            key = f"{prefix}{index}.{name}"
            if isinstance(value, torch.Tensor):
                shapes[key] = list(value.shape)
                tensors[key] = value.reshape(-1) if value.ndim == 0 else value  # (1,) for scalars; shape restored
            else:
                raise TypeError(f"optimizer state {key} is {type(value).__name__}, not a tensor")
    return tensors, {"param_groups": sd["param_groups"], "shapes": shapes}


def restore_optimizer(
    prefix: str, optimizer: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]
) -> None:
    """Inverse of optimizer_tensors."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, shape in meta["shapes"].items():
        index, name = key[len(prefix) :].split(".", 1)
        state.setdefault(int(index), {})[name] = tensors[key].reshape(shape)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
