"""The editor's per-user storage: settings (comfy.settings.json) and user files (saved workflows, templates...).

One user, "default", under user/default/ as ComfyUI lays it out in single-user mode. Every path is resolved with
safefiles.resolve_inside, so a name can never leave the user's folder; writes are atomic (safefiles: temp file, then
a rename to replace, or an exclusive link when the file must not exist yet, so a concurrent writer is never
overwritten).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safefiles import PathRefused, resolve_inside, write_atomic, write_new

DEFAULT_USER = "default"
SETTINGS_FILE = "comfy.settings.json"
MAX_LISTED = 10_000


class UserFileExists(FileExistsError):
    def __init__(self, name: str):
        super().__init__(f"user file {name!r} already exists (pass overwrite=true to replace it)")
        self.name = name


class UserFileMissing(FileNotFoundError):
    def __init__(self, name: str):
        super().__init__(f"user file {name!r} does not exist")
        self.name = name


@dataclass(frozen=True)
class FileInfo:
    path: str  # relative to the listed folder (listing) or to the user folder (writes), '/'-separated
    size: int
    modified: float  # seconds since the epoch, as ComfyUI sends it

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "modified": self.modified}


class UserStore:
    """Settings and files of the single local user."""

    def __init__(self, user_dir: Path, user: str = DEFAULT_USER):
        self.root = Path(user_dir) / user
        self._lock = threading.Lock()

    def create(self) -> None:
        (self.root / "workflows").mkdir(parents=True, exist_ok=True)  # the editor lists it at boot

    # ---- settings -----------------------------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        path = self.root / SETTINGS_FILE
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            # A damaged settings file must not stop the editor from booting; it is kept aside for the user.
            broken = path.with_name(SETTINGS_FILE + ".broken")
            try:
                os.replace(path, broken)
            except OSError:
                pass
            return {}
        return value if isinstance(value, dict) else {}

    def setting(self, key: str) -> Any:
        return self.settings().get(key)

    def update_settings(self, changes: dict[str, Any]) -> None:
        with self._lock:
            merged = {**self.settings(), **changes}
            self._write_atomic(self.root / SETTINGS_FILE, json.dumps(merged, indent=4).encode("utf-8"))

    # ---- files --------------------------------------------------------------------------------------------------
    def path(self, name: str, *, field: str = "file") -> Path:
        return resolve_inside(self.root, name, field=field)

    def list(self, directory: str, *, recurse: bool) -> list[FileInfo]:
        """Files under a folder of the user's storage, relative to it (sorted). Missing folder: UserFileMissing."""
        folder = resolve_inside(self.root, directory, field="dir", allow_root=True)
        if not folder.is_dir():
            raise UserFileMissing(directory)
        found: list[FileInfo] = []
        walker = os.walk(folder) if recurse else [(str(folder), [], os.listdir(folder))]
        for current, _dirs, files in walker:
            for file in sorted(files):
                full = Path(current) / file
                if not full.is_file():
                    continue
                stat = full.stat()
                found.append(FileInfo(Path(os.path.relpath(full, folder)).as_posix(), stat.st_size, stat.st_mtime))
                if len(found) >= MAX_LISTED:
                    return sorted(found, key=lambda f: f.path)
        return sorted(found, key=lambda f: f.path)

    def info(self, name: str) -> FileInfo:
        path = self.path(name)
        stat = path.stat()
        return FileInfo(Path(os.path.relpath(path, os.path.realpath(self.root))).as_posix(), stat.st_size,
                        stat.st_mtime)

    def read_path(self, name: str) -> Path:
        path = self.path(name)
        if not path.is_file():
            raise UserFileMissing(name)
        return path

    def write(self, name: str, data: bytes, *, overwrite: bool) -> FileInfo:
        path = self.path(name)
        with self._lock:
            if path.exists() and not overwrite:
                raise UserFileExists(name)
            if path.is_dir():
                raise PathRefused("file", name, "is a folder")
            if overwrite:
                self._write_atomic(path, data)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                if not write_new(path, data, prefix=".tmp-", suffix=path.suffix):
                    raise UserFileExists(name)  # created meanwhile (another process): never overwritten
        return self.info(name)

    def delete(self, name: str) -> None:
        path = self.path(name)
        with self._lock:
            if not path.is_file():
                raise UserFileMissing(name)
            path.unlink()

    def move(self, source: str, dest: str, *, overwrite: bool) -> FileInfo:
        src = self.path(source)
        dst = self.path(dest, field="dest")
        with self._lock:
            if not src.is_file():
                raise UserFileMissing(source)
            if dst.exists() and not overwrite:
                raise UserFileExists(dest)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src), str(dst))
        return self.info(dest)

    # ---- helpers ------------------------------------------------------------------------------------------------
    def _write_atomic(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data, prefix=".tmp-", suffix=path.suffix)
