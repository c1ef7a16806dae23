"""Read-only information routes: /object_info, /system_stats, /features, /embeddings, /models, /extensions, /i18n,
workflow templates, and the model browser's /experiment/models. Shapes as ComfyUI serves them.

`internal_routes` is ComfyUI's /internal sub-app (frontend-only routes): served under /internal, with no /api twin."""

from __future__ import annotations

import asyncio
import os
import platform
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from safefiles import PathRefused, clean_file_name, resolve_inside
from server.paths import UnknownFolder
from server.routes.errors import bad_request, not_found
from server.routes.state import STATE, AppState

routes = web.RouteTableDef()
internal_routes = web.RouteTableDef()
COMFYUI_API_VERSION = "0.8.0"  # the ComfyUI release whose API this server implements (clients gate features on it)
TEMPLATE_MODULE = "chisel"


@routes.get("/object_info")
async def object_info(request: web.Request) -> web.Response:
    registry = request.app[STATE].registry
    # Listing model and input folders touches the disk: keep it off the event loop.
    info = await asyncio.get_running_loop().run_in_executor(None, registry.object_info)
    return web.json_response(info)


@routes.get("/object_info/{node_class}")
async def object_info_one(request: web.Request) -> web.Response:
    registry = request.app[STATE].registry
    name = request.match_info["node_class"]
    info = await asyncio.get_running_loop().run_in_executor(None, registry.object_info, name)
    return web.json_response(info)  # {} with 200 for an unknown class, as ComfyUI


@routes.get("/system_stats")
async def system_stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    ram_total, ram_free = _ram()
    stats = {
        "system": {
            "os": sys.platform,
            "ram_total": ram_total,
            "ram_free": ram_free,
            "comfyui_version": COMFYUI_API_VERSION,
            "chisel_version": _version(),
            "required_frontend_version": "1.0.0",
            "installed_templates_version": "",
            "required_templates_version": "",
            "python_version": sys.version,
            "pytorch_version": _torch_version(),
            "embedded_python": False,
            "argv": list(sys.argv),
        },
        "devices": _devices(state, ram_total, ram_free),
    }
    return web.json_response(stats)


@routes.get("/features")
async def features(request: web.Request) -> web.Response:
    return web.json_response(feature_flags(request.app[STATE]))


def feature_flags(state: AppState) -> dict[str, Any]:
    return {"supports_preview_metadata": True, "max_upload_size": state.config.max_upload_size}


@routes.get("/embeddings")
async def embeddings(request: web.Request) -> web.Response:
    folders = request.app[STATE].folders
    files = await asyncio.get_running_loop().run_in_executor(None, folders.model_files, "embeddings")
    return web.json_response([os.path.splitext(f)[0] for f in files])


@routes.get("/models")
async def model_kinds(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].folders.folder_kinds())


@routes.get("/models/{folder}")
async def model_files(request: web.Request) -> web.Response:
    folders = request.app[STATE].folders
    try:
        files = await asyncio.get_running_loop().run_in_executor(None, folders.model_files,
                                                                 request.match_info["folder"])
    except UnknownFolder as exc:
        raise not_found("unknown_folder", "Unknown model folder", exc.message) from None
    return web.json_response(files)


@routes.get("/chisel/model_card/{folder}")
async def model_card(request: web.Request) -> web.Response:
    """{"card": the model's card (the Markdown file beside it, NAME.md) or null}: the editor reads a model's
    recommended size and sampler settings from it to suggest new nodes' defaults."""
    from server.paths import ModelNotFound

    filename = request.query.get("filename")
    if not filename:
        raise bad_request("missing_field", "Query parameter filename is required", "", parameter="filename")
    try:
        path = request.app[STATE].folders.model_path(request.match_info["folder"], filename)
    except UnknownFolder as exc:
        raise not_found("unknown_folder", "Unknown model folder", exc.message) from None
    except ModelNotFound as exc:
        raise not_found("model_not_found", "No such model file", str(exc)) from None
    card = path.with_suffix(".md")

    def read() -> str | None:
        return card.read_text(encoding="utf-8", errors="replace")[:200_000] if card.is_file() else None

    return web.json_response({"card": await asyncio.get_running_loop().run_in_executor(None, read)})


@routes.get("/experiment/models")
async def experiment_models(request: web.Request) -> web.Response:
    folders = request.app[STATE].folders
    return web.json_response([{"name": kind, "folders": [str(d) for d in folders.search_dirs(kind)]}
                              for kind in folders.folder_kinds()])


@routes.get("/experiment/models/{folder}")
async def experiment_model_files(request: web.Request) -> web.Response:
    folders = request.app[STATE].folders
    kind = request.match_info["folder"]
    try:
        dirs = folders.search_dirs(kind)
        files = await asyncio.get_running_loop().run_in_executor(None, folders.model_files, kind)
    except UnknownFolder as exc:
        raise not_found("unknown_folder", "Unknown model folder", exc.message) from None
    index = {}
    for name in files:
        index[name] = next((i for i, d in enumerate(dirs) if (d / name).exists()), 0)
    return web.json_response([{"name": name, "pathIndex": index[name]} for name in files])


@internal_routes.get("/folder_paths")
async def folder_paths(request: web.Request) -> web.Response:
    """{kind: [directories searched]}, ComfyUI's folder_names_and_paths; the frontend's missing-model dialog asks for
    it to say where a model file belongs."""
    folders = request.app[STATE].folders
    return web.json_response({kind: [str(d) for d in folders.search_dirs(kind)] for kind in folders.folder_kinds()})


@routes.get("/extensions")
async def extensions(request: web.Request) -> web.Response:
    state = request.app[STATE]
    urls: list[str] = []
    for name, directory in sorted(state.extension_dirs.items()):
        for path in sorted(Path(directory).rglob("*.js")):
            rel = path.relative_to(directory).as_posix()
            urls.append(f"/extensions/{quote(name)}/{quote(rel)}")
    return web.json_response(urls)


@routes.get("/i18n")
async def i18n(request: web.Request) -> web.Response:
    return web.json_response({})


@routes.get("/global_subgraphs")
async def global_subgraphs(request: web.Request) -> web.Response:
    return web.json_response({})


@routes.get("/workflow_templates")
async def workflow_templates(request: web.Request) -> web.Response:
    directory = request.app[STATE].config.workflows_dir
    names = sorted(p.stem for p in directory.glob("*.json")) if directory.is_dir() else []
    return web.json_response({TEMPLATE_MODULE: names} if names else {})


@routes.get("/workflow_templates/{module}/{name}")
async def workflow_template(request: web.Request) -> web.StreamResponse:
    directory = request.app[STATE].config.workflows_dir
    module, name = request.match_info["module"], request.match_info["name"]
    if module != TEMPLATE_MODULE:
        raise not_found("unknown_template_module", "Unknown template module", f"{module!r}; templates are under "
                        f"{TEMPLATE_MODULE!r}")
    try:
        clean = clean_file_name(name, field="name")
        path = resolve_inside(directory, clean if clean.endswith(".json") else clean + ".json", field="name")
    except PathRefused as exc:
        raise bad_request("invalid_path", "The template name is not allowed", str(exc)) from None
    if not path.is_file():
        raise not_found("template_not_found", "No such workflow template", name[:120])
    return web.FileResponse(path, headers={"Content-Type": "application/json"})


# ---- helpers ----------------------------------------------------------------------------------------------------
def _ram() -> tuple[int, int]:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 0
    free = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
                    break
    except OSError:
        try:
            free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            free = 0
    return total, free


def _torch_version() -> str:
    torch = sys.modules.get("torch")
    return str(getattr(torch, "__version__", "")) if torch else ""


def _devices(state: AppState, ram_total: int, ram_free: int) -> list[dict[str, Any]]:
    torch = sys.modules.get("torch")  # only report a GPU if torch is already loaded; never import it for a stats call
    if torch is not None and state.config.device != "cpu":
        try:
            if torch.cuda.is_available():
                index = torch.cuda.current_device()
                free, total = torch.cuda.mem_get_info(index)
                reserved = torch.cuda.memory_reserved(index)
                allocated = torch.cuda.memory_allocated(index)
                return [{"name": f"cuda:{index} {torch.cuda.get_device_name(index)}", "type": "cuda",
                         "index": index, "vram_total": total, "vram_free": free, "torch_vram_total": reserved,
                         "torch_vram_free": reserved - allocated}]
        except Exception:  # a broken driver must not break the stats route
            pass
    return [{"name": "cpu", "type": "cpu", "index": None, "vram_total": ram_total, "vram_free": ram_free,
             "torch_vram_total": 0, "torch_vram_free": 0, "processor": platform.processor() or platform.machine()}]


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("chisel-studio")
    except Exception:
        return "0.0.0"
