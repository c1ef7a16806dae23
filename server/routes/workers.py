"""GET /workers: who runs prompts. {"mode": "local" | "ray", "workers": [{id, host, pid, device, state (starting,
idle, running, dead), prompt_id, models (held loaded), prompts_done, error, ...}]}. A server without --ray lists its
one in-process worker ("local"); the editor's queue panel shows the list for a cluster."""

from __future__ import annotations

from aiohttp import web

from server.routes.state import STATE

routes = web.RouteTableDef()


@routes.get("/workers")
async def get_workers(request: web.Request) -> web.Response:
    runner = request.app[STATE].engine.worker
    return web.json_response({"mode": runner.mode, "workers": [w.as_dict() for w in runner.workers()]})
