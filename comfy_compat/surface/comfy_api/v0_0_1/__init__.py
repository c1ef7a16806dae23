"""ComfyUI's `comfy_api.v0_0_1`: the oldest versioned API (ComfyAPI and its execution helpers)."""

from __future__ import annotations

from comfy_compat.surface.comfy_api.latest import ComfyAPI_latest, ComfyAPISync  # noqa: F401
from comfy_compat.surface.comfy_api.latest import Input, InputImpl, Types  # noqa: F401


class ComfyAPIAdapter_v0_0_1(ComfyAPI_latest):  # noqa: N801 - ComfyUI's name
    VERSION = "0.0.1"
    STABLE = True


ComfyAPI = ComfyAPIAdapter_v0_0_1

__all__ = ["ComfyAPI", "ComfyAPISync", "Input", "InputImpl", "Types"]
