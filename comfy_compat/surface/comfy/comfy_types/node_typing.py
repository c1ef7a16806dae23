"""ComfyUI's `comfy.comfy_types.node_typing`: the IO type names and the node base class packs annotate with."""

from __future__ import annotations

from abc import ABC
from enum import Enum
from typing import Any, TypedDict


class StrEnum(str, Enum):
    def __str__(self) -> str:
        return self.value


class IO(StrEnum):
    """The type names of node inputs and outputs. ANY ("*") equals every type, as ComfyUI's does."""

    STRING = "STRING"
    IMAGE = "IMAGE"
    MASK = "MASK"
    LATENT = "LATENT"
    BOOLEAN = "BOOLEAN"
    INT = "INT"
    FLOAT = "FLOAT"
    COMBO = "COMBO"
    CONDITIONING = "CONDITIONING"
    SAMPLER = "SAMPLER"
    SIGMAS = "SIGMAS"
    GUIDER = "GUIDER"
    NOISE = "NOISE"
    CLIP = "CLIP"
    CONTROL_NET = "CONTROL_NET"
    VAE = "VAE"
    MODEL = "MODEL"
    LORA_MODEL = "LORA_MODEL"
    LOSS_MAP = "LOSS_MAP"
    CLIP_VISION = "CLIP_VISION"
    CLIP_VISION_OUTPUT = "CLIP_VISION_OUTPUT"
    STYLE_MODEL = "STYLE_MODEL"
    GLIGEN = "GLIGEN"
    UPSCALE_MODEL = "UPSCALE_MODEL"
    AUDIO = "AUDIO"
    WEBCAM = "WEBCAM"
    POINT = "POINT"
    FACE_ANALYSIS = "FACE_ANALYSIS"
    BBOX = "BBOX"
    SEGS = "SEGS"
    VIDEO = "VIDEO"
    ANY = "*"
    NUMBER = "FLOAT,INT"
    PRIMITIVE = "STRING,FLOAT,INT,BOOLEAN"

    def __ne__(self, value: object) -> bool:
        if self == "*" or value == "*":
            return False
        if not isinstance(value, str):
            return True
        a, b = frozenset(self.split(",")), frozenset(value.split(","))
        return not (b.issubset(a) or a.issubset(b))

    __hash__ = str.__hash__


class InputTypeOptions(TypedDict, total=False):
    default: Any
    defaultInput: bool
    forceInput: bool
    lazy: bool
    rawLink: bool
    tooltip: str
    min: float
    max: float
    step: float
    round: float
    label_on: str
    label_off: str
    multiline: bool
    placeholder: str
    dynamicPrompts: bool
    image_upload: bool
    image_folder: str
    remote: dict[str, Any]
    control_after_generate: bool
    options: list[Any]


class InputTypeDict(TypedDict, total=False):
    required: dict[str, tuple[Any, InputTypeOptions]]
    optional: dict[str, tuple[Any, InputTypeOptions]]
    hidden: dict[str, Any]


class FileLocator(TypedDict):
    filename: str
    subfolder: str
    type: str


class ComfyNodeABC(ABC):
    """The abstract base ComfyUI offers node classes (the attributes are the same as any V1 node's)."""

    DESCRIPTION: str
    CATEGORY: str
    EXPERIMENTAL: bool
    DEPRECATED: bool

    @classmethod
    def INPUT_TYPES(cls) -> InputTypeDict:  # noqa: N802 - ComfyUI's name
        return {"required": {}}

    RETURN_TYPES: tuple[Any, ...]
    RETURN_NAMES: tuple[str, ...]
    OUTPUT_TOOLTIPS: tuple[str, ...]
    FUNCTION: str


class CheckLazyMixin:
    """ComfyUI's default check_lazy_status: every lazy input that is still None is needed."""

    def check_lazy_status(self, **kwargs: Any) -> list[str]:
        need = [name for name in kwargs if kwargs[name] is None]
        return need
