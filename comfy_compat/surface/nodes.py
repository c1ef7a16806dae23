"""ComfyUI's `nodes` module for custom node packs: MAX_RESOLUTION, NODE_CLASS_MAPPINGS and the core node classes.

Chisel's own `nodes` package is not ComfyUI's, so comfy_compat.setup adds these names to it (never replacing one of
ours). The core node classes are built from Chisel's node specs: each has ComfyUI's INPUT_TYPES (its /object_info
entry), RETURN_TYPES, RETURN_NAMES, CATEGORY, OUTPUT_NODE and FUNCTION, and the method FUNCTION names (with
ComfyUI's parameter order, from core_functions.py) runs the Chisel node on ComfyUI's values:

    nodes.CLIPTextEncode().encode(clip, "a cat")        -> ([[cond, {"pooled_output": ...}]],)
    class MyLoader(nodes.LoraLoader): ...                a pack's subclass, registered like any pack node

SaveImage and PreviewImage are written out (packs subclass them and set output_dir / type / prefix_append).
A ComfyUI core class Chisel does not implement is still there (a pack may subclass it at import); running it fails
with an error that says so.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from PIL import Image

from comfy_compat import host
from comfy_compat.surface.core_functions import CLASS_CONSTANTS, CORE_FUNCTIONS
from nodes.inputs import MAX_RESOLUTION
from nodes.legacy import from_comfy_conditioning, from_comfy_latent, to_comfy_value
from nodes.png_metadata import png_text_chunks

MAX_PREVIEW_RESOLUTION = 8192
NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
EXTENSION_WEB_DIRS: dict[str, str] = {}
LOADED_MODULE_DIRS: dict[str, str] = {}


class CoreNodeMissing(NotImplementedError):
    """A ComfyUI core node that Chisel does not implement was run."""


# ---- running a core node on ComfyUI's values --------------------------------------------------------------------
def _context() -> Any:
    ctx = host.current_run()
    if ctx is not None:
        return ctx
    from nodes.context import RunContext

    return RunContext(node_id="custom_node", prompt_id="", services=host.services())


def _to_ours(kind: str | None, value: Any) -> Any:
    from comfy_compat.values import from_comfy

    if kind == "LATENT" and isinstance(value, Mapping):
        return from_comfy_latent(value)
    if kind == "CONDITIONING" and isinstance(value, list):
        return from_comfy_conditioning(value)
    return from_comfy(kind or "*", value)


def _to_comfy(value: Any) -> Any:
    from comfy_compat.values import to_comfy

    value = to_comfy_value(value)
    if isinstance(value, list):
        return [to_comfy(v) for v in value]
    return to_comfy(value)


def run_core(name: str, arguments: Mapping[str, Any]) -> Any:
    """Run the core node `name` with ComfyUI-shaped arguments; ComfyUI-shaped result (a tuple, or {"ui", "result"}
    for nodes that show something)."""
    registry = host.HOST.registry
    spec = registry.get(name) if registry is not None else None
    if spec is None or registry.source(name) != "core":
        raise CoreNodeMissing(f"ComfyUI's {name} node is not implemented in Chisel")
    ctx = _context()
    inputs: dict[str, Any] = {}
    for declared in spec.inputs:
        if declared.name in arguments:
            inputs[declared.name] = _to_ours(getattr(declared, "type_name", None), arguments[declared.name])
    hidden_values = {"PROMPT": ctx.hidden.get("PROMPT"), "EXTRA_PNGINFO": ctx.hidden.get("EXTRA_PNGINFO"),
                     "DYNPROMPT": ctx.hidden.get("DYNPROMPT"), "UNIQUE_ID": ctx.node_id}
    for argument, kind in spec.hidden.items():
        inputs[argument] = arguments.get(argument, hidden_values.get(kind))
    unknown = set(arguments) - set(inputs)
    if unknown:
        raise TypeError(f"{name}: unexpected arguments {sorted(unknown)}")
    result = spec.call(ctx, inputs)
    values = tuple(_to_comfy(v) for v in result.values)
    if result.ui is not None:
        return {"ui": dict(result.ui), "result": values}
    return values


def _core_class(name: str, function: str, params: tuple[str, ...], v3: bool) -> type:
    """The ComfyUI-style class of core node `name` (its spec looked up when used: packs load after it is built)."""

    def spec() -> Any:
        registry = host.HOST.registry
        found = registry.get(name) if registry is not None else None
        return found if found is not None and registry.source(name) == "core" else None

    def input_types(cls: type) -> dict[str, Any]:
        found, registry = spec(), host.HOST.registry
        if found is None:
            return {"required": {}}
        return dict(found.info(registry.choices)["input"])

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        found = spec()
        names = list(params) if params else [i.name for i in found.inputs] if found is not None else []
        if len(args) > len(names):
            raise TypeError(f"{name}.{function}() takes {len(names)} arguments, got {len(args)}")
        arguments = dict(zip(names, args))
        arguments.update(kwargs)
        return run_core(name, arguments)

    found = spec()
    attributes: dict[str, Any] = {
        **{key: _copy(value) for key, value in CLASS_CONSTANTS.get(name, {}).items()},
        "INPUT_TYPES": classmethod(input_types),
        "FUNCTION": function,
        "CATEGORY": found.category if found is not None else "sd",
        "RETURN_TYPES": tuple(o.type for o in found.outputs) if found is not None else (),
        "RETURN_NAMES": tuple(o.name or o.type for o in found.outputs) if found is not None else (),
        "OUTPUT_NODE": bool(found.output_node) if found is not None else False,
        "DESCRIPTION": found.description if found is not None else "",
        "__module__": "nodes",
        "__doc__": f"ComfyUI's {name}, run by Chisel's node of that name.",
        function: classmethod(method) if v3 else method,
    }
    if found is not None and found.input_is_list:
        attributes["INPUT_IS_LIST"] = True
    if found is not None and any(o.is_list for o in found.outputs):
        attributes["OUTPUT_IS_LIST"] = tuple(o.is_list for o in found.outputs)
    return type(name, (), attributes)


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else dict(value) if isinstance(value, dict) else value


# ---- SaveImage / PreviewImage (packs subclass them and change where they save) ----------------------------------
class SaveImage:
    """Saves IMAGE batches as PNGs (prompt and workflow in the text chunks) under output/, as ComfyUI's."""

    RETURN_TYPES: tuple[str, ...] = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    CATEGORY = "image"
    DESCRIPTION = "Saves the input images to your ComfyUI output directory."

    def __init__(self) -> None:
        from comfy_compat.surface import folder_paths

        self.output_dir = folder_paths.get_output_directory()
        self.type = "output"
        self.prefix_append = ""
        self.compress_level = 4

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        return {"required": {"images": ("IMAGE", {"tooltip": "The images to save."}),
                             "filename_prefix": ("STRING", {"default": "ComfyUI"})},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def save_images(self, images: torch.Tensor, filename_prefix: str = "ComfyUI", prompt: Any = None,
                    extra_pnginfo: Any = None) -> dict[str, Any]:
        from comfy_compat.surface import folder_paths

        filename_prefix += self.prefix_append
        folder, filename, counter, subfolder, filename_prefix = folder_paths.get_save_image_path(
            filename_prefix, self.output_dir, images[0].shape[1], images[0].shape[0])
        services = host.HOST.services
        keep_metadata = services is None or services.settings.save_metadata
        results = []
        for batch_number, image in enumerate(images):
            pixels = np.clip(255.0 * image.cpu().numpy(), 0, 255).astype(np.uint8)
            picture = Image.fromarray(pixels)
            metadata = png_text_chunks(prompt, extra_pnginfo) if keep_metadata else None
            file = f"{filename.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
            picture.save(os.path.join(folder, file), pnginfo=metadata, compress_level=self.compress_level)
            results.append({"filename": file, "subfolder": subfolder, "type": self.type})
            counter += 1
        return {"ui": {"images": results}}


class PreviewImage(SaveImage):
    """Saves to temp/ under a random prefix, for showing in the editor."""

    DESCRIPTION = "Saves the input images to your ComfyUI temp directory."

    def __init__(self) -> None:
        from comfy_compat.surface import folder_paths

        self.output_dir = folder_paths.get_temp_directory()
        self.type = "temp"
        self.prefix_append = "_temp_" + "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))
        self.compress_level = 1

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802
        return {"required": {"images": ("IMAGE",)}, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}


_WRITTEN = {"SaveImage": SaveImage, "PreviewImage": PreviewImage}


# ---- module functions -------------------------------------------------------------------------------------------
def common_ksampler(model: Any, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str, positive: Any,
                    negative: Any, latent: Mapping[str, Any], denoise: float = 1.0, disable_noise: bool = False,
                    start_step: int | None = None, last_step: int | None = None, force_full_denoise: bool = False
                    ) -> tuple[dict[str, Any]]:
    """ComfyUI's common_ksampler: KSampler, or KSamplerAdvanced when steps are cut or noise disabled."""
    if not disable_noise and start_step is None and last_step is None and not force_full_denoise:
        return run_core("KSampler", {"model": model, "seed": seed, "steps": steps, "cfg": cfg,
                                     "sampler_name": sampler_name, "scheduler": scheduler, "positive": positive,
                                     "negative": negative, "latent_image": latent, "denoise": denoise})
    from comfy_compat.surface.comfy import sample

    samples = sample.sample(model, sample.prepare_noise(latent["samples"], seed, latent.get("batch_index"))
                            if not disable_noise else torch.zeros_like(latent["samples"]),
                            steps, cfg, sampler_name, scheduler, positive, negative, latent["samples"],
                            denoise=denoise, disable_noise=disable_noise, start_step=start_step,
                            last_step=last_step, force_full_denoise=force_full_denoise,
                            noise_mask=latent.get("noise_mask"), seed=seed)
    out = dict(latent)
    out.pop("downscale_ratio_spacial", None)
    out["samples"] = samples
    return (out,)


def before_node_execution() -> None:
    from comfy_compat.surface.comfy import model_management

    model_management.throw_exception_if_processing_interrupted()


def interrupt_processing(value: bool = True) -> None:
    from comfy_compat.surface.comfy import model_management

    model_management.interrupt_current_processing(value)


def get_module_name(module_path: str) -> str:
    base = os.path.basename(os.path.normpath(module_path))
    return base[:-3] if base.endswith(".py") else base


def load_custom_node(module_path: str, ignore: Any = set(), module_parent: str = "custom_nodes") -> bool:
    raise RuntimeError("custom node packs are loaded by Chisel's loader at startup; a pack cannot load another")


def init_extra_nodes(init_custom_nodes: bool = True, init_api_nodes: bool = True) -> list[str]:
    return []


# ---- building the view ------------------------------------------------------------------------------------------
def core_classes(module: str = "nodes") -> dict[str, type]:
    """ComfyUI's classes of one core module ("nodes", "comfy_extras.nodes_mask", ...), built for the bound
    registry."""
    classes: dict[str, type] = {}
    for name, (function, params, v3) in CORE_FUNCTIONS.get(module, {}).items():
        classes[name] = _WRITTEN.get(name) or _core_class(name, function, params, v3)
    return classes


def rebuild() -> dict[str, type]:
    """Fill NODE_CLASS_MAPPINGS with the bound registry's core nodes (pack classes are added by the loader)."""
    registry = host.HOST.registry
    NODE_CLASS_MAPPINGS.clear()
    NODE_DISPLAY_NAME_MAPPINGS.clear()
    EXTENSION_WEB_DIRS.clear()
    classes = core_classes("nodes")
    if registry is not None:
        for name in registry.names():
            if registry.source(name) != "core":
                continue
            if name not in classes:
                function, params, v3 = next((t[name] for t in CORE_FUNCTIONS.values() if name in t),
                                            ("run", (), False))
                classes[name] = _WRITTEN.get(name) or _core_class(name, function, params, v3)
            NODE_CLASS_MAPPINGS[name] = classes[name]
            spec = registry.get(name)
            if spec is not None:
                NODE_DISPLAY_NAME_MAPPINGS[name] = spec.display_name
    globals().update(classes)
    return classes


__all__ = ["MAX_RESOLUTION", "MAX_PREVIEW_RESOLUTION", "NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS",
           "EXTENSION_WEB_DIRS", "LOADED_MODULE_DIRS", "SaveImage", "PreviewImage", "common_ksampler",
           "before_node_execution", "interrupt_processing", "run_core", "rebuild", "core_classes"]
