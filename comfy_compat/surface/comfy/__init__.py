"""ComfyUI's `comfy` package: the modules custom node packs import (comfy.utils, comfy.model_management, ...)."""


def __getattr__(name: str):  # noqa: ANN202 - `from comfy import submodule` for ComfyUI's submodules
    import importlib

    from comfy_compat.surface.unavailable import is_comfy_module

    if not name.startswith("__") and is_comfy_module(f"comfy.{name}"):
        return importlib.import_module(f"comfy.{name}")
    raise AttributeError(f"module 'comfy' has no attribute {name!r}")
