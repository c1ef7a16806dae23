"""The prompt routes: /prompt, /queue, /history, /jobs, /interrupt, /free, /workflow/convert.

POST /prompt: body checked field by field (each refusal names the field), the prompt validated with server/graph.py
(400 with ComfyUI's error + node_errors), then queued in the persistent store. Unlike ComfyUI, any validation error
rejects the whole prompt, invalid JSON is a 400 (ComfyUI: 500), and a client may choose its prompt_id (a sane,
unused string). A body with a UI `workflow` and no `prompt` is converted on the server (as /workflow/convert does;
a failure is a 400 with node_errors) and the answer carries the converted `prompt`; a given `workflow` also becomes
extra_data.extra_pnginfo.workflow unless the client put one there. With both, `prompt` is what runs.

POST /workflow/convert: {"workflow": document} or the document itself as the body.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from aiohttp import web

from server.engine.graph import PromptError, check_prompt
from server.engine.queue import JOB_STATUSES, DuplicatePromptId
from server.messages import history_meta
from server.routes.errors import ApiError, bad_request, int_param, not_found, read_json
from server.routes.state import STATE, AppState
from server.workflow import WorkflowError, convert_workflow, detect_format, to_api_prompt

routes = web.RouteTableDef()
PROMPT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MAX_ID_LIST = 10_000
log = logging.getLogger("chisel.server")


@routes.get("/prompt")
async def get_prompt(request: web.Request) -> web.Response:
    return web.json_response({"exec_info": {"queue_remaining": request.app[STATE].engine.queue_remaining()}})


@routes.post("/prompt")
async def post_prompt(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = state.on_prompt(await read_json(request))  # custom node packs' on_prompt handlers (ComfyUI does the same)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_prompt", "Invalid prompt", "an on_prompt handler of a custom node returned "
                       f"{type(body).__name__}, not the request body", body_extra={"node_errors": {}})
    if "prompt" not in body and body.get("workflow") is None:
        raise ApiError(400, "no_prompt", "No prompt provided",
                       "the request body has no 'prompt' (nor a UI 'workflow' to convert)",
                       body_extra={"node_errors": {}})
    extra_data = body.get("extra_data") or {}
    if not isinstance(extra_data, dict):
        raise _field_error("extra_data", "must be an object", extra_data)
    workflow = body.get("workflow")
    if workflow is not None and not isinstance(workflow, dict):
        raise _field_error("workflow", "must be a UI workflow (a JSON object with 'nodes' and 'links')", workflow)
    client_id = body.get("client_id")
    if client_id is not None and (not isinstance(client_id, str) or not CLIENT_ID.match(client_id)):
        raise _field_error("client_id", "must be a string of letters, digits and ._:- (at most 128)", client_id)
    prompt_id = body.get("prompt_id")
    if prompt_id is not None and (not isinstance(prompt_id, str) or not PROMPT_ID.match(prompt_id)):
        raise _field_error("prompt_id", "must be a string of letters, digits and ._:- (at most 128, starting with a "
                           "letter or digit)", prompt_id)
    number = body.get("number")
    if number is not None:
        number = _number(number)
    front = body.get("front", False)
    if not isinstance(front, (bool, int)) or isinstance(front, float):
        raise _field_error("front", "must be true or false", front)
    targets = body.get("partial_execution_targets")
    if targets is not None and (not isinstance(targets, list) or not all(isinstance(t, str) for t in targets)):
        raise _field_error("partial_execution_targets", "must be a list of node ids (strings)", targets)
    converted = "prompt" not in body  # a UI workflow alone: the server converts it (one request from the editor)
    prompt = _workflow_prompt(workflow, state.registry) if converted else body["prompt"]
    if workflow is not None:
        extra_data = _with_workflow(extra_data, workflow)
    try:
        outputs = check_prompt(prompt, state.registry, partial_execution_targets=targets)
    except PromptError as err:
        raise ApiError(400, err.error.get("type", "invalid_prompt"), err.error.get("message", "Invalid prompt"),
                       err.error.get("details", ""), err.error.get("extra_info"),
                       body_extra={"node_errors": err.node_errors}) from None
    try:
        prompt_id, number = state.engine.worker.enqueue(
            prompt, outputs_to_execute=list(outputs), extra_data=extra_data, client_id=client_id,
            prompt_id=prompt_id, number=number, front=bool(front))
    except DuplicatePromptId as exc:
        raise ApiError(409, "duplicate_prompt_id", "prompt_id is already used", str(exc),
                       {"field": "prompt_id"}, body_extra={"node_errors": {}}) from None
    except ValueError as exc:  # a value the store cannot keep (e.g. not JSON-serialisable)
        raise ApiError(400, "invalid_prompt", "The prompt cannot be stored", str(exc),
                       body_extra={"node_errors": {}}) from None
    answer: dict[str, Any] = {"prompt_id": prompt_id, "number": number, "node_errors": {}}
    if converted:
        answer["prompt"] = prompt  # the converted prompt: which nodes will run (the editor's progress counts them)
    return web.json_response(answer)


@routes.get("/queue")
async def get_queue(request: web.Request) -> web.Response:
    store = request.app[STATE].engine.store
    return web.json_response({"queue_running": store.running(), "queue_pending": store.pending()})


@routes.post("/queue")
async def post_queue(request: web.Request) -> web.Response:
    engine = request.app[STATE].engine
    body = await read_json(request)
    clear, delete = _clear_delete(body)
    if clear:
        engine.store.clear_pending()
    if delete:
        engine.store.delete(delete)
    if clear or delete:
        engine.worker.broadcast_status()
    return web.Response(status=200)


@routes.get("/history")
async def get_history(request: web.Request) -> web.Response:
    store = request.app[STATE].engine.store
    max_items = int_param(request, "max_items", None, minimum=0)
    offset = int_param(request, "offset", None, minimum=-1)
    return web.json_response(_with_meta(store.history(max_items=max_items, offset=offset)))


@routes.get("/history/{prompt_id}")
async def get_history_entry(request: web.Request) -> web.Response:
    store = request.app[STATE].engine.store
    return web.json_response(_with_meta(store.history_entry(request.match_info["prompt_id"])))  # {}: unknown


@routes.post("/history")
async def post_history(request: web.Request) -> web.Response:
    store = request.app[STATE].engine.store
    body = await read_json(request)
    clear, delete = _clear_delete(body)
    if clear:
        store.clear_history()
    if delete:
        store.delete_history(delete)
    return web.Response(status=200)


@routes.get("/jobs")
async def get_jobs(request: web.Request) -> web.Response:
    store = request.app[STATE].engine.store
    raw_status = request.query.get("status")
    statuses = None
    if raw_status:
        statuses = [s.strip() for s in raw_status.split(",") if s.strip()]
        unknown = [s for s in statuses if s not in JOB_STATUSES]
        if unknown:
            raise bad_request("invalid_query_parameter", "Query parameter status has an unknown value",
                              f"{unknown[0][:40]!r}; use {', '.join(JOB_STATUSES)}", parameter="status")
    sort_by = request.query.get("sort_by", "created_at")
    sort_order = request.query.get("sort_order", "desc")
    limit = int_param(request, "limit", None, minimum=1, maximum=100_000)
    offset = int_param(request, "offset", 0, minimum=0)
    try:
        result = store.jobs(statuses=statuses, sort_by=sort_by, sort_order=sort_order, limit=limit,
                            offset=offset or 0, workflow_id=request.query.get("workflow_id") or None)
    except ValueError as exc:
        raise bad_request("invalid_query_parameter", "Invalid jobs query", str(exc)) from None
    return web.json_response(result)


@routes.get("/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    job = request.app[STATE].engine.store.job(request.match_info["job_id"])
    if job is None:
        raise not_found("job_not_found", "Job not found", request.match_info["job_id"][:128])
    return web.json_response(job)


@routes.post("/jobs/{job_id}/cancel")
async def cancel_job(request: web.Request) -> web.Response:
    _cancel(request.app[STATE], [request.match_info["job_id"]])
    return web.Response(status=200)


@routes.post("/jobs/cancel")
async def cancel_jobs(request: web.Request) -> web.Response:
    body = await read_json(request)
    ids = body.get("job_ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(ids) > MAX_ID_LIST:
        raise _field_error("job_ids", "must be a list of job ids (strings)", ids)
    _cancel(request.app[STATE], ids)
    return web.Response(status=200)


@routes.post("/interrupt")
async def interrupt(request: web.Request) -> web.Response:
    body = await read_json(request, empty={})
    prompt_id = body.get("prompt_id")
    if prompt_id is not None and not isinstance(prompt_id, str):
        raise _field_error("prompt_id", "must be a string", prompt_id)
    request.app[STATE].engine.worker.interrupt(prompt_id)
    return web.Response(status=200)


@routes.post("/free")
async def free(request: web.Request) -> web.Response:
    body = await read_json(request, empty={})
    flags = {}
    for name in ("unload_models", "free_memory"):
        value = body.get(name, False)
        if not isinstance(value, bool):
            raise _field_error(name, "must be true or false", value)
        flags[name] = value
    request.app[STATE].engine.worker.free(**flags)
    return web.Response(status=200)


@routes.post("/workflow/convert")
async def convert(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await read_json(request)
    if "workflow" in body:
        document = body["workflow"]
    elif _is_bare_document(body):  # the workflow itself as the body ({"nodes": [...], "links": [...], ...})
        document = body
    else:
        raise ApiError(400, "no_workflow", "No workflow provided",
                       "the request body is neither {\"workflow\": ...} nor a workflow itself (no 'nodes' list)",
                       body_extra={"node_errors": {}})
    try:
        prompt = to_api_prompt(document, state.registry)
    except WorkflowError as err:
        return web.json_response(err.to_response(), status=400)
    except Exception as exc:  # a converter bug must not become a 500 for a bad document
        raise _conversion_crash(exc) from None
    return web.json_response({"prompt": prompt})


# ---- helpers ----------------------------------------------------------------------------------------------------
def _workflow_prompt(workflow: dict[str, Any], registry: Any) -> dict[str, Any]:
    """POST /prompt's UI workflow converted (as /workflow/convert does); a 400 with node_errors when it cannot be."""
    try:
        return convert_workflow(workflow, registry)
    except WorkflowError as err:
        details = err.details
        if err.kind == "api_format":
            details = details or "send an API prompt as 'prompt', a UI workflow as 'workflow'"
        response = err.to_response()
        raise ApiError(400, err.kind, err.message, details, {"field": "workflow"},
                       body_extra={"node_errors": response["node_errors"]}) from None
    except Exception as exc:  # a converter bug must not become a 500 for a bad document
        raise _conversion_crash(exc) from None


def _conversion_crash(exc: Exception) -> ApiError:
    log.exception("the workflow converter failed")
    return ApiError(400, "invalid_workflow", "Workflow could not be converted",
                    f"{type(exc).__name__}: {str(exc)[:200]}", body_extra={"node_errors": {}})


def _with_workflow(extra_data: dict[str, Any], workflow: dict[str, Any]) -> dict[str, Any]:
    """extra_data with the UI workflow as extra_pnginfo.workflow (so SaveImage embeds it), unless the client put
    one there (or made extra_pnginfo something other than an object). The client's dicts are not modified."""
    info = extra_data.get("extra_pnginfo")
    if info is None:
        info = {}
    if not isinstance(info, dict) or "workflow" in info:
        return extra_data
    return {**extra_data, "extra_pnginfo": {**info, "workflow": workflow}}


def _is_bare_document(body: dict[str, Any]) -> bool:
    try:
        return bool(body) and detect_format(body) in ("ui", "api")
    except WorkflowError:
        return False


def _cancel(state: AppState, ids: list[str]) -> None:
    engine = state.engine
    pending = [i for i in ids if engine.store.status_of(i) == "pending"]
    if pending:
        engine.store.delete(pending)
        engine.worker.broadcast_status()
    for prompt_id in ids:
        if prompt_id not in pending:
            engine.worker.interrupt(prompt_id)


def _clear_delete(body: dict[str, Any]) -> tuple[bool, list[str]]:
    clear = body.get("clear", False)
    if not isinstance(clear, bool):
        raise _field_error("clear", "must be true or false", clear)
    delete = body.get("delete", [])
    if not isinstance(delete, list) or not all(isinstance(i, str) for i in delete) or len(delete) > MAX_ID_LIST:
        raise _field_error("delete", "must be a list of prompt ids (strings)", delete)
    return clear, delete


def _number(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _field_error("number", "must be a number", value)
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise _field_error("number", "must be a number", value) from None
    if not math.isfinite(number) or abs(number) > 2**53:
        raise _field_error("number", "must be a finite number within +-2^53", value)
    return int(number) if number.is_integer() else number


def _field_error(field: str, problem: str, value: Any) -> ApiError:
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return ApiError(400, "invalid_field", f"Field {field} {problem}", f"{field}: got {shown}", {"field": field},
                    body_extra={"node_errors": {}})


def _with_meta(history: dict[str, Any]) -> dict[str, Any]:
    """History entries with the frontend's `meta` for their output nodes (entries recorded before it are kept)."""
    for entry in history.values():
        if not entry.get("meta"):
            entry["meta"] = history_meta(entry.get("outputs") or {})
    return history
