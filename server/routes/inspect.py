"""GET /chisel/sigmas: the sigmas KSampler runs for a scheduler, steps and denoise, for the editor's small sigma
curve on the KSampler node.

    GET /chisel/sigmas?scheduler=normal&steps=20&denoise=1.0&model_sampling=eps[&sampler_name=euler]
    -> {"sigmas": [14.61, ..., 0.0]}

Computed by the schedule code itself (nodes/inspect.py sigma_curve) on the default table of the kind of model:
SD's discrete table for eps and v, the rectified-flow table for flow. sampler_name matters only for the samplers
whose schedule drops its second-to-last sigma (dpm_2, dpm_2_ancestral, uni_pc, uni_pc_bh2). Every parameter is
optional (defaults as above); a bad one is a 400 naming it.
"""

from __future__ import annotations

import asyncio
import functools
import math

from aiohttp import web

from server.routes.errors import bad_request, choice_param, int_param

routes = web.RouteTableDef()
MAX_STEPS = 10000  # KSampler's own limit


def _float_param(request: web.Request, name: str, default: float, *, minimum: float, maximum: float) -> float:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise bad_request("invalid_query_parameter", f"Query parameter {name} must be a number",
                          f"{name}={raw[:60]!r}", parameter=name) from None
    if not math.isfinite(value) or not minimum <= value <= maximum:
        raise bad_request("invalid_query_parameter", f"Query parameter {name} must be between {minimum:g} and "
                          f"{maximum:g}", f"{name}={raw[:60]!r}", parameter=name)
    return value


@routes.get("/chisel/sigmas")
async def get_sigmas(request: web.Request) -> web.Response:
    from nodes import inspect as inspect_nodes  # torch and the schedule code: loaded with the node catalog anyway

    scheduler = choice_param(request, "scheduler", inspect_nodes.SCHEDULER_NAMES, "normal")
    steps = int_param(request, "steps", 20, minimum=1, maximum=MAX_STEPS)
    denoise = _float_param(request, "denoise", 1.0, minimum=0.0, maximum=1.0)
    model_sampling = choice_param(request, "model_sampling", inspect_nodes.MODEL_SAMPLINGS, "eps")
    sampler_name = choice_param(request, "sampler_name", inspect_nodes.SAMPLER_NAMES, "euler")
    compute = functools.partial(inspect_nodes.sigma_curve, scheduler, int(steps or 20), denoise, model_sampling,
                                sampler_name)
    try:
        sigmas = await asyncio.get_running_loop().run_in_executor(None, compute)
    except inspect_nodes.InspectInputError as exc:
        raise bad_request("invalid_query_parameter", "These settings give no schedule", str(exc)) from None
    return web.json_response({"sigmas": sigmas})
