"""Hypernetworks (the AUTOMATIC1111 / NovelAI format): small MLPs that add to the keys and values of every
attention whose key width they were trained for, as ComfyUI's HypernetworkLoader applies them.

A file is a pickled dict (``.pt``): integer key widths -> [key MLP state dict, value MLP state dict], each MLP a
stack of ``linear.N.weight/bias`` (optionally each followed by a LayerNorm), plus options ``activation_func``,
``is_layer_norm``, ``use_dropout``, ``activate_output``, ``last_layer_dropout``. A ``.safetensors`` file holds the
same tensors under ``"{width}.{0|1}.{layer name}"`` with the options in its metadata. It is read with the safe
unpickler (``weights_only``): a file that needs code to load is refused.

The patch (``HypernetworkPatch``) is an attn1/attn2 patch (model_options.py): k += mlp_k(k)·strength,
v += mlp_v(v)·strength when k's width has an MLP. Dropout layers are left out (ComfyUI builds them in training
mode, which makes its results random; at inference they are the identity). ComfyUI's walk counts LayerNorms when
it decides which linear is the last one (no activation after it unless activate_output); that is kept, so with
layer norms every linear is followed by the activation, as in ComfyUI.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

ACTIVATIONS: Mapping[str, Callable[[Tensor], Tensor] | None] = {
    "linear": None,
    "relu": F.relu,
    "leakyrelu": F.leaky_relu,
    "elu": F.elu,
    "swish": F.hardswish,  # A1111 maps "swish" to Hardswish
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "softsign": F.softsign,
    "mish": F.mish,
}
_OPTION_KEYS = ("activation_func", "is_layer_norm", "use_dropout", "activate_output", "last_layer_dropout")


class HypernetworkError(ValueError):
    """A hypernetwork file that cannot be read or applied (names the file and why)."""


@dataclass(frozen=True, eq=False)
class Layer:
    """One step of an MLP: ("linear", weight, bias), ("norm", weight, bias) or ("act", function)."""

    kind: str
    weight: Tensor | None = None
    bias: Tensor | None = None
    function: Callable[[Tensor], Tensor] | None = None

    def __call__(self, x: Tensor) -> Tensor:
        if self.kind == "act":
            assert self.function is not None
            return self.function(x)
        assert self.weight is not None and self.bias is not None
        weight, bias = self.weight.to(x), self.bias.to(x)
        if self.kind == "norm":
            return F.layer_norm(x, weight.shape, weight, bias)
        return F.linear(x, weight, bias)


def _mlp(tensors: Mapping[str, Tensor], options: Mapping[str, Any], where: str) -> tuple[Layer, ...]:
    """The layer stack of one MLP, walked as ComfyUI does: each linear (+ activation unless it is the last one and
    activate_output is off) (+ the LayerNorm that follows it)."""
    activation = ACTIVATIONS[options["activation_func"]]
    names = [k[: -len(".weight")] for k in tensors if k.endswith(".weight")]
    layers: list[Layer] = []
    i = 0
    while i < len(names):
        last = i == len(names) - 1
        try:
            layers.append(Layer("linear", tensors[f"{names[i]}.weight"], tensors[f"{names[i]}.bias"]))
            if activation is not None and (not last or options["activate_output"]):
                layers.append(Layer("act", function=activation))
            if options["is_layer_norm"]:
                i += 1
                layers.append(Layer("norm", tensors[f"{names[i]}.weight"], tensors[f"{names[i]}.bias"]))
        except (KeyError, IndexError) as missing:
            raise HypernetworkError(f"{where}: layer {names[min(i, len(names) - 1)]!r} is incomplete "
                                    f"({missing})") from None
        i += 1
    return tuple(layers)


def _run(layers: tuple[Layer, ...], x: Tensor) -> Tensor:
    for layer in layers:
        x = layer(x)
    return x


@dataclass(frozen=True, eq=False)
class Hypernetwork:
    """The MLPs of one file: key width -> (key MLP, value MLP)."""

    mlps: Mapping[int, tuple[tuple[Layer, ...], tuple[Layer, ...]]]
    source: str = ""


@dataclass(frozen=True, eq=False)
class HypernetworkPatch:
    """attn1_patch / attn2_patch: k and v of every attention whose key width has an MLP get its output added,
    times strength."""

    network: Hypernetwork
    strength: float

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, extra_options: Mapping[str, Any]) -> tuple[Tensor, Tensor,
                                                                                                   Tensor]:
        mlps = self.network.mlps.get(int(k.shape[-1]))
        if mlps is None:
            return q, k, v
        return q, k + _run(mlps[0], k) * self.strength, v + _run(mlps[1], v) * self.strength


def _read(path: Path) -> tuple[dict[Any, Any], dict[str, Any]]:
    """(width -> [state dict, state dict], options) from a .pt or .safetensors file."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            grouped: dict[Any, Any] = {}
            for key in handle.keys():
                width, index, rest = key.split(".", 2)
                grouped.setdefault(int(width), [{}, {}])[int(index)][rest] = handle.get_tensor(key)
        options = {k: json.loads(v) for k, v in metadata.items() if k in _OPTION_KEYS}
        return grouped, options
    raw = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(raw, dict):
        raise HypernetworkError(f"{path.name}: not a hypernetwork (a {type(raw).__name__}, not a dict)")
    return raw, {k: raw[k] for k in _OPTION_KEYS if k in raw}


def load_hypernetwork(path: str | Path) -> Hypernetwork:
    """Read a hypernetwork file (see the module docstring); HypernetworkError names the file and the problem."""
    path = Path(path)
    try:
        raw, found = _read(path)
    except HypernetworkError:
        raise
    except Exception as error:  # unpickling refused, truncated file, bad safetensors header
        raise HypernetworkError(f"{path.name}: cannot be read as a hypernetwork ({error})") from error
    options = {"activation_func": "linear", "is_layer_norm": False, "use_dropout": False, "activate_output": False,
               "last_layer_dropout": False, **found}
    if options["activation_func"] not in ACTIVATIONS:
        raise HypernetworkError(f"{path.name}: activation {options['activation_func']!r} is not supported "
                                f"(known: {', '.join(ACTIVATIONS)})")
    mlps: dict[int, tuple[tuple[Layer, ...], tuple[Layer, ...]]] = {}
    for key, value in raw.items():
        try:
            width = int(key)
        except (TypeError, ValueError):
            continue  # an option or other metadata
        if not isinstance(value, (list, tuple)) or len(value) < 2:
            raise HypernetworkError(f"{path.name}: width {width} should hold [key MLP, value MLP]")
        mlps[width] = (_mlp(value[0], options, f"{path.name} width {width} key"),
                       _mlp(value[1], options, f"{path.name} width {width} value"))
    if not mlps:
        raise HypernetworkError(f"{path.name}: no MLPs (integer width keys) found")
    return Hypernetwork(mlps=mlps, source=path.name)


__all__ = ["ACTIVATIONS", "Hypernetwork", "HypernetworkError", "HypernetworkPatch", "load_hypernetwork"]
