"""Structured HTTP errors and request parsing helpers shared by the route modules.

Every refusal is `{"error": {"type", "message", "details", "extra_info"}}` with a 4xx status: the same shape as
ComfyUI's /prompt errors, so one client-side reader handles all of them. Handlers raise ApiError; the error
middleware (server/routes/middleware.py) turns it into the response.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web



class ApiError(Exception):
    """A refusal with an HTTP status, an error type (snake_case), a short message and the specific details."""

    def __init__(self, status: int, kind: str, message: str, details: str = "",
                 extra: Mapping[str, Any] | None = None, *, body_extra: Mapping[str, Any] | None = None):
        super().__init__(f"{kind}: {message} {details}".strip())
        self.status, self.kind, self.message, self.details = status, kind, message, details
        self.extra = dict(extra or {})
        self.body_extra = dict(body_extra or {})  # more top-level keys (e.g. /prompt's node_errors)

    def body(self) -> dict[str, Any]:
        return {"error": {"type": self.kind, "message": self.message, "details": self.details,
                          "extra_info": self.extra}, **self.body_extra}

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status)


def bad_request(kind: str, message: str, details: str = "", **extra: Any) -> ApiError:
    return ApiError(400, kind, message, details, extra)


def not_found(kind: str, message: str, details: str = "", **extra: Any) -> ApiError:
    return ApiError(404, kind, message, details, extra)


async def read_json(request: web.Request, *, empty: Any = ..., expect: type = dict) -> Any:
    """The request body parsed as JSON. Invalid JSON, or a body of the wrong kind, is a 400 naming the problem.

    `empty`: the value an empty body stands for (ComfyUI treats an empty /interrupt body as {}); by default an empty
    body is an error.
    """
    raw = await request.read()
    if not raw.strip():
        if empty is not ...:
            return empty
        raise bad_request("invalid_json", "The request body is empty", "expected a JSON object")
    try:
        text = raw.decode("utf-8")
        value = json.loads(text)
    except UnicodeDecodeError as exc:
        raise bad_request("invalid_json", "The request body is not UTF-8 text", str(exc)) from None
    except RecursionError:  # the JSON decoder's own nesting limit (about 1,000 levels)
        raise bad_request("invalid_json", "The request body nests too deeply", "") from None
    except ValueError as exc:
        raise bad_request("invalid_json", "The request body is not valid JSON", str(exc)) from None
    if expect is not object and not isinstance(value, expect):
        raise bad_request("invalid_body", "Unexpected JSON body",
                          f"expected a JSON {_json_kind(expect)}, got {_json_kind(type(value))}")
    return value


def int_param(request: web.Request, name: str, default: int | None = None, *, minimum: int | None = None,
              maximum: int | None = None) -> int | None:
    """An integer query parameter; a non-integer or out-of-range value is a 400 naming the parameter."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise bad_request("invalid_query_parameter", f"Query parameter {name} must be an integer",
                          f"{name}={raw[:60]!r}", parameter=name) from None
    if minimum is not None and value < minimum:
        raise bad_request("invalid_query_parameter", f"Query parameter {name} must be at least {minimum}",
                          f"{name}={value}", parameter=name)
    if maximum is not None and value > maximum:
        raise bad_request("invalid_query_parameter", f"Query parameter {name} must be at most {maximum}",
                          f"{name}={value}", parameter=name)
    return value


def bool_param(request: web.Request, name: str, default: bool) -> bool:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise bad_request("invalid_query_parameter", f"Query parameter {name} must be true or false",
                      f"{name}={raw[:60]!r}", parameter=name)


def choice_param(request: web.Request, name: str, choices: tuple[str, ...], default: str) -> str:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if raw not in choices:
        raise bad_request("invalid_query_parameter", f"Query parameter {name} must be one of {', '.join(choices)}",
                          f"{name}={raw[:60]!r}", parameter=name)
    return raw


def _json_kind(kind: type) -> str:
    return {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean",
            type(None): "null"}.get(kind, kind.__name__)
