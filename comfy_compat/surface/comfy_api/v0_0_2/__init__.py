"""ComfyUI's `comfy_api.v0_0_2`: the versioned alias of `comfy_api.latest` packs may pin."""

from __future__ import annotations

from comfy_compat.surface.comfy_api.latest import ComfyAPI_latest, ComfyAPISync, ComfyExtension, io, ui  # noqa: F401
from comfy_compat.surface.comfy_api.latest import Input, InputImpl, Types  # noqa: F401


class ComfyAPIAdapter_v0_0_2(ComfyAPI_latest):  # noqa: N801 - ComfyUI's name
    VERSION = "0.0.2"
    STABLE = False


ComfyAPI = ComfyAPIAdapter_v0_0_2

__all__ = ["ComfyAPI", "ComfyAPISync", "Input", "InputImpl", "Types", "ComfyExtension", "io", "ui"]
