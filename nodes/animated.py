"""Saving an image batch as one animation (animated WEBP or PNG) and saving SVG documents, with ComfyUI's names,
inputs, file naming (`<prefix>_<counter:05>_.webp` in the output folder, prefix subfolders and %width% etc.
allowed) and metadata: the prompt and workflow go into WEBP EXIF tags (0x0110 "prompt:…", then 0x010F downwards),
APNG "comf" chunks after the image data, and an SVG <metadata> element.

Files are written through nodes/image.py's helpers: atomically, never overwriting (safefiles).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from nodes.context import RunContext
from nodes.image import next_counter, resolve_save_path, to_pil, write_new_file
from nodes.inputs import Boolean, Combo, Float, Int, Link, String
from nodes.registry import Node, Result

ANIMATION = "image/animation"
WEBP_METHODS = {"default": 4, "fastest": 0, "slowest": 6}
EXIF_MODEL, EXIF_MAKE = 0x0110, 0x010F
HIDDEN = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}


def saved_metadata(ctx: RunContext, prompt: Mapping[str, Any] | None,
                   extra_pnginfo: Mapping[str, Any] | None) -> tuple[Mapping[str, Any] | None, Mapping[str, Any]]:
    """(prompt, extra_pnginfo) to write into a saved file: none when the server does not save metadata."""
    if not ctx.services.settings.save_metadata:
        return None, {}
    hidden = ctx.hidden or {}
    prompt = prompt if prompt is not None else hidden.get("PROMPT")
    extra = extra_pnginfo if extra_pnginfo is not None else hidden.get("EXTRA_PNGINFO")
    return prompt, dict(extra or {})


def save_animation(ctx: RunContext, images: torch.Tensor, filename_prefix: str, suffix: str,
                   encode: Any) -> Result:
    """Write `encode(frames)` as `<prefix>_<counter>_.<suffix>` in the output folder; the ui ComfyUI reports."""
    if images.shape[0] == 0:
        raise ValueError("images: the batch is empty; there is nothing to save")
    root = ctx.services.folders.directory("output")
    folder, subfolder, filename = resolve_save_path(root, filename_prefix, width=int(images.shape[2]),
                                                    height=int(images.shape[1]))
    data = encode([to_pil(image) for image in images])
    name, _ = write_new_file(folder, lambda n: f"{filename}_{n:05}_.{suffix}", next_counter(folder, filename), data)
    ui: dict[str, Any] = {"images": [{"filename": name, "subfolder": subfolder, "type": "output"}]}
    if images.shape[0] > 1:
        ui["animated"] = (True,)
    return Result(ui=ui)


# One animated WEBP of the whole batch at `fps` frames per second.
class SaveAnimatedWEBP(Node):
    category = ANIMATION
    v3_schema = True
    output_node = True
    hidden = HIDDEN
    images = Link("IMAGE")
    filename_prefix = String("ComfyUI", multiline=False)
    fps = Float(6.0, min=0.01, max=1000.0, step=0.01)
    lossless = Boolean(True)
    quality = Int(80, min=0, max=100)
    method = Combo(tuple(WEBP_METHODS))

    @classmethod
    def run(cls, ctx: RunContext, images: torch.Tensor, filename_prefix: str, fps: float, lossless: bool,
            quality: int, method: str, prompt: Mapping[str, Any] | None = None,
            extra_pnginfo: Mapping[str, Any] | None = None) -> Result:
        prompt, extra = saved_metadata(ctx, prompt, extra_pnginfo)

        def encode(frames: list[Image.Image]) -> bytes:
            exif = frames[0].getexif()
            if prompt is not None:
                exif[EXIF_MODEL] = f"prompt:{json.dumps(prompt)}"
            for offset, (key, value) in enumerate(extra.items()):
                exif[EXIF_MAKE - offset] = f"{key}:{json.dumps(value)}"
            buffer = io.BytesIO()
            frames[0].save(buffer, format="WEBP", save_all=True, duration=int(1000.0 / fps),
                           append_images=frames[1:], exif=exif, lossless=lossless, quality=quality,
                           method=WEBP_METHODS[method])
            return buffer.getvalue()

        return save_animation(ctx, images, filename_prefix, "webp", encode)


# One animated PNG (APNG) of the whole batch at `fps` frames per second.
class SaveAnimatedPNG(Node):
    category = ANIMATION
    v3_schema = True
    output_node = True
    hidden = HIDDEN
    images = Link("IMAGE")
    filename_prefix = String("ComfyUI", multiline=False)
    fps = Float(6.0, min=0.01, max=1000.0, step=0.01)
    compress_level = Int(4, min=0, max=9)

    @classmethod
    def run(cls, ctx: RunContext, images: torch.Tensor, filename_prefix: str, fps: float, compress_level: int,
            prompt: Mapping[str, Any] | None = None, extra_pnginfo: Mapping[str, Any] | None = None) -> Result:
        prompt, extra = saved_metadata(ctx, prompt, extra_pnginfo)

        def encode(frames: list[Image.Image]) -> bytes:
            info = None
            if prompt is not None or extra:
                info = PngInfo()
                for key, value in ([("prompt", prompt)] if prompt is not None else []) + list(extra.items()):
                    info.add(b"comf", key.encode("latin-1") + b"\0" + json.dumps(value).encode("latin-1"),
                             after_idat=True)
            buffer = io.BytesIO()
            frames[0].save(buffer, format="PNG", pnginfo=info, compress_level=compress_level, save_all=True,
                           duration=int(1000.0 / fps), append_images=frames[1:])
            return buffer.getvalue()

        return save_animation(ctx, images, filename_prefix, "png", encode)


class SaveSVGNode(Node):
    description = "Save SVG files on disk."
    category = "image/save"
    v3_schema = True
    output_node = True
    hidden = HIDDEN
    svg = Link("SVG")
    filename_prefix = String("svg/ComfyUI", multiline=False,
                             tooltip="The prefix for the file to save. This may include formatting information "
                                     "such as %date:yyyy-MM-dd% or %Empty Latent Image.width% to include values "
                                     "from nodes.")

    @classmethod
    def run(cls, ctx: RunContext, svg: Any, filename_prefix: str = "svg/ComfyUI",
            prompt: Mapping[str, Any] | None = None, extra_pnginfo: Mapping[str, Any] | None = None) -> Result:
        prompt, extra = saved_metadata(ctx, prompt, extra_pnginfo)
        metadata = {**({"prompt": prompt} if prompt is not None else {}), **extra}
        root = ctx.services.folders.directory("output")
        folder, subfolder, filename = resolve_save_path(root, filename_prefix, width=0, height=0)
        counter = next_counter(folder, filename)
        saved = []
        for number, document in enumerate(svg_documents(svg)):
            if metadata:
                document = with_svg_metadata(document, json.dumps(metadata, indent=2))
            stem = filename.replace("%batch_num%", str(number))
            name, counter = write_new_file(folder, lambda n, stem=stem: f"{stem}_{n:05}_.svg", counter,
                                           document.encode("utf-8"))
            saved.append({"filename": name, "subfolder": subfolder, "type": "output"})
            counter += 1
        return Result(ui={"images": saved})


def svg_documents(svg: Any) -> list[str]:
    """The SVG documents of an SVG value: ComfyUI's SVG (`.data`, a list of byte streams), or text, bytes or a
    list of them."""
    items: Iterable[Any] = getattr(svg, "data", svg)
    if isinstance(items, (str, bytes, bytearray)) or hasattr(items, "read"):
        items = [items]
    documents = []
    for item in items:
        if hasattr(item, "read"):
            if hasattr(item, "seek"):
                item.seek(0)
            item = item.read()
        if isinstance(item, (bytes, bytearray)):
            item = bytes(item).decode("utf-8")
        if not isinstance(item, str):
            raise TypeError(f"svg: expected SVG documents (text or bytes), got {type(item).__name__}")
        documents.append(item)
    return documents


def with_svg_metadata(document: str, metadata_json: str) -> str:
    """The document with ComfyUI's <metadata> CDATA block after each opening <svg> tag."""
    element = f"""  <metadata>
                <![CDATA[
            {metadata_json}
                ]]>
            </metadata>
            """
    return re.sub(r"(<svg[^>]*>)", lambda match: match.group(1) + "\n" + element, document, flags=re.UNICODE)


NODES = (SaveAnimatedWEBP, SaveAnimatedPNG, SaveSVGNode)
