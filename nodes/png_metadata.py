"""PNG text metadata: the "prompt" and "workflow" chunks ComfyUI writes into saved images, written and read back.

Writing follows ComfyUI's SaveImage: one tEXt chunk "prompt" (the API prompt as JSON), then one per key of
`extra_pnginfo` (normally "workflow", the editor's graph). Reading walks the chunks directly (tEXt, zTXt and iTXt),
so it works on any PNG, never decodes pixels and survives truncated or garbage input: a broken chunk ends the walk and
what was read so far is kept; text that is not JSON is reported as None.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

from PIL.PngImagePlugin import PngInfo

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_INFLATED_TEXT = 64 * 1024 * 1024  # a compressed chunk may not inflate beyond this (zip-bomb guard)


def png_text_chunks(prompt: Mapping[str, Any] | None, extra_pnginfo: Mapping[str, Any] | None) -> PngInfo:
    """The PngInfo SaveImage writes: "prompt" first, then each extra_pnginfo key, each as JSON text."""
    info = PngInfo()
    if prompt is not None:
        info.add_text("prompt", json.dumps(prompt))
    for key, value in (extra_pnginfo or {}).items():
        info.add_text(str(key), json.dumps(value))
    return info


def read_png_text(source: bytes | bytearray | str | PathLike[str]) -> dict[str, str]:
    """Every text chunk of a PNG (tEXt, zTXt, iTXt) by keyword; the first occurrence of a keyword wins.

    Returns {} for data that is not a PNG. Never raises on malformed content.
    """
    data = _read_bytes(source)
    if not data.startswith(PNG_SIGNATURE):
        return {}
    texts: dict[str, str] = {}
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if len(body) < length:
            break  # truncated file: keep what was read
        pos += 12 + length  # length + type + body + crc
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            parsed = _parse_text_chunk(kind, body)
            if parsed is not None and parsed[0] not in texts:
                texts[parsed[0]] = parsed[1]
        elif kind == b"IEND":
            break
    return texts


def read_png_metadata(source: bytes | bytearray | str | PathLike[str]) -> dict[str, Any]:
    """{"prompt": API prompt or None, "workflow": UI workflow or None} from a PNG saved by ComfyUI or Chisel.

    A chunk whose text is not valid JSON, or whose JSON is not an object, reads as None.
    """
    texts = read_png_text(source)
    return {key: _json_object(texts.get(key)) for key in ("prompt", "workflow")}


# ---- helpers ----------------------------------------------------------------------------------------------------
def _read_bytes(source: bytes | bytearray | str | PathLike[str]) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    return Path(source).read_bytes()


def _parse_text_chunk(kind: bytes, body: bytes) -> tuple[str, str] | None:
    keyword, sep, rest = body.partition(b"\0")
    if not sep or not keyword:
        return None
    name = keyword.decode("latin-1")
    if kind == b"tEXt":
        return name, _decode_text(rest)
    if kind == b"zTXt":
        if not rest or rest[0] != 0:  # compression method 0 (zlib) is the only one defined
            return None
        inflated = _inflate(rest[1:])
        return None if inflated is None else (name, _decode_text(inflated))
    # iTXt: compression flag, compression method, language tag \0, translated keyword \0, UTF-8 text
    if len(rest) < 2:
        return None
    compressed, method, tail = rest[0], rest[1], rest[2:]
    _language, sep1, tail = tail.partition(b"\0")
    _translated, sep2, text = tail.partition(b"\0")
    if not (sep1 and sep2):
        return None
    if compressed:
        if method != 0:
            return None
        inflated = _inflate(text)
        if inflated is None:
            return None
        text = inflated
    return name, text.decode("utf-8", errors="replace")


def _decode_text(raw: bytes) -> str:
    # tEXt is Latin-1 by the PNG spec, but some writers put UTF-8 there; UTF-8 is tried first since it is stricter.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _inflate(raw: bytes) -> bytes | None:
    try:
        inflater = zlib.decompressobj()
        out = inflater.decompress(raw, MAX_INFLATED_TEXT)
    except zlib.error:
        return None
    return None if inflater.unconsumed_tail else out


def _json_object(text: str | None) -> Any:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None
