"""ComfyUI's `comfy_execution` package: the graph helpers packs import (ExecutionBlocker, GraphBuilder, ...)."""


def __getattr__(name: str):  # noqa: ANN202 - `from comfy_execution import submodule` for ComfyUI's submodules
    import importlib

    from comfy_compat.surface.unavailable import is_comfy_module

    if not name.startswith("__") and is_comfy_module(f"comfy_execution.{name}"):
        return importlib.import_module(f"comfy_execution.{name}")
    raise AttributeError(f"module 'comfy_execution' has no attribute {name!r}")
