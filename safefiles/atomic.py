"""Atomic file writes: a file appears complete under its name, or not at all.

Every write goes to a temporary file in the destination's own folder (so the final step is a rename or link on one
file system), is flushed and fsynced, and only then gets its final name:

  write_atomic / atomic_path   overwrite: os.replace onto the name (readers see the old file or the new one)
  write_new / write_unique     never overwrite: os.link of the finished temp file onto the name, which fails if the
                               name exists; on file systems without hard links, an O_EXCL create reserves the name
                               and os.replace moves the content onto the reservation. Both are race-free: two
                               writers can never get the same name, and there is no check-then-rename anywhere.
  stage                        the temp file as an object, for callers that pick names themselves (uploads: skip
                               links, keep an identical file's name, or replace when asked)

Temporary files are created like open() would create the final file (mode 0o666 less the umask), named
`<prefix><random><suffix>` (dot-prefixed by default so listings skip them), and removed on any failure.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Union

Data = Union[bytes, bytearray, memoryview, BinaryIO, Iterable[bytes]]
"""What may be written: bytes-like, a binary stream (anything with .read), or an iterable of byte chunks."""

_COPY_CHUNK = 1024 * 1024
_MAX_PREFIX = 100  # keeps '<prefix><random><suffix>' well under the usual 255-byte name limit


# ---- overwrite: temp file + os.replace ----------------------------------------------------------------------------
def write_atomic(path: str | os.PathLike[str], data: Data, *, durable: bool = True, prefix: str | None = None,
                 suffix: str = ".tmp") -> Path:
    """Write `data` to `path`, replacing any file there atomically; returns `path`.

    Readers see the old content or the new, never a mix or a truncated file. A symlink at `path` is replaced by the
    file (not written through). The folder must exist. durable=False skips the fsyncs (tests, scratch files).
    """
    path = Path(path)
    fd, temp = _create_temp(path.parent, _default_prefix(path, prefix), suffix)
    try:
        _write_fd(fd, data, durable=durable)
        os.replace(temp, path)
    except BaseException:
        _remove(temp)
        raise
    if durable:
        _sync_folder(path.parent)
    return path


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, durable: bool = True, prefix: str | None = None,
                suffix: str = ".tmp") -> Iterator[Path]:
    """For writers that need a file name (safetensors' save_file): yields an empty temp file's path beside `path`.

    When the block ends without an exception the temp file is fsynced and renamed over `path`; otherwise it is
    removed and `path` is left as it was.
    """
    path = Path(path)
    fd, temp = _create_temp(path.parent, _default_prefix(path, prefix), suffix)
    os.close(fd)
    try:
        yield temp
        if durable:
            _sync_file(temp)
        os.replace(temp, path)
    except BaseException:
        _remove(temp)
        raise
    if durable:
        _sync_folder(path.parent)


# ---- never overwrite: temp file + os.link (or O_EXCL) -------------------------------------------------------------
class Staged:
    """A complete, flushed temp file in `folder`, waiting for a name: publish it once with link_as or replace."""

    def __init__(self, folder: Path, temp: Path, *, durable: bool):
        self.folder, self.temp, self.durable = folder, temp, durable
        self.name: str | None = None  # the name it was published under

    def link_as(self, name: str) -> bool:
        """Give the content the name `name` (in the folder) unless that name exists: True when created.

        Never replaces anything, a file, folder or symlink (even a dangling one); two writers racing for one name
        cannot both win. The name is taken as given: check client-given names with safefiles.contain first.
        """
        self._unpublished()
        target = self.folder / name
        try:
            os.link(self.temp, target)
        except FileExistsError:
            return False
        except OSError:
            # File systems without hard links: reserve the name exclusively, then move the content over it. The
            # reservation is empty for a moment, never partial: the content arrives in one rename.
            try:
                os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0), 0o666))
            except FileExistsError:
                return False
            try:
                os.replace(self.temp, target)
            except BaseException:
                _remove(target)
                raise
        self._published(name)
        return True

    def replace(self, name: str) -> None:
        """Give the content the name `name`, replacing a file (or symlink) there atomically."""
        self._unpublished()
        os.replace(self.temp, self.folder / name)
        self._published(name)

    def _unpublished(self) -> None:
        if self.name is not None:
            raise RuntimeError(f"already published as {self.name!r}")

    def _published(self, name: str) -> None:
        self.name = name
        if self.durable:
            _sync_folder(self.folder)


@contextmanager
def stage(folder: str | os.PathLike[str], data: Data, *, durable: bool = True, prefix: str = ".tmp-",
          suffix: str = ".part") -> Iterator[Staged]:
    """Write `data` to a temp file in `folder` (fsynced unless durable=False) and yield it as a Staged file; the
    temp file is removed when the block ends (a published name stays)."""
    folder = Path(folder)
    fd, temp = _create_temp(folder, prefix, suffix)
    try:
        _write_fd(fd, data, durable=durable)
        yield Staged(folder, temp, durable=durable)
    finally:
        _remove(temp)


def write_new(path: str | os.PathLike[str], data: Data, *, durable: bool = True, prefix: str | None = None,
              suffix: str = ".part") -> bool:
    """Create `path` with `data`, complete, unless something already has that name: True when written."""
    path = Path(path)
    with stage(path.parent, data, durable=durable, prefix=_default_prefix(path, prefix), suffix=suffix) as staged:
        return staged.link_as(path.name)


def write_unique(folder: str | os.PathLike[str], data: Data, names: Iterable[str], *, durable: bool = True,
                 prefix: str = ".tmp-", suffix: str = ".part") -> str:
    """Write `data` under the first of `names` that is free (e.g. safefiles.numbered_names("x.png")); its name.

    Each name is tried with an exclusive link, so concurrent writers with the same names all end up with distinct,
    complete files. FileExistsError when every name is taken.
    """
    with stage(folder, data, durable=durable, prefix=prefix, suffix=suffix) as staged:
        for name in names:
            if staged.link_as(name):
                return name
    raise FileExistsError(f"every name offered is taken in {folder}")


# ---- helpers ------------------------------------------------------------------------------------------------------
def _default_prefix(path: Path, prefix: str | None) -> str:
    return prefix if prefix is not None else f".{path.name}."


def _create_temp(folder: Path, prefix: str, suffix: str) -> tuple[int, Path]:
    """A new, empty file `<prefix><random><suffix>` in folder, opened for writing (mode 0o666 less the umask)."""
    flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOINHERIT", 0)
             | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0))
    prefix = prefix[:_MAX_PREFIX]
    for _ in range(100):
        temp = Path(folder) / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            return os.open(temp, flags, 0o666), temp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {folder}")  # pragma: no cover - 100 collisions of 48 bits


def _write_fd(fd: int, data: Data, *, durable: bool) -> None:
    with os.fdopen(fd, "wb") as out:
        if isinstance(data, (bytes, bytearray, memoryview)):
            out.write(data)
        elif hasattr(data, "read"):
            shutil.copyfileobj(data, out, _COPY_CHUNK)  # type: ignore[arg-type]
        elif isinstance(data, str):
            raise TypeError("safefiles writes bytes: encode the text first")
        else:
            for chunk in data:
                out.write(chunk)
        out.flush()
        if durable:
            os.fsync(out.fileno())


def _sync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_folder(folder: Path) -> None:
    """Make a rename or link in `folder` durable (POSIX; best effort: some file systems refuse)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:  # already published by rename, or gone: nothing to clean up
        pass


__all__ = ["Data", "Staged", "atomic_path", "stage", "write_atomic", "write_new", "write_unique"]
