"""SaveLatent and LoadLatent: latents as `.latent` files, ComfyUI's format (safetensors with a "latent_tensor" and
the "latent_format_version_0" marker; the prompt and workflow as JSON strings in the header metadata).

Saving names files `<prefix>_<counter:05>_.latent` in the output folder (prefix default "latents/ComfyUI") and
writes them atomically, never overwriting. Loading reads only safetensors, never pickle; a file without the version
marker is an old ComfyUI latent, stored multiplied by 0.18215, and is scaled back as ComfyUI does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from nodes.context import RunContext
from nodes.image import next_counter, resolve_save_path, write_new_file
from nodes.inputs import Link, String
from nodes.registry import Node, Output, Result
from nodes.special_inputs import SuffixFiles
from nodes.types import Latent

VERSION_KEY = "latent_format_version_0"
OLD_FORMAT_SCALE = 0.18215


class LatentFileError(ValueError):
    """A .latent file that cannot be read as one (names the file)."""


class SaveLatent(Node):
    display_name = "SaveLatent"
    category = "_for_testing"
    output_node = True
    hidden = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    samples = Link("LATENT")
    filename_prefix = String("latents/ComfyUI")

    @classmethod
    def run(cls, ctx: RunContext, samples: Latent, filename_prefix: str = "ComfyUI",
            prompt: Mapping[str, Any] | None = None, extra_pnginfo: Mapping[str, Any] | None = None) -> Result:
        root = ctx.services.folders.directory("output")
        folder, subfolder, filename = resolve_save_path(root, filename_prefix, width=0, height=0)
        metadata = None
        if ctx.services.settings.save_metadata:
            hidden = ctx.hidden or {}
            prompt = prompt if prompt is not None else hidden.get("PROMPT")
            extra = extra_pnginfo if extra_pnginfo is not None else hidden.get("EXTRA_PNGINFO")
            metadata = {"prompt": json.dumps(prompt) if prompt is not None else ""}
            metadata.update({str(key): json.dumps(value) for key, value in (extra or {}).items()})
        tensors = {"latent_tensor": samples.samples.detach().cpu().contiguous(), VERSION_KEY: torch.tensor([])}
        data = save(tensors, metadata=metadata)
        name, _ = write_new_file(folder, lambda n: f"{filename}_{n:05}_.latent", next_counter(folder, filename), data)
        return Result(ui={"latents": [{"filename": name, "subfolder": subfolder, "type": "output"}]})


class LoadLatent(Node):
    display_name = "LoadLatent"
    category = "_for_testing"
    latent = SuffixFiles("input", ".latent")
    outputs = (Output("LATENT"),)

    @classmethod
    def run(cls, ctx: RunContext, latent: str) -> tuple[Latent]:
        path = ctx.services.folders.input_path(latent)
        try:
            tensors = load_file(path, device="cpu")
        except FileNotFoundError:
            raise LatentFileError(f"latent {latent!r}: no such file in the input folder") from None
        except (SafetensorError, OSError, ValueError) as error:
            raise LatentFileError(f"latent {latent!r} is not a safetensors .latent file ({error})") from None
        if "latent_tensor" not in tensors:
            raise LatentFileError(f"latent {latent!r} has no 'latent_tensor' (keys: {sorted(tensors)[:8]})")
        multiplier = 1.0 if VERSION_KEY in tensors else 1.0 / OLD_FORMAT_SCALE
        return (Latent(tensors["latent_tensor"].float() * multiplier),)

    @classmethod
    def fingerprint(cls, ctx: RunContext, latent: str, **_: Any) -> str:
        """The file's content hash: a changed file under the same name loads again."""
        digest = hashlib.sha256()
        with open(ctx.services.folders.input_path(latent), "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()


NODES = (SaveLatent, LoadLatent)
