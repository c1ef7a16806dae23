"""Skip-layer guidance for the transformer models (ComfyUI's nodes_slg / nodes_sd3): the prediction with some
blocks skipped is a "worse" model, and guidance pushes away from it (the idea of Stability AI's SD3.5 SLG).

    SkipLayerGuidanceDiT    after CFG, D += (D_cond − D_cond with the layers skipped)·scale between start and end
                            percent; optional rescaling towards D_cond's standard deviation
    SkipLayerGuidanceSD3    the same over the MMDiT's joint blocks
    SkipLayerGuidanceDiTSimple  the negative prediction itself is made with the layers skipped

Blocks are skipped through ComfyUI's ``patches_replace["dit"]`` keys (("double_block", i), ("single_block", i)),
which diffusion/flux.py and diffusion/mmdit.py honour, so the same functions work in ComfyUI custom nodes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from diffusion.handles import Model
from nodes.context import RunContext
from nodes.inputs import Float, Link, String
from nodes.registry import Node, Output


def parse_layers(text: str) -> list[int]:
    """Every integer in the text ("7, 8, 9" -> [7, 8, 9]), as ComfyUI's re.findall(r'\\d+')."""
    return [int(i) for i in re.findall(r"\d+", text)]


def _skip(args: Mapping[str, Any], extra: Mapping[str, Any]) -> Mapping[str, Any]:
    """A block replacement that returns its inputs: the block is skipped."""
    return args


def skipping(model_options: Any, double_layers: Sequence[int], single_layers: Sequence[int]) -> dict[str, Any]:
    """A copy of model_options (ComfyUI's dict form) whose network skips these blocks."""
    options = model_options.copy() if hasattr(model_options, "copy") else dict(model_options)
    to = dict(options.get("transformer_options") or {})
    replace = {k: dict(v) for k, v in (to.get("patches_replace") or {}).items()}
    dit = replace.setdefault("dit", {})
    for layer in double_layers:
        dit[("double_block", layer)] = _skip
    for layer in single_layers:
        dit[("single_block", layer)] = _skip
    to["patches_replace"] = replace
    options["transformer_options"] = to
    return options


def slg_post_cfg(*, double_layers: Sequence[int], single_layers: Sequence[int], scale: float, sigma_start: float,
                 sigma_end: float, rescaling_scale: float) -> Callable[[Mapping[str, Any]], Any]:
    def post_cfg(args: Mapping[str, Any]) -> Any:
        cfg_result = args["denoised"]
        sigma = float(args["sigma"].reshape(-1)[0])
        if scale > 0 and sigma_end <= sigma <= sigma_start:
            options = skipping(args["model_options"], double_layers, single_layers)
            (slg,) = args["model"].calc_cond_batch([args["cond"]], args["input"], args["sigma"], options)
            cond_pred = args["cond_denoised"]
            cfg_result = cfg_result + (cond_pred - slg) * scale
            if rescaling_scale != 0:
                factor = cond_pred.std() / cfg_result.std()
                cfg_result = cfg_result * (rescaling_scale * factor + (1 - rescaling_scale))
        return cfg_result

    return post_cfg


def skip_layer_guidance(model: Model, *, double_layers: str, single_layers: str, scale: float,
                        start_percent: float, end_percent: float, rescaling_scale: float = 0.0) -> Model:
    doubles, singles = parse_layers(double_layers), parse_layers(single_layers)
    if not doubles and not singles:
        return model
    fn = slg_post_cfg(double_layers=doubles, single_layers=singles, scale=scale,
                      sigma_start=model.sampling.percent_to_sigma(start_percent),
                      sigma_end=model.sampling.percent_to_sigma(end_percent), rescaling_scale=rescaling_scale)
    return model.with_options(model.options.with_post_cfg_function(fn))


def _layers(default: str = "7, 8, 9") -> String:
    return String(default, multiline=False)


class SkipLayerGuidanceDiT(Node):
    description = "Generic version of SkipLayerGuidance node that can be used on every DiT model."
    category = "advanced/guidance"
    v3_schema = True
    experimental = True
    model = Link("MODEL")
    double_layers = _layers()
    single_layers = _layers()
    scale = Float(3.0, min=0.0, max=10.0, step=0.1)
    start_percent = Float(0.01, min=0.0, max=1.0, step=0.001)
    end_percent = Float(0.15, min=0.0, max=1.0, step=0.001)
    rescaling_scale = Float(0.0, min=0.0, max=10.0, step=0.01)
    outputs = (Output("MODEL"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, double_layers: str, single_layers: str, scale: float,
            start_percent: float, end_percent: float, rescaling_scale: float) -> tuple[Model]:
        return (skip_layer_guidance(model, double_layers=double_layers, single_layers=single_layers, scale=scale,
                                    start_percent=start_percent, end_percent=end_percent,
                                    rescaling_scale=rescaling_scale),)


class SkipLayerGuidanceSD3(Node):
    description = "Generic version of SkipLayerGuidance node that can be used on every DiT model."
    category = "advanced/guidance"
    v3_schema = True
    experimental = True
    model = Link("MODEL")
    layers = _layers()
    scale = Float(3.0, min=0.0, max=10.0, step=0.1)
    start_percent = Float(0.01, min=0.0, max=1.0, step=0.001)
    end_percent = Float(0.15, min=0.0, max=1.0, step=0.001)
    outputs = (Output("MODEL"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, layers: str, scale: float, start_percent: float,
            end_percent: float) -> tuple[Model]:
        return (skip_layer_guidance(model, double_layers=layers, single_layers="", scale=scale,
                                    start_percent=start_percent, end_percent=end_percent),)


class SkipLayerGuidanceDiTSimple(Node):
    description = "Simple version of the SkipLayerGuidanceDiT node that only modifies the uncond pass."
    category = "advanced/guidance"
    v3_schema = True
    experimental = True
    model = Link("MODEL")
    double_layers = _layers()
    single_layers = _layers()
    start_percent = Float(0.0, min=0.0, max=1.0, step=0.001)
    end_percent = Float(1.0, min=0.0, max=1.0, step=0.001)
    outputs = (Output("MODEL"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, double_layers: str, single_layers: str, start_percent: float,
            end_percent: float) -> tuple[Model]:
        doubles, singles = parse_layers(double_layers), parse_layers(single_layers)
        if not doubles and not singles:
            return (model,)
        sigma_start = model.sampling.percent_to_sigma(start_percent)
        sigma_end = model.sampling.percent_to_sigma(end_percent)

        def pre_cfg(args: Mapping[str, Any]) -> list[Any]:
            # ComfyUI replaces the uncond evaluation (calc_cond_batch_function); here it is re-made with the
            # layers skipped before CFG combines: the same numbers, one extra uncond evaluation.
            conds_out = list(args["conds_out"])
            uncond = args["conds"][1]
            sigma = float(args["sigma"].reshape(-1)[0])
            if uncond is not None and sigma_end <= sigma <= sigma_start:
                options = skipping(args["model_options"], doubles, singles)
                conds_out[1] = args["model"].calc_cond_batch([None, uncond], args["input"], args["sigma"],
                                                             options)[1]
            return conds_out

        return (model.with_options(model.options.with_pre_cfg_function(pre_cfg)),)


NODES = (SkipLayerGuidanceDiT, SkipLayerGuidanceDiTSimple, SkipLayerGuidanceSD3)
