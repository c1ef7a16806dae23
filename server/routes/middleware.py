"""aiohttp middlewares: structured errors, Host/Origin/auth checks, cache headers.

Order (outermost first): errors -> guard -> cache_headers. The guard applies server/security.py's rules:
  1. Host must be loopback (or a configured host) while the server is bound to loopback: DNS rebinding cannot reach it.
  2. A state-changing request (POST/PUT/PATCH/DELETE) or a websocket upgrade carrying an Origin must come from this
     server's own origin or a configured one; `Origin: null` is refused. Requests without Origin (scripts, curl) pass.
  3. With an auth token configured, every route except the login page needs it: `Authorization: Bearer T`,
     `?token=T` on GET requests (websocket, <img src>), or the session cookie set by /login.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from server.routes.errors import ApiError
from server.routes.state import STATE
from server.security import SESSION_COOKIE, PathRefused, host_allowed, origin_allowed, session_matches, token_matches

log = logging.getLogger("chisel.server")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PUBLIC_PATHS = frozenset({"/login"})


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """ApiError -> its JSON; an oversized body -> 413 JSON; anything unexpected -> 500 JSON with a short id, logged."""
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except RecursionError:  # a document nested deeper than the code that walks it (JSON limits it to ~1,000)
        return ApiError(400, "input_too_deep", "The request nests too deeply", "").response()
    except PathRefused as exc:  # a path rule hit deep inside a handler: still the caller's input
        return ApiError(400, "invalid_path", "The path is not allowed", str(exc), {"field": exc.field}).response()
    except web.HTTPRequestEntityTooLarge as exc:
        limit = request.app[STATE].config.max_upload_size
        return ApiError(413, "request_too_large", "The request body is too large",
                        f"the limit is {limit} bytes ({limit // (1024 * 1024)} MB)",
                        {"max_upload_size": limit}).response()
    except web.HTTPException:
        raise
    except (ConnectionResetError, ConnectionError):
        raise
    except Exception:
        error_id = uuid.uuid4().hex[:8]
        log.exception("unexpected error %s while handling %s %s", error_id, request.method, request.path)
        return web.json_response({"error": {"type": "internal_error", "message": "Internal server error",
                                            "details": f"error id {error_id}; the server log has the traceback",
                                            "extra_info": {"error_id": error_id}}}, status=500)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    config = request.app[STATE].config
    host = request.headers.get("Host")
    if not host_allowed(host, loopback_only=config.loopback_only, allowed_hosts=config.allowed_hosts,
                        bound_addresses=config.listen):
        raise ApiError(403, "host_not_allowed", "Requests must address this server by a loopback name",
                       f"Host {host!r} is not allowed; start with --allow-host NAME to accept it",
                       {"host": host})
    origin = request.headers.get("Origin")
    upgrading = request.headers.get("Upgrade", "").lower() == "websocket"
    if origin is not None and (request.method in STATE_CHANGING or upgrading):
        if not origin_allowed(origin, host, config.allowed_origins):
            log.warning("refused %s %s from origin %r (host %r)", request.method, request.path, origin, host)
            raise ApiError(403, "origin_not_allowed", "Cross-origin request refused",
                           f"Origin {origin!r} does not match this server; start with --allow-origin to accept it",
                           {"origin": origin})
    if request.method == "OPTIONS":
        return web.Response(status=204)
    token = config.auth_token
    if token and _path_of(request) not in PUBLIC_PATHS and not _authorized(request, token):
        if request.method == "GET" and "text/html" in request.headers.get("Accept", "") and not upgrading:
            raise web.HTTPFound("/login")
        raise ApiError(401, "unauthorized", "An auth token is required",
                       "send 'Authorization: Bearer <token>', ?token=<token>, or log in at /login")
    return await handler(request)


@web.middleware
async def cache_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if request.path.endswith((".js", ".css", ".html")) or request.path == "/":
        response.headers.setdefault("Cache-Control", "no-cache")
    return response


def _authorized(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer " and token_matches(header[7:].strip(), token):
        return True
    if request.method == "GET" and token_matches(request.query.get("token"), token):
        return True
    return session_matches(request.cookies.get(SESSION_COOKIE), token)


def _path_of(request: web.Request) -> str:
    path = request.path
    return path[4:] if path.startswith("/api/") else path
