"""Reading and writing .safetensors files: the header alone (names, dtypes, shapes), tensors by name, atomic saves.

The header is parsed here (8-byte little-endian length, then JSON) so a checkpoint can be identified from its
names and shapes without touching gigabytes of data, and so a truncated or foreign file fails with a clear reason
before any tensor is read. Tensor data is read through `safetensors.safe_open` (memory-mapped). Never pickle.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from safefiles import atomic_path

PICKLE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin", ".pkl"})
"""Suffixes of pickle-based checkpoints, refused (unpickling can run arbitrary code)."""

MAX_HEADER_BYTES = 100 * 1024 * 1024
"""safetensors' own limit on the JSON header."""

_DTYPE_SIZES: Mapping[str, int] = MappingProxyType({
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8,
})


class CheckpointError(Exception):
    """Base of every error about a model file; always names the file."""

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path.name}: {message}")


class CheckpointFormatError(CheckpointError):
    """The file is not a readable .safetensors file (pickle checkpoint, truncated, corrupt header, missing)."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.reason = reason
        super().__init__(path, reason)


@dataclass(frozen=True)
class TensorInfo:
    """One tensor entry of a safetensors header."""

    dtype: str
    """safetensors dtype code: "F32", "F16", "BF16", "I64", ..."""
    shape: tuple[int, ...]
    """Tensor shape; () for a scalar."""
    data_offsets: tuple[int, int]
    """Byte range [begin, end) in the data section."""


@dataclass(frozen=True)
class SafetensorsHeader:
    """The parsed header: tensors by name and the free-form string metadata."""

    path: Path
    tensors: Mapping[str, TensorInfo]
    metadata: Mapping[str, str]

    @property
    def shapes(self) -> Mapping[str, tuple[int, ...]]:
        """Name -> shape of every tensor (what model detection reads)."""
        return MappingProxyType({k: v.shape for k, v in self.tensors.items()})


def refuse_pickle(path: Path) -> None:
    """Raise CheckpointFormatError for pickle-based checkpoint suffixes."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointFormatError(
            path,
            f"'{path.suffix}' checkpoints are Python pickles, which can run arbitrary code when loaded; Chisel loads "
            "only .safetensors files (convert the file to .safetensors with a trusted tool first)",
        )


def read_header(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """Parse and validate a safetensors header without reading tensor data.

    Raises:
        CheckpointFormatError: pickle suffix, missing file, not safetensors, corrupt header, or truncated data.
    """
    path = Path(path)
    refuse_pickle(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise CheckpointFormatError(path, f"file is {size} bytes, too short to be a .safetensors file")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
                raise CheckpointFormatError(
                    path,
                    f"not a .safetensors file or truncated: header length {header_len} does not fit in {size} bytes"
                    + (" (this looks like a zip/pickle checkpoint)" if prefix[:2] == b"PK" else ""),
                )
            raw = f.read(header_len)
    except FileNotFoundError:
        raise CheckpointFormatError(path, "file not found") from None
    except IsADirectoryError:
        raise CheckpointFormatError(path, "is a directory, not a .safetensors file") from None
    try:
        parsed = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointFormatError(path, f"corrupt safetensors header ({exc})") from None
    if not isinstance(parsed, dict):
        raise CheckpointFormatError(path, "corrupt safetensors header (not a JSON object)")

    metadata = parsed.pop("__metadata__", None) or {}
    data_size = size - 8 - header_len
    tensors: dict[str, TensorInfo] = {}
    for name, entry in parsed.items():
        try:
            info = TensorInfo(str(entry["dtype"]), tuple(int(d) for d in entry["shape"]),
                              (int(entry["data_offsets"][0]), int(entry["data_offsets"][1])))
        except (KeyError, TypeError, ValueError, IndexError):
            raise CheckpointFormatError(path, f"corrupt safetensors header entry for {name!r}") from None
        begin, end = info.data_offsets
        if end > data_size or begin > end:
            raise CheckpointFormatError(
                path, f"truncated: tensor {name!r} needs bytes {begin}..{end} but the data section has {data_size}"
            )
        element_size = _DTYPE_SIZES.get(info.dtype)
        numel = 1
        for d in info.shape:
            numel *= d
        if element_size is not None and numel * element_size != end - begin:
            raise CheckpointFormatError(path, f"corrupt: tensor {name!r} {info.shape} {info.dtype} has {end - begin} bytes")
        tensors[name] = info
    return SafetensorsHeader(path, MappingProxyType(tensors), MappingProxyType(dict(metadata)))


@contextmanager
def open_tensors(path: str | os.PathLike[str]) -> Iterator[TensorReader]:
    """Open a (header-validated) safetensors file for reading tensors by name, memory-mapped, on the CPU."""
    path = Path(path)
    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
    except (OSError, SafetensorError) as exc:
        raise CheckpointFormatError(path, f"cannot open for reading ({exc})") from exc
    with handle:
        yield TensorReader(path, handle)


class TensorReader:
    """Reads tensors of one open file by name."""

    def __init__(self, path: Path, handle) -> None:
        self.path = path
        self._handle = handle

    def get(self, name: str) -> torch.Tensor:
        """The tensor `name` (CPU, memory-mapped, file dtype)."""
        return self._handle.get_tensor(name)


def save_atomic(
    path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    """Write a .safetensors file atomically (safefiles.atomic_path): a temporary file in the same folder, fsynced,
    then renamed over `path`; a failed save leaves `path` as it was.

    Tensors are moved to the CPU and made contiguous (safetensors requires both); no tensor may share memory.
    """
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"{path.name}: checkpoints are written as .safetensors only")
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"safetensors metadata must map str to str, got {key!r}: {type(value).__name__}")
    cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, prefix=f".{path.name}.", suffix=".tmp") as tmp:
        save_file(cpu, str(tmp), metadata=dict(metadata) if metadata else None)
