"""ComfyUI's `comfy.model_base`: the model types packs compare against (EPS, V_PREDICTION, FLOW, ...)."""

from __future__ import annotations

import enum
from typing import Any


class ModelType(enum.Enum):
    EPS = 1
    V_PREDICTION = 2
    V_PREDICTION_EDM = 3
    STABLE_CASCADE = 4
    EDM = 5
    FLOW = 6
    V_PREDICTION_CONTINUOUS = 7
    FLUX = 8
    IMG_TO_IMG = 9
    FLOW_COSMOS = 10


def model_type_of(handle: Any) -> ModelType:
    prediction = str(getattr(handle.family, "prediction", "eps")).lower()
    if prediction in ("v", "v_prediction"):
        return ModelType.V_PREDICTION
    if "flow" in prediction or getattr(handle.family, "name", "") == "sd3":
        return ModelType.FLOW
    if getattr(handle.family, "name", "") == "flux":
        return ModelType.FLUX
    return ModelType.EPS


class BaseModel:
    """ComfyUI's base model class, for isinstance checks and subclassing at import; Chisel's models are handles
    (a ModelPatcher's `.model` view), never instances of it."""


class SD15(BaseModel):
    pass


class SDXL(BaseModel):
    pass


class SDXLRefiner(BaseModel):
    pass


class SD21UNCLIP(BaseModel):
    pass


class Flux(BaseModel):
    pass


class SD3(BaseModel):
    pass


def __getattr__(name: str):  # noqa: ANN202 - ComfyUI's other names: placeholders that fail when used
    from comfy_compat.surface.unavailable import module_attribute

    return module_attribute('comfy.model_base', name)
