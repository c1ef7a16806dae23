"""The editor's user routes: /users, /settings, /settings/{id}, /userdata, /userdata/{file} (GET/POST/DELETE),
/userdata/{file}/move/{dest}. Single-user, as ComfyUI without --multi-user; shapes as app/user_manager.py."""

from __future__ import annotations

import asyncio
from urllib.parse import unquote

from aiohttp import web

from safefiles import PathRefused
from server.routes.errors import ApiError, bad_request, bool_param, not_found, read_json
from server.routes.state import STATE
from server.userdata import UserFileExists, UserFileMissing

routes = web.RouteTableDef()


@routes.get("/users")
async def users(request: web.Request) -> web.Response:
    return web.json_response({"storage": "server", "migrated": True})


@routes.post("/users")
async def create_user(request: web.Request) -> web.Response:
    raise bad_request("multi_user_disabled", "This server has a single user",
                      "user accounts are not supported; settings and workflows belong to the local user")


@routes.get("/settings")
async def get_settings(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].users.settings())


@routes.post("/settings")
async def post_settings(request: web.Request) -> web.Response:
    body = await read_json(request)
    request.app[STATE].users.update_settings(body)
    return web.Response(status=200)


@routes.get("/settings/{id}")
async def get_setting(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].users.setting(request.match_info["id"]))


@routes.post("/settings/{id}")
async def post_setting(request: web.Request) -> web.Response:
    value = await read_json(request, expect=object)
    request.app[STATE].users.update_settings({request.match_info["id"]: value})
    return web.Response(status=200)


@routes.get("/userdata")
async def list_userdata(request: web.Request) -> web.Response:
    directory = request.query.get("dir")
    if not directory:
        raise bad_request("missing_field", "Query parameter dir is required", "the folder to list",
                          parameter="dir")
    recurse = bool_param(request, "recurse", False)
    full_info = bool_param(request, "full_info", False)
    split = bool_param(request, "split", False)
    store = request.app[STATE].users
    try:
        files = await asyncio.get_running_loop().run_in_executor(
            None, lambda: store.list(directory, recurse=recurse))
    except PathRefused as exc:
        raise ApiError(403, "invalid_path", "The folder is not allowed", str(exc), {"field": "dir"}) from None
    except UserFileMissing:
        raise not_found("folder_not_found", "No such user folder", directory[:120]) from None
    if full_info:
        return web.json_response([f.as_json() for f in files])
    if split:
        return web.json_response([[f.path, *f.path.split("/")] for f in files])
    return web.json_response([f.path for f in files])


@routes.get("/userdata/{file}")
async def get_userdata(request: web.Request) -> web.StreamResponse:
    name = _file_param(request, "file")
    try:
        path = request.app[STATE].users.read_path(name)
    except PathRefused as exc:
        raise _refused(exc) from None
    except UserFileMissing as exc:
        raise not_found("file_not_found", "No such user file", str(exc)) from None
    headers = {"Content-Type": "application/json" if path.suffix == ".json" else "application/octet-stream"}
    if path.name != "user.css":
        headers["Content-Disposition"] = "attachment"
    else:
        headers["Content-Type"] = "text/css"
    return web.FileResponse(path, headers=headers)


@routes.post("/userdata/{file}")
async def post_userdata(request: web.Request) -> web.Response:
    name = _file_param(request, "file")
    overwrite = bool_param(request, "overwrite", True)
    full_info = bool_param(request, "full_info", False)
    data = await request.read()
    store = request.app[STATE].users
    try:
        info = await asyncio.get_running_loop().run_in_executor(
            None, lambda: store.write(name, data, overwrite=overwrite))
    except PathRefused as exc:
        raise _refused(exc) from None
    except UserFileExists as exc:
        raise ApiError(409, "file_exists", "The user file already exists", str(exc)) from None
    return web.json_response(info.as_json() if full_info else info.path)


@routes.delete("/userdata/{file}")
async def delete_userdata(request: web.Request) -> web.Response:
    name = _file_param(request, "file")
    try:
        request.app[STATE].users.delete(name)
    except PathRefused as exc:
        raise _refused(exc) from None
    except UserFileMissing as exc:
        raise not_found("file_not_found", "No such user file", str(exc)) from None
    return web.Response(status=204)


@routes.post("/userdata/{file}/move/{dest}")
async def move_userdata(request: web.Request) -> web.Response:
    source = _file_param(request, "file")
    dest = _file_param(request, "dest")
    overwrite = bool_param(request, "overwrite", True)
    full_info = bool_param(request, "full_info", False)
    try:
        info = request.app[STATE].users.move(source, dest, overwrite=overwrite)
    except PathRefused as exc:
        raise _refused(exc) from None
    except UserFileMissing as exc:
        raise not_found("file_not_found", "No such user file", str(exc)) from None
    except UserFileExists as exc:
        raise ApiError(409, "file_exists", "The destination already exists", str(exc)) from None
    return web.json_response(info.as_json() if full_info else info.path)


def _file_param(request: web.Request, key: str) -> str:
    # The editor sends "workflows%2Fname.json": the encoded slash may survive routing, so decode once more.
    value = unquote(request.match_info[key])
    if not value:
        raise bad_request("missing_field", f"The {key} name is empty", "", field=key)
    return value


def _refused(exc: PathRefused) -> ApiError:
    return ApiError(400, "invalid_path", "The user file path is not allowed", str(exc), {"field": exc.field})
