"""ComfyUI's `comfy.comfy_types`: typing helpers for node classes (IO, ComfyNodeABC, InputTypeDict...)."""

from comfy_compat.surface.comfy.comfy_types.node_typing import (  # noqa: F401
    IO, CheckLazyMixin, ComfyNodeABC, FileLocator, InputTypeDict, InputTypeOptions)

__all__ = ["IO", "CheckLazyMixin", "ComfyNodeABC", "FileLocator", "InputTypeDict", "InputTypeOptions"]
