"""The boundary between Chisel's values and the objects ComfyUI hands a pack's node.

Chisel's MODEL, CLIP and VAE values are immutable handles (diffusion/handles.py); a ComfyUI pack expects a
ModelPatcher, a comfy.sd.CLIP and a comfy.sd.VAE, which it may clone and patch. On the way into a pack's function a
handle becomes its ComfyUI object; on the way out (whatever the output's declared type: packs often declare "*") the
object becomes a handle again. LATENT and CONDITIONING are converted by nodes/legacy.py itself.
"""

from __future__ import annotations

from typing import Any

from comfy_compat import host
from comfy_compat.surface.comfy.model_patcher import ModelPatcher
from comfy_compat.surface.comfy.sd import CLIP, VAE
from diffusion.handles import Clip, Model, Vae
from nodes.legacy import Boundary


def to_comfy(value: Any) -> Any:
    if isinstance(value, Model):
        return ModelPatcher(value)
    if isinstance(value, Clip):
        return CLIP(value)
    if isinstance(value, Vae):
        return VAE(value)
    return value


def from_comfy(kind: str, value: Any) -> Any:
    if isinstance(value, (ModelPatcher, CLIP, VAE)):
        return value.to_handle()
    return value


BOUNDARY = Boundary(to_comfy=to_comfy, from_comfy=from_comfy, running=host.running)
