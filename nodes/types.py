"""The values that flow between nodes, by their ComfyUI type name. All of them are immutable: a node that changes a
value returns a new one and never writes into an input tensor.

IMAGE and MASK stay plain tensors in ComfyUI's layout so that ComfyUI-style custom nodes interoperate unchanged:
  IMAGE  torch.Tensor [B, H, W, C] float32 in [0, 1] (C = 3, sometimes 4)
  MASK   torch.Tensor [B, H, W] float32 in [0, 1]; 1 marks the region to repaint (ComfyUI's convention)
LATENT and CONDITIONING are the model library's typed values (diffusion/values.py), MODEL, CLIP and VAE its handles
(diffusion/handles.py); they are named here so that node modules find every value type in one place.
"""

from __future__ import annotations

import torch

from diffusion.values import Area, CondEntry, Conditioning, Latent

Image = torch.Tensor
Mask = torch.Tensor

__all__ = ["Area", "CondEntry", "Conditioning", "Image", "Latent", "Mask"]
