"""Security policy as plain functions: safe file names and paths, safe content types, Host/Origin rules, tokens.

The aiohttp middlewares that apply these live in server/routes/middleware.py; everything here is testable without
a server. Paths are checked twice: the name itself (no NUL, not absolute, no ".." component), then the real path
(symlinks resolved) must stay inside the real path of its folder; both checks live in safefiles/contain.py and are
re-exported here (PathRefused, clean_relative_name, clean_file_name, resolve_inside, is_within).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import mimetypes
from collections.abc import Iterable
from urllib.parse import urlsplit

from safefiles.contain import (MAX_NAME_LENGTH, PathRefused, clean_file_name, clean_relative_name, is_within,
                               resolve_inside)

FOLDER_ANNOTATIONS = ("output", "input", "temp")
SESSION_COOKIE = "chisel_session"

__all__ = ["FOLDER_ANNOTATIONS", "MAX_NAME_LENGTH", "SESSION_COOKIE", "PathRefused", "clean_file_name",
           "clean_relative_name", "host_allowed", "is_loopback_host", "is_within", "origin_allowed", "resolve_inside",
           "safe_content_type", "session_matches", "session_value", "split_annotation", "split_host", "token_matches"]


# ---- names and paths --------------------------------------------------------------------------------------------
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
