"""Image nodes with ComfyUI's names, inputs and behaviour: load, save, preview, scale, invert, batch, empty.

Images are float32 tensors [B, H, W, C] in [0, 1]; masks [B, H, W] with 1 = the region to repaint (nodes/types.py).
Files go through `ctx.services.folders` (input/, output/, temp/); nothing here knows the server.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, ImageSequence

from nodes.context import RunContext
from nodes.inputs import MAX_RESOLUTION, Combo, Files, Float, Int, Link, String
from nodes.png_metadata import png_text_chunks
from nodes.registry import Node, Output, Result
from nodes.resize import crop_to_aspect
from safefiles import PathRefused, real_path_inside, stage

UpscaleMethod = Literal["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
CropMethod = Literal["disabled", "center"]
UPSCALE_METHODS: tuple[UpscaleMethod, ...] = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
CROP_METHODS: tuple[CropMethod, ...] = ("disabled", "center")
MASK_CHANNELS = ("alpha", "red", "green", "blue")
PREVIEW_SUFFIX_LETTERS = "abcdefghijklmnopqrstupvxyz"  # ComfyUI's alphabet for the "_temp_xxxxx" suffix
SAVE_COMPRESS_LEVEL = 4
PREVIEW_COMPRESS_LEVEL = 1


class OutputPathError(ValueError):
    """A filename prefix that would write outside the output folder, or names no file."""


class ImageLoadError(ValueError):
    """An input image that cannot be read."""


# ---- loading ----------------------------------------------------------------------------------------------------
class LoadImage(Node):
    """Loads an image from the input folder: its colours, and a mask from its alpha channel (1 where transparent)."""

    description = ""
    display_name = "Load Image"
    category = "image"
    image = Combo(Files("input", images_only=True), image_upload=True)
    outputs = (Output("IMAGE"), Output("MASK"))

    @classmethod
    def run(cls, ctx: RunContext, image: str) -> tuple[torch.Tensor, torch.Tensor]:
        path = ctx.services.folders.input_path(image)
        images, masks = [], []
        with _open_image(path, image) as picture:
            size = None
            for frame in ImageSequence.Iterator(picture):
                frame = _as_8bit_range(ImageOps.exif_transpose(frame))
                rgb = frame.convert("RGB")
                size = size or rgb.size
                if rgb.size != size:
                    continue  # ComfyUI keeps only frames the size of the first one
                images.append(_to_tensor(rgb)[None])
                masks.append(_alpha_mask(frame)[None])
                if picture.format == "MPO":
                    break  # MPO files carry stereo/preview frames after the photo: only the first is the image
        if not images:
            raise ImageLoadError(f"image {image!r} has no frames")
        if len(images) > 1 and len({m.shape for m in masks}) > 1:
            # Frames with and without alpha: give the alpha-less ones an empty mask of the image size.
            height, width = images[0].shape[1:3]
            masks = [m if m.shape[1:] == (height, width) else torch.zeros((1, height, width)) for m in masks]
        return torch.cat(images, dim=0), torch.cat(masks, dim=0)

    @classmethod
    def fingerprint(cls, ctx: RunContext, image: str, **_: Any) -> str:
        """The file's content hash: a changed file under the same name re-runs the node."""
        return _file_hash(ctx.services.folders.input_path(image))


class LoadImageMask(Node):
    """Loads one channel of an input image as a mask (alpha is inverted: 1 where transparent)."""

    description = ""
    display_name = "Load Image (as Mask)"
    category = "mask"
    image = Combo(Files("input", images_only=True), image_upload=True)
    channel = Combo(MASK_CHANNELS)
    outputs = (Output("MASK"),)

    @classmethod
    def run(cls, ctx: RunContext, image: str, channel: str) -> tuple[torch.Tensor]:
        path = ctx.services.folders.input_path(image)
        with _open_image(path, image) as picture:
            frame = ImageOps.exif_transpose(picture)
            if frame.getbands() != ("R", "G", "B", "A"):
                frame = _as_8bit_range(frame).convert("RGBA")
            band = channel[0].upper()
            if band in frame.getbands():
                mask = torch.from_numpy(np.array(frame.getchannel(band)).astype(np.float32) / 255.0)
                if band == "A":
                    mask = 1.0 - mask
            else:
                mask = torch.zeros((64, 64), dtype=torch.float32)
        return (mask[None],)

    @classmethod
    def fingerprint(cls, ctx: RunContext, image: str, **_: Any) -> str:
        return _file_hash(ctx.services.folders.input_path(image))


# ---- saving -----------------------------------------------------------------------------------------------------
class SaveImage(Node):
    """Saves the input images as PNG files in the output folder, with the prompt and workflow as PNG text."""

    description = "Saves the input images to your ComfyUI output directory."
    display_name = "Save Image"
    category = "image"
    output_node = True
    hidden = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    images = Link("IMAGE", tooltip="The images to save.")
    filename_prefix = String("ComfyUI", tooltip="The prefix for the file to save. This may include formatting "
                                                "information such as %date:yyyy-MM-dd% or %Empty Latent Image.width% "
                                                "to include values from nodes.")

    @classmethod
    def run(cls, ctx: RunContext, images: torch.Tensor, filename_prefix: str = "ComfyUI",
            prompt: Mapping[str, Any] | None = None, extra_pnginfo: Mapping[str, Any] | None = None) -> Result:
        saved = save_images(images, ctx.services.folders.directory("output"), filename_prefix,
                            kind="output", compress_level=SAVE_COMPRESS_LEVEL,
                            metadata=_metadata(ctx, prompt, extra_pnginfo))
        return Result(ui={"images": saved})


class PreviewImage(Node):
    """Saves the input images to the temp folder for display in the editor."""

    description = "Saves the input images to your ComfyUI output directory."  # SaveImage's, which ComfyUI's inherits
    display_name = "Preview Image"
    category = "image"
    output_node = True
    hidden = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    images = Link("IMAGE")

    @classmethod
    def run(cls, ctx: RunContext, images: torch.Tensor, prompt: Mapping[str, Any] | None = None,
            extra_pnginfo: Mapping[str, Any] | None = None) -> Result:
        rng = random.Random()  # a fresh generator per call: no shared state, distinct names per run
        suffix = "".join(rng.choice(PREVIEW_SUFFIX_LETTERS) for _ in range(5))
        saved = save_images(images, ctx.services.folders.directory("temp"), "ComfyUI_temp_" + suffix,
                            kind="temp", compress_level=PREVIEW_COMPRESS_LEVEL,
                            metadata=_metadata(ctx, prompt, extra_pnginfo))
        return Result(ui={"images": saved})


def save_images(images: torch.Tensor, root: Path, filename_prefix: str, *, kind: Literal["output", "temp"],
                compress_level: int, metadata: Any = None, now: datetime | None = None) -> list[dict[str, str]]:
    """Write each image of the batch as `<prefix>_<counter:05>_.png` (ComfyUI's naming) and describe the files.

    The counter starts at 1 + the highest counter already used by this prefix in the folder, and a file is never
    overwritten: each is written to a temporary name and then linked to its final name, which fails if that name
    was taken meanwhile (another save running at the same moment), in which case the next counter is tried.
    """
    height, width = int(images.shape[1]), int(images.shape[2])
    folder, subfolder, filename = resolve_save_path(root, filename_prefix, width=width, height=height, now=now)
    counter = next_counter(folder, filename)
    saved = []
    for batch_number, image in enumerate(images):
        data = encode_png(image, compress_level=compress_level, metadata=metadata)
        stem = filename.replace("%batch_num%", str(batch_number))
        name, counter = write_new_file(folder, lambda n, stem=stem: f"{stem}_{n:05}_.png", counter, data)
        saved.append({"filename": name, "subfolder": subfolder, "type": kind})
        counter += 1
    return saved


def resolve_save_path(root: Path, filename_prefix: str, *, width: int, height: int,
                      now: datetime | None = None) -> tuple[Path, str, str]:
    """(folder to write in, subfolder relative to root with "/" separators, file name stem) for a prefix.

    Raises OutputPathError when the prefix points outside `root` (absolute paths, "..", symlinks out).
    """
    prefix = substitute_variables(filename_prefix, width=width, height=height, now=now or datetime.now())
    normalized = os.path.normpath(prefix.replace("\\", "/"))
    subfolder, filename = os.path.split(normalized)
    if filename in ("", ".", "..") or os.path.isabs(normalized):
        raise OutputPathError(f"filename_prefix {filename_prefix!r} does not name a file inside the output folder")
    try:
        folder = real_path_inside(root, subfolder, field="filename_prefix")
    except PathRefused:
        raise OutputPathError(f"filename_prefix {filename_prefix!r}: saving outside the output folder is not "
                              f"allowed") from None
    os.makedirs(folder, exist_ok=True)
    return folder, subfolder.replace(os.sep, "/"), filename


def substitute_variables(prefix: str, *, width: int, height: int, now: datetime) -> str:
    """ComfyUI's %width% %height% %year% %month% %day% %hour% %minute% %second% in a filename prefix."""
    if "%" not in prefix:
        return prefix
    values = {"width": str(width), "height": str(height), "year": str(now.year), "month": f"{now.month:02}",
              "day": f"{now.day:02}", "hour": f"{now.hour:02}", "minute": f"{now.minute:02}",
              "second": f"{now.second:02}"}
    for key, value in values.items():
        prefix = prefix.replace(f"%{key}%", value)
    return prefix


def next_counter(folder: Path, filename: str) -> int:
    """1 + the highest N among files named `<filename>_N...` in the folder (1 when there are none)."""
    wanted = os.path.normcase(filename) + "_"
    highest = 0
    for entry in os.listdir(folder):
        if not os.path.normcase(entry[:len(wanted)]) == wanted:
            continue
        digits = entry[len(wanted):].split("_")[0]
        if digits.isdigit():
            highest = max(highest, int(digits))
    return highest + 1


def write_new_file(folder: Path, name_for: Any, counter: int, data: bytes) -> tuple[str, int]:
    """Write `data` under the first free name `name_for(counter)`, `name_for(counter + 1)`...; never overwrites.

    Returns (file name, counter used). The file appears complete or not at all, and a name taken meanwhile by a
    concurrent save is skipped, never replaced (safefiles.stage: temp file + exclusive link).
    """
    with stage(folder, data, prefix=".chisel-", suffix=".part") as staged:
        while not staged.link_as(name_for(counter)):
            counter += 1
        return name_for(counter), counter


def encode_png(image: torch.Tensor, *, compress_level: int, metadata: Any = None) -> bytes:
    """One [H, W, C] image as PNG bytes, quantized as ComfyUI does."""
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG", pnginfo=metadata, compress_level=compress_level)
    return buffer.getvalue()


def to_pil(image: torch.Tensor) -> Image.Image:
    """[H, W, C] float in [0, 1] -> PIL image. Quantization truncates, as ComfyUI's np.clip(255x).astype(uint8)."""
    pixels = np.clip(255.0 * image.detach().cpu().float().numpy(), 0, 255).astype(np.uint8)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]  # [H, W, 1] -> [H, W] greyscale
    return Image.fromarray(pixels)


def _metadata(ctx: RunContext, prompt: Mapping[str, Any] | None, extra_pnginfo: Mapping[str, Any] | None) -> Any:
    if not ctx.services.settings.save_metadata:
        return None
    hidden = getattr(ctx, "hidden", None) or {}
    prompt = prompt if prompt is not None else hidden.get("PROMPT")
    extra_pnginfo = extra_pnginfo if extra_pnginfo is not None else hidden.get("EXTRA_PNGINFO")
    if prompt is None and not extra_pnginfo:
        return None
    return png_text_chunks(prompt, extra_pnginfo)


# ---- transforms -------------------------------------------------------------------------------------------------
class ImageScale(Node):
    """Resizes images to a width and height (0 keeps the aspect ratio), optionally cropping the centre first."""

    description = ""
    display_name = "Upscale Image"
    category = "image/upscaling"
    image = Link("IMAGE")
    upscale_method = Combo(UPSCALE_METHODS)
    width = Int(512, min=0, max=MAX_RESOLUTION, step=1)
    height = Int(512, min=0, max=MAX_RESOLUTION, step=1)
    crop = Combo(CROP_METHODS)
    outputs = (Output("IMAGE"),)

    @classmethod
    def run(cls, ctx: RunContext, image: torch.Tensor, upscale_method: UpscaleMethod, width: int, height: int,
            crop: CropMethod) -> tuple[torch.Tensor]:
        if width == 0 and height == 0:
            return (image,)
        old_height, old_width = image.shape[1], image.shape[2]
        if width == 0:
            width = max(1, round(old_width * height / old_height))
        elif height == 0:
            height = max(1, round(old_height * width / old_width))
        return (resize_images(image, width, height, upscale_method, crop),)


class ImageScaleBy(Node):
    """Resizes images by a factor."""

    description = ""
    display_name = "Upscale Image By"
    category = "image/upscaling"
    image = Link("IMAGE")
    upscale_method = Combo(UPSCALE_METHODS)
    scale_by = Float(1.0, min=0.01, max=8.0, step=0.01)
    outputs = (Output("IMAGE"),)

    @classmethod
    def run(cls, ctx: RunContext, image: torch.Tensor, upscale_method: UpscaleMethod, scale_by: float
            ) -> tuple[torch.Tensor]:
        width = max(1, round(image.shape[2] * scale_by))
        height = max(1, round(image.shape[1] * scale_by))
        return (resize_images(image, width, height, upscale_method, "disabled"),)


class ImageInvert(Node):
    """Inverts the colours of images (1 - x)."""

    description = ""
    display_name = "Invert Image"
    category = "image"
    image = Link("IMAGE")
    outputs = (Output("IMAGE"),)

    @classmethod
    def run(cls, ctx: RunContext, image: torch.Tensor) -> tuple[torch.Tensor]:
        return (1.0 - image,)


class ImageBatch(Node):
    """Joins two image batches; the second is resized (bilinear, centre crop) to the first one's size."""

    description = ""
    display_name = "Batch Images"
    category = "image"
    deprecated = True  # as in ComfyUI (its menu offers newer batch nodes); saved workflows still run it
    image1 = Link("IMAGE")
    image2 = Link("IMAGE")
    outputs = (Output("IMAGE"),)

    @classmethod
    def run(cls, ctx: RunContext, image1: torch.Tensor, image2: torch.Tensor) -> tuple[torch.Tensor]:
        image1, image2 = _match_channels(image1, image2)
        if image1.shape[1:3] != image2.shape[1:3]:
            image2 = resize_images(image2, int(image1.shape[2]), int(image1.shape[1]), "bilinear", "center")
        return (torch.cat((image1, image2.to(image1.dtype)), dim=0),)


class EmptyImage(Node):
    """A batch of images filled with one colour (0xRRGGBB)."""

    description = ""
    category = "image"
    width = Int(512, min=1, max=MAX_RESOLUTION, step=1)
    height = Int(512, min=1, max=MAX_RESOLUTION, step=1)
    batch_size = Int(1, min=1, max=4096)
    color = Int(0, min=0, max=0xFFFFFF, step=1, display="color")
    outputs = (Output("IMAGE"),)

    @classmethod
    def run(cls, ctx: RunContext, width: int, height: int, batch_size: int = 1, color: int = 0) -> tuple[torch.Tensor]:
        channels = [((color >> shift) & 0xFF) / 0xFF for shift in (16, 8, 0)]
        pixel = torch.tensor(channels, dtype=torch.float32)
        return (pixel.expand(batch_size, height, width, 3).clone(),)


def resize_images(images: torch.Tensor, width: int, height: int, method: UpscaleMethod,
                  crop: CropMethod) -> torch.Tensor:
    """[B, H, W, C] -> [B, height, width, C], with ComfyUI's centre crop to the target aspect ratio first."""
    samples = images.movedim(-1, 1)  # [B, C, H, W]
    if crop == "center":
        samples = crop_to_aspect(samples, width, height)
    if method == "lanczos":
        resized = _lanczos(samples, width, height)
    else:
        resized = F.interpolate(samples, size=(height, width), mode=method)
    return resized.movedim(1, -1)  # [B, height, width, C]


def _lanczos(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Lanczos through Pillow on 8-bit images, as ComfyUI does (torch has no lanczos kernel)."""
    out = []
    for image in samples.movedim(1, -1):  # [H, W, C]
        resized = to_pil(image).resize((width, height), resample=Image.Resampling.LANCZOS)
        array = np.array(resized).astype(np.float32) / 255.0
        out.append(torch.from_numpy(array.reshape(height, width, -1)))
    return torch.stack(out).movedim(-1, 1).to(samples.device, samples.dtype)


def _match_channels(image1: torch.Tensor, image2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB next to RGBA: give the RGB batch an opaque alpha channel so the two can be joined."""
    c1, c2 = image1.shape[-1], image2.shape[-1]
    if c1 == c2:
        return image1, image2
    if {c1, c2} != {3, 4}:
        raise ValueError(f"ImageBatch: cannot join images with {c1} and {c2} channels")

    def with_alpha(image: torch.Tensor) -> torch.Tensor:
        return image if image.shape[-1] == 4 else torch.cat((image, torch.ones_like(image[..., :1])), dim=-1)

    return with_alpha(image1), with_alpha(image2)


# ---- file helpers -----------------------------------------------------------------------------------------------
def _open_image(path: Path, name: str) -> Image.Image:
    try:
        return Image.open(path)
    except (OSError, ValueError) as error:
        raise ImageLoadError(f"cannot read image {name!r}: {error}") from error


def _as_8bit_range(frame: Image.Image) -> Image.Image:
    """32-bit integer images ('I', e.g. 16-bit PNGs) hold 0..65535: scale to 0..255 before converting, as ComfyUI."""
    if frame.mode.startswith("I;16"):
        frame = frame.convert("I")
    if frame.mode == "I":
        return frame.point(lambda value: value * (1 / 255))
    return frame


def _to_tensor(picture: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(picture).astype(np.float32) / 255.0)


def _alpha_mask(frame: Image.Image) -> torch.Tensor:
    """1 - alpha where the frame has transparency; a 64x64 zero mask otherwise (ComfyUI's convention)."""
    if "A" in frame.getbands():
        alpha = frame.getchannel("A")
    elif frame.mode == "P" and "transparency" in frame.info:
        alpha = frame.convert("RGBA").getchannel("A")
    else:
        return torch.zeros((64, 64), dtype=torch.float32)
    return 1.0 - torch.from_numpy(np.array(alpha).astype(np.float32) / 255.0)


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


NODES = (LoadImage, LoadImageMask, SaveImage, PreviewImage, ImageScale, ImageScaleBy, ImageInvert, ImageBatch,
         EmptyImage)
