"""Security policy as plain functions: safe file names and paths, safe content types, Host/Origin rules, tokens.

The aiohttp middlewares that apply these live in server/routes/middleware.py; everything here is testable without
a server. Paths are checked twice: the name itself (no NUL, not absolute, no ".." component), then the real path
(symlinks resolved) must stay inside the real path of its folder.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import mimetypes
import os
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

FOLDER_ANNOTATIONS = ("output", "input", "temp")
SESSION_COOKIE = "chisel_session"
MAX_NAME_LENGTH = 255


class PathRefused(ValueError):
    """A file name or path that is refused: `field` names the request field, `reason` says why."""

    def __init__(self, field: str, value: str, reason: str):
        shown = value if len(value) <= 120 else value[:117] + "..."
        super().__init__(f"{field} {shown!r} refused: {reason}")
        self.field, self.value, self.reason = field, value, reason


# ---- names and paths --------------------------------------------------------------------------------------------
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


def resolve_inside(root: Path, *parts: str, field: str, allow_root: bool = False) -> Path:
    """The real path of root/parts..., refusing anything that resolves outside root's real path.

    Each part is checked with clean_relative_name first; then symlinks are resolved on both sides, so a link inside
    the folder pointing elsewhere is refused too.
    """
    relative = [clean_relative_name(p, field=field, allow_empty=True) for p in parts]
    real_root = Path(os.path.realpath(root))
    target = Path(os.path.realpath(real_root.joinpath(*[p for p in relative if p])))
    if target == real_root:
        if allow_root:
            return target
        raise PathRefused(field, "/".join(relative), "names the folder itself, not a file")
    if not is_within(target, real_root):
        raise PathRefused(field, "/".join(p for p in relative if p), "resolves outside its folder")
    return target


def is_within(path: Path, root: Path) -> bool:
    try:
        return os.path.commonpath([str(path), str(root)]) == str(root)
    except ValueError:  # different drives on Windows
        return False


def split_annotation(name: str, *, default: str) -> tuple[str, str]:
    """ComfyUI's annotated names: 'x.png [output]' -> ('x.png', 'output'); unannotated -> (name, default)."""
    if isinstance(name, str):
        for kind in FOLDER_ANNOTATIONS:
            suffix = f" [{kind}]"
            if name.endswith(suffix):
                return name[: -len(suffix)], kind
    return name, default


# ---- served content ---------------------------------------------------------------------------------------------
_ACTIVE_TYPES = ("text/html", "application/xhtml+xml", "text/javascript", "application/javascript", "text/css",
                 "image/svg+xml", "text/xml", "application/xml")


def safe_content_type(file_name: str) -> str:
    """The content type /view may send: active content (html, js, css, svg, xml) is sent as a download."""
    guessed = mimetypes.guess_type(file_name)[0] or "application/octet-stream"
    if guessed in _ACTIVE_TYPES or guessed.endswith("+xml") or "script" in guessed:
        return "application/octet-stream"
    return guessed


# ---- hosts and origins ------------------------------------------------------------------------------------------
def split_host(host: str) -> tuple[str, int | None] | None:
    """'Example.com:8188' -> ('example.com', 8188); '[::1]:80' -> ('::1', 80); malformed -> None."""
    if not host or any(c in host for c in "/@?#\\ "):
        return None
    try:
        parsed = urlsplit("//" + host)
        port = parsed.port
    except ValueError:
        return None
    if not parsed.hostname:
        return None
    return parsed.hostname.lower().rstrip("."), port


def is_loopback_host(hostname: str) -> bool:
    """localhost, *.localhost, 127.0.0.0/8, ::1 (literal names only: no DNS lookup, which rebinding could fool)."""
    if hostname == "localhost" or hostname.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def host_allowed(host_header: str | None, *, loopback_only: bool, allowed_hosts: Iterable[str],
                 bound_addresses: Iterable[str] = ()) -> bool:
    """The Host rule against DNS rebinding: bound to loopback only, Host must name loopback (or an allowed host)."""
    if host_header is None:
        return not loopback_only  # HTTP/1.0 clients without Host: only when already exposed on purpose
    parsed = split_host(host_header)
    if parsed is None:
        return False
    hostname = parsed[0]
    allowed = {h.lower() for h in allowed_hosts}
    if is_loopback_host(hostname) or hostname in allowed:
        return True
    if loopback_only:
        return False
    if allowed:  # exposed, but the operator named the hosts to accept
        return hostname in {a.lower() for a in bound_addresses} or hostname in allowed
    return True


def origin_allowed(origin: str, host_header: str | None, allowed_origins: Iterable[str]) -> bool:
    """A browser Origin may change state only when it is this server (same host and port) or configured.

    `Origin: null` (sandboxed iframes, file: pages, some redirects) is always refused.
    """
    origin = origin.strip()
    if not origin or origin.lower() == "null":
        return False
    if origin.rstrip("/").lower() in set(allowed_origins):
        return True
    try:
        parts = urlsplit(origin)
        origin_port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname or host_header is None:
        return False
    host = split_host(host_header)
    if host is None:
        return False
    host_name, host_port = host
    origin_port = origin_port or (443 if parts.scheme == "https" else 80)
    if parts.hostname.lower().rstrip(".") != host_name:
        return False
    # Behind a TLS proxy Host often carries no port; then the names decide, as ComfyUI does.
    return host_port is None or host_port == origin_port


# ---- tokens -----------------------------------------------------------------------------------------------------
def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented token with the configured one."""
    if not given:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def session_value(token: str) -> str:
    """The login cookie's value: derived from the token (so the cookie never holds the token itself)."""
    return hmac.new(token.encode("utf-8"), b"chisel-session-v1", hashlib.sha256).hexdigest()


def session_matches(cookie: str | None, token: str) -> bool:
    return token_matches(cookie, session_value(token))
