"""The GUIDER nodes (CFGGuider, BasicGuider, DualCFGGuider, PerpNegGuider) and the deprecated PerpNeg model node.

Each only builds a value of diffusion/guiders.py; SamplerCustomAdvanced (nodes/custom_sampling.py) runs it. Node
classes carry comments rather than docstrings: a docstring would become the description, which ComfyUI leaves
empty.
"""

from __future__ import annotations

from diffusion import guiders
from diffusion.handles import Model
from nodes.context import RunContext
from nodes.inputs import Combo, Float, Link
from nodes.registry import Node, Output
from nodes.types import Conditioning

CATEGORY = "sampling/custom_sampling/guiders"


# Classifier-free guidance: KSampler's guidance as a GUIDER.
class CFGGuider(Node):
    category = CATEGORY
    v3_schema = True
    model = Link("MODEL")
    positive = Link("CONDITIONING")
    negative = Link("CONDITIONING")
    cfg = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    outputs = (Output("GUIDER"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, positive: Conditioning, negative: Conditioning, cfg: float
            ) -> tuple[guiders.CFGGuider]:
        return (guiders.CFGGuider(model=model, positive=positive, negative=negative, cfg=cfg),)


# One conditioning, no negative and no guidance (models distilled to sample without CFG).
class BasicGuider(Node):
    category = CATEGORY
    v3_schema = True
    model = Link("MODEL")
    conditioning = Link("CONDITIONING")
    outputs = (Output("GUIDER"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, conditioning: Conditioning) -> tuple[guiders.CFGGuider]:
        return (guiders.basic_guider(model, conditioning),)


# Two prompts and a negative, each pair with its own scale.
class DualCFGGuider(Node):
    category = CATEGORY
    v3_schema = True
    model = Link("MODEL")
    cond1 = Link("CONDITIONING")
    cond2 = Link("CONDITIONING")
    negative = Link("CONDITIONING")
    cfg_conds = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    cfg_cond2_negative = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    style = Combo(("regular", "nested"))
    outputs = (Output("GUIDER"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, cond1: Conditioning, cond2: Conditioning, negative: Conditioning,
            cfg_conds: float, cfg_cond2_negative: float, style: str) -> tuple[guiders.DualCFGGuider]:
        return (guiders.DualCFGGuider(model=model, cond1=cond1, cond2=cond2, negative=negative, cfg_conds=cfg_conds,
                                      cfg_cond2_negative=cfg_cond2_negative,
                                      style="nested" if style == "nested" else "regular"),)


# Perp-Neg: the negative pushes only perpendicular to the positive, relative to an empty prompt.
class PerpNegGuider(Node):
    category = "_for_testing"
    v3_schema = True
    experimental = True
    model = Link("MODEL")
    positive = Link("CONDITIONING")
    negative = Link("CONDITIONING")
    empty_conditioning = Link("CONDITIONING")
    cfg = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    neg_scale = Float(1.0, min=0.0, max=100.0, step=0.01)
    outputs = (Output("GUIDER"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, positive: Conditioning, negative: Conditioning,
            empty_conditioning: Conditioning, cfg: float, neg_scale: float) -> tuple[guiders.PerpNegGuider]:
        return (guiders.PerpNegGuider(model=model, positive=positive, negative=negative, empty=empty_conditioning,
                                      cfg=cfg, neg_scale=neg_scale),)


# The model-patch form of Perp-Neg: KSampler and CFGGuider on this MODEL combine with Perp-Neg instead of CFG.
class PerpNeg(Node):
    display_name = "Perp-Neg (DEPRECATED by PerpNegGuider)"
    category = "_for_testing"
    v3_schema = True
    deprecated = True
    experimental = True
    model = Link("MODEL")
    empty_conditioning = Link("CONDITIONING")
    neg_scale = Float(1.0, min=0.0, max=100.0, step=0.01)
    outputs = (Output("MODEL"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, empty_conditioning: Conditioning, neg_scale: float
            ) -> tuple[Model]:
        cfg_function = guiders.PerpNegCfg(empty=empty_conditioning, neg_scale=neg_scale)
        return (guiders.with_sampler_cfg_function(model, cfg_function),)


NODES = (CFGGuider, BasicGuider, DualCFGGuider, PerpNegGuider, PerpNeg)
