"""Files: GET /view, POST /upload/image, POST /upload/mask, GET /view_metadata/{folder}.

Every path goes through safefiles.resolve_inside (clean name, then real path inside the real folder), so `..`,
absolute paths, encoded slashes, NUL bytes and symlinks pointing out are all refused. Uploads are streamed with a
size limit, opened with Pillow (non-images refused), never overwrite silently (same content keeps the name, other
content gets "name (1).png"), and are written off the event loop with safefiles (temp file, then an exclusive link,
or a rename when overwrite is asked), so concurrent uploads of one name end as distinct, complete files.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import stat
import struct
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from safefiles import PathRefused, clean_file_name, clean_relative_name, numbered_names, resolve_inside, stage
from server.routes.errors import ApiError, bad_request, not_found
from server.routes.state import STATE, AppState
from server.security import safe_content_type, split_annotation

routes = web.RouteTableDef()
FOLDER_TYPES = ("output", "input", "temp")
UPLOAD_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MAX_SAFETENSORS_HEADER = 64 * 1024 * 1024
MAX_FIELD_BYTES = 64 * 1024  # non-file multipart fields (type, subfolder, original_ref...)
MAX_UPLOAD_NAMES = 10_000  # 'x.png', 'x (1).png' ... 'x (9999).png', then 409


# ---- /view ------------------------------------------------------------------------------------------------------
@routes.get("/view")
async def view(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    query = request.query
    filename = query.get("filename")
    if not filename:
        raise bad_request("missing_field", "Query parameter filename is required", "", parameter="filename")
    filename, annotated = split_annotation(filename, default="")
    kind = annotated or query.get("type", "output") or "output"
    if kind not in FOLDER_TYPES:
        raise bad_request("invalid_query_parameter", "Query parameter type must be output, input or temp",
                          f"type={kind[:40]!r}", parameter="type")
    channel = query.get("channel", "rgba")
    if channel not in ("rgba", "rgb", "a"):
        raise bad_request("invalid_query_parameter", "Query parameter channel must be rgba, rgb or a",
                          f"channel={channel[:40]!r}", parameter="channel")
    preview = _preview_format(query.get("preview"), channel)
    path = _resolve(state, kind, query.get("subfolder", ""), filename, field="filename")
    if not path.is_file():
        raise not_found("file_not_found", "No such file", f"{kind}/{_shown(query.get('subfolder', ''), filename)}")
    disposition = f'filename="{_header_safe(path.name)}"'
    if preview is None and channel == "rgba":
        return web.FileResponse(path, headers={"Content-Type": safe_content_type(path.name),
                                               "Content-Disposition": disposition})
    loop = asyncio.get_running_loop()
    data, content_type = await loop.run_in_executor(None, _transform, path, channel, preview)
    return web.Response(body=data, content_type=content_type, headers={"Content-Disposition": disposition})


def _preview_format(value: str | None, channel: str) -> tuple[str, int] | None:
    """ComfyUI's preview=webp;90 / jpeg;80 (format defaults to webp, quality to 90; alpha forces webp)."""
    if value is None:
        return None
    parts = value.split(";")
    image_format = parts[0].strip().lower() or "webp"
    if image_format not in ("webp", "jpeg") or "a" in channel.replace("rgba", ""):
        image_format = "webp"
    quality = 90
    if len(parts) > 1 and parts[-1].strip():
        text = parts[-1].strip()
        if not text.isdigit() or not 1 <= int(text) <= 100:
            raise bad_request("invalid_query_parameter", "preview quality must be a whole number from 1 to 100",
                              f"preview={value[:40]!r}", parameter="preview")
        quality = int(text)
    return image_format, quality


def _transform(path: Path, channel: str, preview: tuple[str, int] | None) -> tuple[bytes, str]:
    from PIL import Image

    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened
    except (OSError, Image.DecompressionBombError, ValueError) as exc:
        raise ApiError(415, "not_an_image", "The file is not an image that can be converted",
                       f"{path.name}: {exc}") from None
    if channel == "rgb":
        image = image.convert("RGB")
    elif channel == "a":
        alpha = image.getchannel("A") if "A" in image.getbands() else Image.new("L", image.size, 255)
        image = Image.new("RGBA", image.size)
        image.putalpha(alpha)
    out = io.BytesIO()
    if preview is None:
        image.save(out, format="PNG")
        return out.getvalue(), "image/png"
    image_format, quality = preview
    if image_format == "jpeg" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    image.save(out, format=image_format.upper(), quality=quality)
    return out.getvalue(), f"image/{image_format}"


# ---- uploads ----------------------------------------------------------------------------------------------------
@routes.post("/upload/image")
async def upload_image(request: web.Request) -> web.Response:
    state = request.app[STATE]
    form = await _read_upload_form(request, state)
    try:
        data = form["file_bytes"]
        await asyncio.get_running_loop().run_in_executor(None, _check_image, data, form["file_name"])
        result = await asyncio.get_running_loop().run_in_executor(None, _store_upload, state, form, data)
    finally:
        form["file_bytes"] = b""
    return web.json_response(result)


@routes.post("/upload/mask")
async def upload_mask(request: web.Request) -> web.Response:
    state = request.app[STATE]
    form = await _read_upload_form(request, state)
    ref_text = form["fields"].get("original_ref")
    if not ref_text:
        raise bad_request("missing_field", "Form field original_ref is required",
                          'a JSON object {"filename", "subfolder", "type"} naming the image the mask belongs to',
                          field="original_ref")
    try:
        ref = json.loads(ref_text)
    except ValueError:
        raise bad_request("invalid_field", "Form field original_ref is not valid JSON", ref_text[:80],
                          field="original_ref") from None
    if not isinstance(ref, dict) or not isinstance(ref.get("filename"), str):
        raise bad_request("invalid_field", "original_ref must be an object with a filename", ref_text[:80],
                          field="original_ref")
    ref_name, annotated = split_annotation(ref["filename"], default="")
    ref_kind = annotated or ref.get("type") or "output"
    if ref_kind not in FOLDER_TYPES:
        raise bad_request("invalid_field", "original_ref.type must be output, input or temp", str(ref_kind)[:40],
                          field="original_ref")
    subfolder = ref.get("subfolder") or ""
    if not isinstance(subfolder, str):
        raise bad_request("invalid_field", "original_ref.subfolder must be a string", "", field="original_ref")
    original = _resolve(state, ref_kind, subfolder, ref_name, field="original_ref")
    if not original.is_file():
        raise not_found("file_not_found", "The original image of the mask does not exist",
                        f"{ref_kind}/{_shown(subfolder, ref_name)}")
    loop = asyncio.get_running_loop()
    composed = await loop.run_in_executor(None, _compose_mask, original, form["file_bytes"])
    result = await loop.run_in_executor(None, _store_upload, state, form, composed)
    return web.json_response(result)


async def _read_upload_form(request: web.Request, state: AppState) -> dict[str, Any]:
    """Stream the multipart form: the `image` file part (size-limited) and the small text fields."""
    limit = state.config.max_upload_size
    if request.content_length is not None and request.content_length > limit + 1024 * 1024:
        raise _too_large(limit)
    if not request.content_type.startswith("multipart/"):
        raise bad_request("invalid_body", "Uploads must be multipart/form-data",
                          f"got Content-Type {request.content_type!r}")
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError, KeyError) as exc:
        raise bad_request("invalid_body", "The multipart body cannot be read", str(exc)[:200]) from None
    fields: dict[str, str] = {}
    file_bytes: bytes | None = None
    file_name = ""
    try:
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise bad_request("invalid_body", "Nested multipart bodies are not accepted", "")
            if part.name == "image":
                if not part.filename:
                    raise bad_request("missing_field", "The image part has no file name",
                                      "send the file as the form field 'image' with a file name", field="image")
                file_name = part.filename
                chunks, total = [], 0
                while chunk := await part.read_chunk(256 * 1024):
                    total += len(chunk)
                    if total > limit:
                        raise _too_large(limit)
                    chunks.append(chunk)
                file_bytes = b"".join(chunks)
            elif part.name:
                raw = await part.read(decode=False)
                if len(raw) > MAX_FIELD_BYTES:
                    raise bad_request("invalid_field", f"Form field {part.name} is too long",
                                      f"{len(raw)} bytes", field=part.name)
                fields[part.name] = raw.decode("utf-8", errors="replace")
    except ApiError:
        raise
    except (ValueError, AssertionError, RuntimeError, UnicodeError) as exc:
        raise bad_request("invalid_body", "The multipart body is malformed", str(exc)[:200]) from None
    if file_bytes is None:
        raise bad_request("missing_field", "Form field image is required", "the file to upload", field="image")
    kind = fields.get("type") or "input"
    if kind not in FOLDER_TYPES:
        raise bad_request("invalid_field", "Form field type must be input, temp or output", f"type={kind[:40]!r}",
                          field="type")
    try:
        name = clean_file_name(file_name, field="image")
        subfolder = clean_relative_name(fields.get("subfolder", ""), field="subfolder", allow_empty=True)
    except PathRefused as exc:
        raise _refused(exc) from None
    if Path(name).suffix.lower() not in UPLOAD_EXTENSIONS:
        raise ApiError(415, "unsupported_file_type", "Only image files can be uploaded",
                       f"{name!r}: the extension must be one of {', '.join(UPLOAD_EXTENSIONS)}", {"field": "image"})
    overwrite = fields.get("overwrite", "").strip().lower() in ("true", "1")
    return {"fields": fields, "file_bytes": file_bytes, "file_name": name, "type": kind, "subfolder": subfolder,
            "overwrite": overwrite}


def _check_image(data: bytes, name: str) -> None:
    """Open the upload with Pillow and verify it decodes as an image; anything else is refused."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except Image.DecompressionBombError as exc:
        raise ApiError(413, "image_too_large", "The image has too many pixels", f"{name}: {exc}") from None
    except Exception as exc:  # Pillow raises many kinds for corrupt data; all mean "not an image"
        raise ApiError(415, "not_an_image", "The uploaded file is not an image Pillow can read",
                       f"{name}: {type(exc).__name__}: {str(exc)[:160]}", {"field": "image"}) from None


def _compose_mask(original: Path, mask_data: bytes) -> bytes:
    """ComfyUI's mask upload: the original image with the uploaded image's alpha as its alpha; PNG text kept."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    try:
        mask = Image.open(io.BytesIO(mask_data))
        mask.load()
    except Exception as exc:
        raise ApiError(415, "not_an_image", "The uploaded mask is not an image Pillow can read",
                       f"{type(exc).__name__}: {str(exc)[:160]}", {"field": "image"}) from None
    try:
        with Image.open(original) as opened:
            text = dict(getattr(opened, "text", {}) or {})
            image = opened.convert("RGBA")
    except Exception as exc:
        raise ApiError(415, "not_an_image", "The original image cannot be read", f"{original.name}: {exc}") from None
    if mask.size != image.size:
        raise bad_request("mask_size_mismatch", "The mask and the original image differ in size",
                          f"mask {mask.size[0]}x{mask.size[1]}, original {image.size[0]}x{image.size[1]}")
    image.putalpha(mask.convert("RGBA").getchannel("A"))
    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=4, pnginfo=info)
    return out.getvalue()


def _store_upload(state: AppState, form: dict[str, Any], data: bytes) -> dict[str, str]:
    """Write data under type/subfolder/name without silently overwriting: identical content keeps its name,
    different content becomes 'name (1).ext', 'name (2).ext'... Atomic and race-free (safefiles.stage): the complete
    temp file is linked onto a free name (a taken name fails the link, so concurrent uploads never share one), or
    renamed over the name when overwrite is asked. Never writes through a symlink or over a folder."""
    kind, subfolder, name = form["type"], form["subfolder"], form["file_name"]
    root = state.folders.directory(kind)
    folder = resolve_inside(root, subfolder, field="subfolder", allow_root=True)
    folder.mkdir(parents=True, exist_ok=True)
    folder = resolve_inside(root, subfolder, field="subfolder", allow_root=True)  # re-check after mkdir
    digest = hashlib.sha256(data).digest()
    with stage(folder, data, prefix=".upload-", suffix=".part") as staged:
        for tried, candidate in enumerate(numbered_names(name)):
            if tried >= MAX_UPLOAD_NAMES:
                raise ApiError(409, "name_exhausted", "Too many files with this name", name)
            target = folder / candidate
            if target.is_symlink() or (target.exists() and not target.is_file()):
                continue  # never write through a link or over a folder: take the next name
            if form["overwrite"]:
                try:
                    staged.replace(candidate)
                except IsADirectoryError:  # became a folder since the check
                    continue
                break
            if staged.link_as(candidate):  # fails if the name is taken, even by an upload running right now
                break
            if _sha256_of(target) == digest:
                break  # the same content is already there under this name
    return {"name": candidate, "subfolder": subfolder, "type": kind}


def _sha256_of(path: Path) -> bytes | None:
    """The file's SHA-256; None for anything but a regular file (a symlink is not followed)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.digest()


# ---- /view_metadata ---------------------------------------------------------------------------------------------
@routes.get("/view_metadata/{folder}")
async def view_metadata(request: web.Request) -> web.Response:
    state = request.app[STATE]
    folder = request.match_info["folder"]
    filename = request.query.get("filename")
    if not filename:
        raise bad_request("missing_field", "Query parameter filename is required", "", parameter="filename")
    if not filename.endswith(".safetensors"):
        raise not_found("no_metadata", "Only .safetensors files carry metadata", filename[:120])
    from server.paths import ModelNotFound, UnknownFolder

    try:
        path = state.folders.model_path(folder, filename)
    except UnknownFolder as exc:
        raise not_found("unknown_folder", "Unknown model folder", exc.message) from None
    except ModelNotFound as exc:
        raise not_found("model_not_found", "No such model file", str(exc)) from None
    metadata = await asyncio.get_running_loop().run_in_executor(None, _safetensors_metadata, path)
    if metadata is None:
        raise not_found("no_metadata", "The file has no __metadata__", filename[:120])
    return web.json_response(metadata)


def _safetensors_metadata(path: Path) -> dict[str, Any] | None:
    """The `__metadata__` of a safetensors header (8-byte little-endian length, then JSON)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                return None
            (length,) = struct.unpack("<Q", head)
            if length > MAX_SAFETENSORS_HEADER:
                return None
            header = json.loads(f.read(length))
    except (OSError, ValueError):
        return None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else None


# ---- helpers ----------------------------------------------------------------------------------------------------
def _resolve(state: AppState, kind: str, subfolder: str, filename: str, *, field: str) -> Path:
    try:
        sub = clean_relative_name(subfolder or "", field="subfolder", allow_empty=True)
        name = clean_relative_name(filename, field=field)
        return resolve_inside(state.folders.directory(kind), sub, name, field=field)
    except PathRefused as exc:
        raise _refused(exc) from None


def _refused(exc: PathRefused) -> ApiError:
    return ApiError(400, "invalid_path", "The path is not allowed", str(exc), {"field": exc.field})


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "request_too_large", "The upload is too large",
                    f"the limit is {limit} bytes ({limit // (1024 * 1024)} MB)", {"max_upload_size": limit})


def _shown(subfolder: str, filename: str) -> str:
    return f"{subfolder}/{filename}" if subfolder else filename


def _header_safe(name: str) -> str:
    return "".join(c for c in name if c not in '"\\\r\n' and ord(c) >= 32)
