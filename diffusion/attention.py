"""Multi-head attention over token-major tensors, shared by the UNet, the VAE and the text encoders.

One function so that the attention backend is chosen in one place: PyTorch's
`scaled_dot_product_attention`, which picks a fused kernel (flash / memory-efficient on CUDA,
a blocked flash kernel on CPU) and never materialises the full [T, T] score matrix when it can avoid it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def multihead_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    *,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention, softmax(QKᵀ/√d)·V (Vaswani et al. 2017, "Attention Is All You Need").

    Args:
        q: queries, [B, Tq, C].
        k: keys, [B, Tk, C].
        v: values, [B, Tk, C].
        heads: number of heads; C must be divisible by it (head width C / heads).
        mask: optional additive float mask or boolean keep-mask broadcastable to [B, heads, Tq, Tk].

    Returns:
        [B, Tq, C], heads merged back in channel order (head 0 first), as the reference models do.
    """
    b, tq, c = q.shape
    if c % heads:
        raise ValueError(f"attention width {c} is not divisible by {heads} heads")
    d = c // heads
    # (B, T, C) -> (B, T, heads, d) -> (B, heads, T, d); views only, SDPA accepts the strides.
    q = q.unflatten(-1, (heads, d)).transpose(1, 2)
    k = k.unflatten(-1, (heads, d)).transpose(1, 2)
    v = v.unflatten(-1, (heads, d)).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, heads, Tq, d)
    return out.transpose(1, 2).reshape(b, tq, c)  # (B, Tq, heads·d)
