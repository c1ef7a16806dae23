"""Layers the flow-matching transformers (flux.py, mmdit.py) and T5 (t5.py) share: a Linear whose weights may be
stored in a narrower dtype than the one it computes in (fp8 weights, upcast per layer), the weight-free LayerNorm,
RMSNorm, and the storage policy that decides which tensors of a model take the storage dtype.

fp8 storage (ComfyUI's UNETLoader weight_dtype fp8_e4m3fn / fp8_e5m2): only the weight matrices of Linear layers are
kept in fp8; biases, norms and embeddings stay in the compute dtype. Each Linear upcasts its weight to the input's
dtype for its one matmul, so a 12 B-parameter Flux takes 12 GB instead of 24 (bf16) or 48 (fp32).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FP8_DTYPES = frozenset({torch.float8_e4m3fn, torch.float8_e5m2})


class Linear(nn.Linear):
    """nn.Linear that computes in its input's dtype whatever dtype its weight is stored in."""

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight if self.weight.dtype == x.dtype else self.weight.to(x.dtype)
        bias = self.bias
        if bias is not None and bias.dtype != x.dtype:
            bias = bias.to(x.dtype)
        return F.linear(x, weight, bias)


def layer_norm(x: Tensor, eps: float = 1e-6) -> Tensor:
    """LayerNorm without affine parameters (the DiT blocks modulate instead)."""
    return F.layer_norm(x, (x.shape[-1],), eps=eps)


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale (Zhang & Sennrich 2019), computed in float32.

    ``param_name`` is the parameter's name in the checkpoint: "scale" (Flux's QKNorm) or "weight" (SD3's, T5's).
    """

    def __init__(self, dim: int, *, eps: float = 1e-6, param_name: str = "scale") -> None:
        super().__init__()
        self.eps = eps
        self.param_name = param_name
        self.register_parameter(param_name, nn.Parameter(torch.ones(dim)))

    def forward(self, x: Tensor) -> Tensor:
        scale = getattr(self, self.param_name)
        rrms = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return (x.float() * rrms).to(x.dtype) * scale.to(x.dtype)


def storage_dtypes(module: nn.Module, compute: torch.dtype, storage: torch.dtype | None) -> dict[str, torch.dtype]:
    """The dtype each tensor of ``module`` is stored in: ``storage`` (e.g. fp8) for the weight matrices of our
    Linear layers when given, ``compute`` for everything else."""
    out = {name: compute for name, _ in module.state_dict().items()}
    if storage is None or storage == compute:
        return out
    for prefix, child in module.named_modules():
        if isinstance(child, Linear):
            out[f"{prefix}.weight" if prefix else "weight"] = storage
    return out


def cast_state(tensors: Mapping[str, Tensor], dtypes: Mapping[str, torch.dtype], device: torch.device
               ) -> dict[str, Tensor]:
    """Each floating tensor on ``device`` in its storage dtype (fp8 conversions round to nearest, as ComfyUI)."""
    out = {}
    for key, tensor in tensors.items():
        dtype = dtypes.get(key, tensor.dtype)
        out[key] = tensor.to(device=device, dtype=dtype) if tensor.is_floating_point() else tensor.to(device)
    return out
