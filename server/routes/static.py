"""The editor's files (GET / and the web root), custom node web folders (/extensions/{name}/...), and the login page.

index.html is sent with no-cache headers (ComfyUI does the same) so an upgraded editor is picked up at once.
Static files are served without following symlinks out of the web root.
"""

from __future__ import annotations

import html

from aiohttp import web

from safefiles import PathRefused, resolve_inside
from server.routes.errors import not_found
from server.routes.state import STATE
from server.security import SESSION_COOKIE, session_value, token_matches

NO_CACHE = {"Cache-Control": "no-cache", "Pragma": "no-cache", "Expires": "0"}
PLACEHOLDER = """<!doctype html><meta charset="utf-8"><title>Chisel</title>
<p>Chisel is running. The editor's files were not found at <code>{root}</code>; the API is available.</p>"""

LOGIN_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Chisel: sign in</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<style>body{{font:15px system-ui,sans-serif;background:#1e1e22;color:#ddd;display:grid;place-items:center;
height:100vh;margin:0}}form{{background:#2a2a30;padding:24px 28px;border-radius:8px;min-width:280px}}
input{{width:100%;box-sizing:border-box;padding:8px;margin:10px 0;background:#15151a;color:#eee;border:1px solid #444;
border-radius:4px}}button{{padding:8px 14px}}.err{{color:#f77}}</style></head>
<body><form method="post" action="/login"><h2>Chisel</h2>
<label>Access token<input type="password" name="token" autofocus autocomplete="current-password"></label>
{error}<button type="submit">Sign in</button></form></body></html>"""


async def index(request: web.Request) -> web.StreamResponse:
    root = request.app[STATE].config.web_root
    page = root / "index.html"
    if page.is_file():
        return web.FileResponse(page, headers=NO_CACHE)
    return web.Response(text=PLACEHOLDER.format(root=html.escape(str(root))), content_type="text/html",
                        headers=NO_CACHE)


async def extension_file(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    directory = state.extension_dirs.get(request.match_info["name"])
    if directory is None:
        raise not_found("extension_not_found", "No such extension", request.match_info["name"][:120])
    try:
        path = resolve_inside(directory, request.match_info["path"], field="path")
    except PathRefused as exc:
        raise not_found("file_not_found", "No such extension file", str(exc)) from None
    if not path.is_file():
        raise not_found("file_not_found", "No such extension file", request.match_info["path"][:120])
    return web.FileResponse(path, headers=NO_CACHE if path.suffix == ".js" else None)


COMFY_SCRIPTS = frozenset({"app.js", "api.js"})  # ComfyUI's /scripts/ modules frontend extensions import


async def comfy_script(request: web.Request) -> web.StreamResponse:
    """/scripts/app.js and /scripts/api.js: the editor's shims of ComfyUI's modules (web/extensions/scripts/)."""
    name = request.match_info["name"]
    path = request.app[STATE].config.web_root / "extensions" / "scripts" / name
    if name not in COMFY_SCRIPTS or not path.is_file():
        raise not_found("file_not_found", "No such script", name[:120])
    return web.FileResponse(path, headers=NO_CACHE)


async def login_page(request: web.Request) -> web.Response:
    return web.Response(text=LOGIN_PAGE.format(error=""), content_type="text/html", headers=NO_CACHE)


async def login(request: web.Request) -> web.StreamResponse:
    config = request.app[STATE].config
    form = await request.post()
    given = form.get("token")
    if not config.auth_token:
        raise web.HTTPFound("/")
    if not isinstance(given, str) or not token_matches(given, config.auth_token):
        return web.Response(text=LOGIN_PAGE.format(error='<p class="err">That token is not right.</p>'),
                            content_type="text/html", status=401, headers=NO_CACHE)
    response = web.HTTPFound("/")
    response.set_cookie(SESSION_COOKIE, session_value(config.auth_token), httponly=True, samesite="Strict",
                        path="/", max_age=30 * 24 * 3600, secure=request.secure)
    raise response


def add_static_routes(app: web.Application, web_root_exists: bool) -> None:
    """Register after the API routes: '/', '/login', '/extensions/{name}/{path}', then the web root's files."""
    app.router.add_get("/", index)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_get("/extensions/{name}/{path:.+}", extension_file)
    app.router.add_get("/scripts/{name}", comfy_script)
    if web_root_exists:
        app.router.add_static("/", request_root(app), follow_symlinks=False, show_index=False)


def request_root(app: web.Application):  # noqa: ANN201  (a Path)
    return app[STATE].config.web_root
