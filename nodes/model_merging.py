"""Model-merging nodes (ComfyUI's comfy_extras/nodes_model_merging.py): MODEL and CLIP merges as weight patches on
the first input's handle; no weight is copied until the merged handle runs (diffusion/model_merge.py)."""

from __future__ import annotations

from diffusion import model_merge
from diffusion.handles import Clip, Model
from nodes.context import RunContext
from nodes.inputs import Float, Link
from nodes.registry import Node, Output

CATEGORY = "advanced/model_merging"


class ModelMergeSimple(Node):
    """ratio·model1 + (1 − ratio)·model2, weight by weight (ratio is model1's share: 1 keeps model1, as ComfyUI)."""

    description = ""
    category = CATEGORY
    model1 = Link("MODEL")
    model2 = Link("MODEL")
    ratio = Float(1.0, min=0.0, max=1.0, step=0.01)
    outputs = (Output("MODEL"),)

    @classmethod
    def run(cls, ctx: RunContext, model1: Model, model2: Model, ratio: float) -> tuple[Model]:
        return (model_merge.merge_models(model1, model2, model_merge.simple(ratio)),)


class ModelMergeBlocks(Node):
    """ModelMergeSimple with a ratio per UNet part: input blocks, middle block, output blocks."""

    description = ""
    category = CATEGORY
    model1 = Link("MODEL")
    model2 = Link("MODEL")
    input = Float(1.0, min=0.0, max=1.0, step=0.01)
    middle = Float(1.0, min=0.0, max=1.0, step=0.01)
    out = Float(1.0, min=0.0, max=1.0, step=0.01)
    outputs = (Output("MODEL"),)

    @classmethod
    def run(cls, ctx: RunContext, model1: Model, model2: Model, input: float, middle: float,
            out: float) -> tuple[Model]:
        strengths = model_merge.by_block({"input": input, "middle": middle, "out": out})
        return (model_merge.merge_models(model1, model2, strengths),)


class ModelMergeSubtract(Node):
    """(model1 − model2)·multiplier: the difference a LoRA can be extracted from (LoraSave)."""

    description = ""
    category = CATEGORY
    model1 = Link("MODEL")
    model2 = Link("MODEL")
    multiplier = Float(1.0, min=-10.0, max=10.0, step=0.01)
    outputs = (Output("MODEL"),)

    @classmethod
    def run(cls, ctx: RunContext, model1: Model, model2: Model, multiplier: float) -> tuple[Model]:
        return (model_merge.merge_models(model1, model2, model_merge.subtract(multiplier)),)


class ModelMergeAdd(Node):
    """model1 + model2 (e.g. a base plus a difference from ModelMergeSubtract)."""

    description = ""
    category = CATEGORY
    model1 = Link("MODEL")
    model2 = Link("MODEL")
    outputs = (Output("MODEL"),)

    @classmethod
    def run(cls, ctx: RunContext, model1: Model, model2: Model) -> tuple[Model]:
        return (model_merge.merge_models(model1, model2, model_merge.add()),)


class CLIPMergeSimple(Node):
    """ratio·clip1 + (1 − ratio)·clip2 for the text encoders both have (ratio is clip1's share, as ComfyUI)."""

    description = ""
    category = CATEGORY
    clip1 = Link("CLIP")
    clip2 = Link("CLIP")
    ratio = Float(1.0, min=0.0, max=1.0, step=0.01)
    outputs = (Output("CLIP"),)

    @classmethod
    def run(cls, ctx: RunContext, clip1: Clip, clip2: Clip, ratio: float) -> tuple[Clip]:
        return (model_merge.merge_clips(clip1, clip2, model_merge.simple(ratio)),)


class CLIPMergeSubtract(Node):
    """(clip1 − clip2)·multiplier."""

    description = ""
    category = CATEGORY
    clip1 = Link("CLIP")
    clip2 = Link("CLIP")
    multiplier = Float(1.0, min=-10.0, max=10.0, step=0.01)
    outputs = (Output("CLIP"),)

    @classmethod
    def run(cls, ctx: RunContext, clip1: Clip, clip2: Clip, multiplier: float) -> tuple[Clip]:
        return (model_merge.merge_clips(clip1, clip2, model_merge.subtract(multiplier)),)


class CLIPMergeAdd(Node):
    """clip1 + clip2."""

    description = ""
    category = CATEGORY
    clip1 = Link("CLIP")
    clip2 = Link("CLIP")
    outputs = (Output("CLIP"),)

    @classmethod
    def run(cls, ctx: RunContext, clip1: Clip, clip2: Clip) -> tuple[Clip]:
        return (model_merge.merge_clips(clip1, clip2, model_merge.add()),)


NODES = (ModelMergeSimple, ModelMergeBlocks, ModelMergeSubtract, ModelMergeAdd, CLIPMergeSimple, CLIPMergeSubtract,
         CLIPMergeAdd)
