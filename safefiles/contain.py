"""Path containment: a client-given relative name resolved inside a root folder, symlinks included.

Two checks, in order: the name itself (clean_relative_name: a string, no NUL or control characters, not absolute, no
'..' component, not over-long), then the real path (symlinks resolved on both sides) must stay inside the real path
of the root. Anything refused raises PathRefused, a ValueError that says which field and why.
"""

from __future__ import annotations

import os
from pathlib import Path

MAX_NAME_LENGTH = 255


class PathRefused(ValueError):
    """A file name or path that is refused: `field` names the request field, `reason` says why."""

    def __init__(self, field: str, value: str, reason: str):
        shown = value if len(value) <= 120 else value[:117] + "..."
        super().__init__(f"{field} {shown!r} refused: {reason}")
        self.field, self.value, self.reason = field, value, reason


def clean_relative_name(name: str, *, field: str, allow_empty: bool = False) -> str:
    """Check a client-given relative path ("sub/x.png") and return it normalised with '/' separators.

    Refused: non-strings, NUL and control characters, absolute paths (/x, C:\\x, \\\\host), '..' as a path
    component ('test..png' is fine), and over-long names.
    """
    if not isinstance(name, str):
        raise PathRefused(field, repr(name), "expected a string")
    if name == "":
        if allow_empty:
            return ""
        raise PathRefused(field, name, "is empty")
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        raise PathRefused(field, name, "contains a control character")
    if len(name) > 4 * MAX_NAME_LENGTH:
        raise PathRefused(field, name, "is too long")
    unified = name.replace("\\", "/")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        raise PathRefused(field, name, "is an absolute path")
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise PathRefused(field, name, "contains a '..' component")
    if any(len(p) > MAX_NAME_LENGTH for p in parts):
        raise PathRefused(field, name, "has a path component longer than 255 characters")
    if not parts and not allow_empty:
        raise PathRefused(field, name, "names no file")
    return "/".join(parts)


def clean_file_name(name: str, *, field: str) -> str:
    """A single file name (no folders): what an upload may be called."""
    cleaned = clean_relative_name(name, field=field)
    if "/" in cleaned:
        raise PathRefused(field, name, "must be a file name without folders")
    return cleaned


def resolve_inside(root: str | os.PathLike[str], *parts: str, field: str, allow_root: bool = False) -> Path:
    """The real path of root/parts..., refusing anything that resolves outside root's real path.

    Each part is checked with clean_relative_name first; then symlinks are resolved on both sides, so a link inside
    the folder pointing elsewhere is refused too. The root itself is refused unless allow_root.
    """
    relative = [clean_relative_name(p, field=field, allow_empty=True) for p in parts]
    shown = "/".join(p for p in relative if p)
    target = real_path_inside(root, *[p for p in relative if p], field=field, shown=shown)
    if target == Path(os.path.realpath(root)) and not allow_root:
        raise PathRefused(field, "/".join(relative), "names the folder itself, not a file")
    return target


def real_path_inside(root: str | os.PathLike[str], *parts: str, field: str, shown: str | None = None) -> Path:
    """The real path of root/parts... (the root itself allowed), refused when it resolves outside root's real path.

    The parts are not checked as names: use it for paths already normalised by the caller (resolve_inside checks
    client-given names first). PathRefused's value is `shown`, or the parts joined with '/'.
    """
    real_root = Path(os.path.realpath(root))
    target = Path(os.path.realpath(real_root.joinpath(*parts)))
    if target != real_root and not is_within(target, real_root):
        raise PathRefused(field, shown if shown is not None else "/".join(parts), "resolves outside its folder")
    return target


def is_within(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> bool:
    """Whether `path` is `root` or below it (plain string comparison of the paths given: resolve them first)."""
    try:
        return os.path.commonpath([str(path), str(root)]) == str(root)
    except ValueError:  # different drives on Windows, or one relative and one absolute
        return False
