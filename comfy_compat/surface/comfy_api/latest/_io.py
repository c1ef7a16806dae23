"""ComfyUI's V3 node declarations (`comfy_api.latest.io`): types with their Input/Output declarations, Schema,
ComfyNode, NodeOutput and the hidden inputs.

A V3 node is a class with classmethods (no instances):

    class Invert(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return io.Schema(node_id="Invert", category="image", inputs=[io.Image.Input("image")],
                             outputs=[io.Image.Output()])

        @classmethod
        def execute(cls, image):
            return io.NodeOutput(1.0 - image)

The schema yields the node's V1 description (INPUT_TYPES, RETURN_TYPES... as ComfyUI serves V3 nodes in
/object_info); comfy_compat.v3_nodes adapts the class into a NodeSpec. `execute` may be `async def`; it sees its
hidden inputs as `cls.hidden.unique_id`, `cls.hidden.prompt`, ... (a copy of the class per call carries them).
"""

from __future__ import annotations

import copy
import inspect
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Literal


class FolderType(str, Enum):
    input = "input"
    output = "output"
    temp = "temp"


class UploadType(str, Enum):
    image = "image_upload"
    audio = "audio_upload"
    video = "video_upload"
    model = "file_upload"


class NumberDisplay(str, Enum):
    number = "number"
    slider = "slider"


class RemoteOptions:
    """A combo whose options come from a route of the server."""

    def __init__(self, route: str, refresh_button: bool, control_after_refresh: Literal["first", "last"] = "first",
                 timeout: int | None = None, max_retries: int | None = None, refresh: int | None = None):
        self.route, self.refresh_button, self.control_after_refresh = route, refresh_button, control_after_refresh
        self.timeout, self.max_retries, self.refresh = timeout, max_retries, refresh

    def as_dict(self) -> dict[str, Any]:
        return prune_dict({"route": self.route, "refresh_button": self.refresh_button,
                           "control_after_refresh": self.control_after_refresh, "timeout": self.timeout,
                           "max_retries": self.max_retries, "refresh": self.refresh})


def prune_dict(d: dict[str, Any]) -> dict[str, Any]:
    """The entries whose value is not None (ComfyUI leaves False and empty values in)."""
    return {k: v for k, v in d.items() if v is not None}


def first_real_override(cls: type, name: str, base: type | None = None) -> Any:
    """`cls.<name>` when a class below `base` (default ComfyNode) defines it, else None."""
    base = base or ComfyNode
    for klass in cls.__mro__:
        if klass is base or klass is _ComfyNodeBase:
            return None
        if name in klass.__dict__:
            return getattr(cls, name)
    return None


# ---- types ------------------------------------------------------------------------------------------------------
class _ComfyType(ABC):  # noqa: B024 - a marker base, as ComfyUI's
    Type: Any = Any
    io_type: str = ""


class _IO:
    Parent: type[_ComfyType]

    @property
    def io_type(self) -> Any:
        return self.Parent.io_type

    @property
    def Type(self) -> Any:  # noqa: N802 - ComfyUI's name
        return self.Parent.Type


class Input(_IO):
    """An input socket (a link) of some type."""

    def __init__(self, id: str, display_name: str | None = None, optional: bool = False,  # noqa: A002
                 tooltip: str | None = None, lazy: bool | None = None, extra_dict: dict[str, Any] | None = None,
                 raw_link: bool | None = None, advanced: bool | None = None):
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.tooltip = tooltip
        self.lazy = lazy
        self.extra_dict = extra_dict if extra_dict is not None else {}
        self.rawLink = raw_link
        self.advanced = advanced

    def as_dict(self) -> dict[str, Any]:
        return prune_dict({"display_name": self.display_name, "optional": self.optional, "tooltip": self.tooltip,
                           "lazy": self.lazy, "rawLink": self.rawLink, "advanced": self.advanced}) | \
            prune_dict(self.extra_dict)

    def get_io_type(self) -> Any:
        return self.io_type

    def get_all(self) -> list[Input]:
        return [self]

    def validate(self) -> None:
        pass


class WidgetInput(Input):
    """An input with a widget (a value typed into the node unless linked)."""

    def __init__(self, id: str, display_name: str | None = None, optional: bool = False,  # noqa: A002
                 tooltip: str | None = None, lazy: bool | None = None, default: Any = None,
                 socketless: bool | None = None, widget_type: str | None = None, force_input: bool | None = None,
                 extra_dict: dict[str, Any] | None = None, raw_link: bool | None = None,
                 advanced: bool | None = None):
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, raw_link, advanced)
        self.default = default
        self.socketless = socketless
        self.widget_type = widget_type
        self.force_input = force_input

    def as_dict(self) -> dict[str, Any]:
        return super().as_dict() | prune_dict({"default": self.default, "socketless": self.socketless,
                                               "widgetType": self.widget_type, "forceInput": self.force_input})

    def get_io_type(self) -> Any:
        return self.widget_type if self.widget_type is not None else self.io_type


class Output(_IO):
    """An output slot."""

    def __init__(self, id: str | None = None, display_name: str | None = None, tooltip: str | None = None,  # noqa: A002
                 is_output_list: bool = False):
        self.id = id
        self.display_name = display_name
        self.tooltip = tooltip
        self.is_output_list = is_output_list

    def as_dict(self) -> dict[str, Any]:
        return prune_dict({"display_name": self.display_name, "tooltip": self.tooltip,
                           "is_output_list": self.is_output_list})

    def get_io_type(self) -> Any:
        return self.io_type


class ComfyTypeI(_ComfyType):
    """A type with an Input declaration only."""

    class Input(Input):
        pass


class ComfyTypeIO(ComfyTypeI):
    """A type with Input and Output declarations."""

    class Output(Output):
        pass


def comfytype(io_type: str, **_: Any) -> Any:
    """Class decorator: bind `io_type` to a type and give it its own Input/Output classes (whose Parent it is)."""

    def decorate(cls: type) -> type:
        if not issubclass(cls, _ComfyType):
            cls = type(cls.__name__, (cls, ComfyTypeIO), {k: v for k, v in vars(cls).items()
                                                        if k not in ("__dict__", "__weakref__")})
        cls.io_type = io_type
        for name in ("Input", "Output"):
            declared = getattr(cls, name, None)
            if isinstance(declared, type):
                own = type(name, (declared,), {"Parent": cls, "__module__": cls.__module__,
                                               "__qualname__": f"{cls.__qualname__}.{name}"})
                setattr(cls, name, own)
        return cls

    return decorate


def Custom(io_type: str) -> type[ComfyTypeIO]:  # noqa: N802 - ComfyUI's name
    """A type for a custom io_type name (io.Custom("MY_TYPE").Input("x"))."""

    @comfytype(io_type=io_type)
    class CustomComfyType(ComfyTypeIO):
        pass

    return CustomComfyType


@comfytype(io_type="BOOLEAN")
class Boolean(ComfyTypeIO):
    Type = bool

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False,  # noqa: A002
                     tooltip: str | None = None, lazy: bool | None = None, default: bool | None = None,
                     label_on: str | None = None, label_off: str | None = None, socketless: bool | None = None,
                     force_input: bool | None = None, extra_dict: dict[str, Any] | None = None,
                     raw_link: bool | None = None, advanced: bool | None = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link, advanced)
            self.label_on, self.label_off = label_on, label_off

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | prune_dict({"label_on": self.label_on, "label_off": self.label_off})


@comfytype(io_type="INT")
class Int(ComfyTypeIO):
    Type = int

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False,  # noqa: A002
                     tooltip: str | None = None, lazy: bool | None = None, default: int | None = None,
                     min: int | None = None, max: int | None = None, step: int | None = None,  # noqa: A002
                     control_after_generate: bool | None = None, display_mode: NumberDisplay | None = None,
                     socketless: bool | None = None, force_input: bool | None = None,
                     extra_dict: dict[str, Any] | None = None, raw_link: bool | None = None,
                     advanced: bool | None = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link, advanced)
            self.min, self.max, self.step = min, max, step
            self.control_after_generate = control_after_generate
            self.display_mode = display_mode

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | prune_dict({
                "min": self.min, "max": self.max, "step": self.step,
                "control_after_generate": self.control_after_generate,
                "display": self.display_mode.value if self.display_mode else None})


@comfytype(io_type="FLOAT")
class Float(ComfyTypeIO):
    Type = float

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False,  # noqa: A002
                     tooltip: str | None = None, lazy: bool | None = None, default: float | None = None,
                     min: float | None = None, max: float | None = None, step: float | None = None,  # noqa: A002
                     round: float | None = None, display_mode: NumberDisplay | None = None,  # noqa: A002
                     socketless: bool | None = None, force_input: bool | None = None,
                     extra_dict: dict[str, Any] | None = None, raw_link: bool | None = None,
                     advanced: bool | None = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link, advanced)
            self.min, self.max, self.step, self.round = min, max, step, round
            self.display_mode = display_mode

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | prune_dict({
                "min": self.min, "max": self.max, "step": self.step, "round": self.round,
                "display": self.display_mode.value if self.display_mode else None})


@comfytype(io_type="STRING")
class String(ComfyTypeIO):
    Type = str

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False,  # noqa: A002
                     tooltip: str | None = None, lazy: bool | None = None, multiline: bool = False,
                     placeholder: str | None = None, default: str | None = None,
                     dynamic_prompts: bool | None = None, socketless: bool | None = None,
                     force_input: bool | None = None, extra_dict: dict[str, Any] | None = None,
                     raw_link: bool | None = None, advanced: bool | None = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link, advanced)
            self.multiline, self.placeholder, self.dynamic_prompts = multiline, placeholder, dynamic_prompts

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | prune_dict({"multiline": self.multiline, "placeholder": self.placeholder,
                                                   "dynamicPrompts": self.dynamic_prompts})


@comfytype(io_type="COMBO")
class Combo(ComfyTypeIO):
    Type = str

    class Input(WidgetInput):
        def __init__(self, id: str, options: list[Any] | type[Enum] | None = None,  # noqa: A002
                     display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                     lazy: bool | None = None, default: Any = None, control_after_generate: bool | None = None,
                     upload: UploadType | None = None, image_folder: FolderType | None = None,
                     remote: RemoteOptions | None = None, socketless: bool | None = None,
                     extra_dict: dict[str, Any] | None = None, raw_link: bool | None = None,
                     advanced: bool | None = None):
            if isinstance(options, type) and issubclass(options, Enum):
                options = [member.value for member in options]
            if isinstance(default, Enum):
                default = default.value
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, None, extra_dict,
                             raw_link, advanced)
            self.multiselect = False
            self.options = options
            self.control_after_generate = control_after_generate
            self.upload, self.image_folder, self.remote = upload, image_folder, remote

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | prune_dict({
                "multiselect": self.multiselect, "options": self.options,
                "control_after_generate": self.control_after_generate,
                **({self.upload.value: True} if self.upload is not None else {}),
                "image_folder": self.image_folder.value if self.image_folder else None,
                "remote": self.remote.as_dict() if self.remote else None})

    class Output(Output):
        def __init__(self, id: str | None = None, display_name: str | None = None,  # noqa: A002
                     options: list[str] | None = None, tooltip: str | None = None, is_output_list: bool = False):
            super().__init__(id, display_name, tooltip, is_output_list)
            self.options = options if options is not None else []

        @property
        def io_type(self) -> Any:
            return self.options


@comfytype(io_type="COMBO")
class MultiCombo(ComfyTypeI):
    Type = list

    class Input(Combo.Input):
        def __init__(self, id: str, options: list[str], display_name: str | None = None,  # noqa: A002
                     optional: bool = False, tooltip: str | None = None, lazy: bool | None = None,
                     default: list[str] | None = None, placeholder: str | None = None, chip: bool | None = None,
                     control_after_generate: bool | None = None, socketless: bool | None = None,
                     extra_dict: dict[str, Any] | None = None, raw_link: bool | None = None,
                     advanced: bool | None = None):
            super().__init__(id, options, display_name, optional, tooltip, lazy, default, control_after_generate,
                             socketless=socketless, extra_dict=extra_dict, raw_link=raw_link, advanced=advanced)
            self.multiselect = True
            self.placeholder, self.chip = placeholder, chip

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | prune_dict({"multi_select": self.multiselect, "placeholder": self.placeholder,
                                                   "chip": self.chip})


def _simple(io_type: str, name: str) -> type[ComfyTypeIO]:
    cls = type(name, (ComfyTypeIO,), {"__module__": __name__, "__qualname__": name})
    return comfytype(io_type)(cls)


Image = _simple("IMAGE", "Image")
Mask = _simple("MASK", "Mask")
Latent = _simple("LATENT", "Latent")
Conditioning = _simple("CONDITIONING", "Conditioning")
Sampler = _simple("SAMPLER", "Sampler")
Sigmas = _simple("SIGMAS", "Sigmas")
Noise = _simple("NOISE", "Noise")
Guider = _simple("GUIDER", "Guider")
Clip = _simple("CLIP", "Clip")
ControlNet = _simple("CONTROL_NET", "ControlNet")
Vae = _simple("VAE", "Vae")
Model = _simple("MODEL", "Model")
ClipVision = _simple("CLIP_VISION", "ClipVision")
ClipVisionOutput = _simple("CLIP_VISION_OUTPUT", "ClipVisionOutput")
StyleModel = _simple("STYLE_MODEL", "StyleModel")
Gligen = _simple("GLIGEN", "Gligen")
UpscaleModel = _simple("UPSCALE_MODEL", "UpscaleModel")
Audio = _simple("AUDIO", "Audio")
Video = _simple("VIDEO", "Video")
SVG = _simple("SVG", "SVG")
LoraModel = _simple("LORA_MODEL", "LoraModel")
LossMap = _simple("LOSS_MAP", "LossMap")
Voxel = _simple("VOXEL", "Voxel")
Mesh = _simple("MESH", "Mesh")
Hooks = _simple("HOOKS", "Hooks")
HookKeyframes = _simple("HOOK_KEYFRAMES", "HookKeyframes")
TimestepsRange = _simple("TIMESTEPS_RANGE", "TimestepsRange")
LatentOperation = _simple("LATENT_OPERATION", "LatentOperation")
FlowControl = _simple("FLOW_CONTROL", "FlowControl")
Accumulation = _simple("ACCUMULATION", "Accumulation")
Photomaker = _simple("PHOTOMAKER", "Photomaker")
Point = _simple("POINT", "Point")
FaceAnalysis = _simple("FACE_ANALYSIS", "FaceAnalysis")
BBOX = _simple("BBOX", "BBOX")
SEGS = _simple("SEGS", "SEGS")
AnyType = _simple("*", "AnyType")
MODEL_PATCH = _simple("MODEL_PATCH", "MODEL_PATCH")
AudioEncoder = _simple("AUDIO_ENCODER", "AudioEncoder")
AudioEncoderOutput = _simple("AUDIO_ENCODER_OUTPUT", "AudioEncoderOutput")
WanCameraEmbedding = _simple("WAN_CAMERA_EMBEDDING", "WanCameraEmbedding")
Tracks = _simple("TRACKS", "Tracks")
LatentUpscaleModel = _simple("LATENT_UPSCALE_MODEL", "LatentUpscaleModel")
Load3DCamera = _simple("LOAD3D_CAMERA", "Load3DCamera")
Load3D = _simple("LOAD_3D", "Load3D")
Load3DAnimation = _simple("LOAD_3D_ANIMATION", "Load3DAnimation")


@comfytype(io_type="WEBCAM")
class Webcam(ComfyTypeIO):
    Type = str

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False,  # noqa: A002
                     tooltip: str | None = None, lazy: bool | None = None, default: str | None = None,
                     socketless: bool | None = None, extra_dict: dict[str, Any] | None = None,
                     raw_link: bool | None = None, advanced: bool | None = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, None, extra_dict,
                             raw_link, advanced)


@comfytype(io_type="BOUNDING_BOX")
class BoundingBox(ComfyTypeIO):
    """A box widget ({"x", "y", "width", "height"}), or a socket with force_input."""

    Type = dict

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False,  # noqa: A002
                     tooltip: str | None = None, socketless: bool = True, default: dict | None = None,
                     component: str | None = None, force_input: bool | None = None):
            super().__init__(id, display_name, optional, tooltip, None, default, socketless)
            self.component, self.force_input = component, force_input

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | prune_dict({"component": self.component})


# ---- inputs of several types, and the dynamic inputs ------------------------------------------------------------
@comfytype(io_type="COMFY_MULTITYPED_V3")
class MultiType(ComfyTypeIO):
    """An input accepting any of `types` (its type is their comma-joined names). `id` may be another Input
    (io.Float.Input("x", default=1.0)): its widget is shown, and that input's type comes first."""

    Type = Any

    class Input(Input):
        def __init__(self, id: Any, types: list[Any], display_name: str | None = None,  # noqa: A002
                     optional: bool = False, tooltip: str | None = None, lazy: bool | None = None,
                     extra_dict: dict[str, Any] | None = None, raw_link: bool | None = None,
                     advanced: bool | None = None):
            self.input_override: Input | None = None
            if isinstance(id, Input):
                self.input_override = copy.copy(id)
                optional = id.optional if id.optional is True else optional
                tooltip = id.tooltip if id.tooltip is not None else tooltip
                display_name = id.display_name if id.display_name is not None else display_name
                lazy = id.lazy if id.lazy is not None else lazy
                id = id.id  # noqa: A001
                if isinstance(self.input_override, WidgetInput):
                    self.input_override.widget_type = self.input_override.get_io_type()
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, raw_link, advanced)
            self._io_types = types

        @property
        def io_types(self) -> list[Any]:
            return [t if isinstance(t, type) else type(t) for t in self._io_types]

        def get_io_type(self) -> str:
            names = [t.io_type for t in self.io_types]
            if self.input_override is not None:
                names.insert(0, self.input_override.get_io_type())
            return ",".join(dict.fromkeys(names))

        def as_dict(self) -> dict[str, Any]:
            if self.input_override is not None:
                return self.input_override.as_dict() | super().as_dict()
            return super().as_dict()


@comfytype(io_type="COMFY_MATCHTYPE_V3")
class MatchType(ComfyTypeIO):
    """Inputs and outputs sharing a template take the type of what is linked (one of `allowed_types`)."""

    class Template:
        def __init__(self, template_id: str, allowed_types: Any = None):
            self.template_id = template_id
            if allowed_types is None:
                allowed_types = AnyType
            if not isinstance(allowed_types, Iterable):
                allowed_types = [allowed_types]
            for t in allowed_types:
                kind = t if isinstance(t, type) else type(t)
                if not issubclass(kind, _ComfyType):
                    raise ValueError(f"Allowed types must be a ComfyType or a list of ComfyTypes, got "
                                     f"{getattr(t, '__name__', type(t).__name__)}")
            self.allowed_types = list(allowed_types)

        def as_dict(self) -> dict[str, Any]:
            return {"template_id": self.template_id,
                    "allowed_types": ",".join(t.io_type for t in self.allowed_types)}

    class Input(Input):
        def __init__(self, id: str, template: MatchType.Template, display_name: str | None = None,  # noqa: A002
                     optional: bool = False, tooltip: str | None = None, lazy: bool | None = None,
                     extra_dict: dict[str, Any] | None = None, raw_link: bool | None = None,
                     advanced: bool | None = None):
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, raw_link, advanced)
            self.template = template

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | prune_dict({"template": self.template.as_dict()})

    class Output(Output):
        def __init__(self, template: MatchType.Template, id: str | None = None,  # noqa: A002
                     display_name: str | None = "MATCHTYPE", tooltip: str | None = None,
                     is_output_list: bool = False):
            super().__init__(id, display_name, tooltip, is_output_list)
            self.template = template

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | prune_dict({"template": self.template.as_dict()})


class DynamicInput(Input, ABC):  # noqa: B024 - a marker base, as ComfyUI's
    """An input standing for several: its own inputs are sent in prompts as "<id>.<name>" keys."""


class DynamicOutput(Output, ABC):  # noqa: B024
    pass


@comfytype(io_type="COMFY_AUTOGROW_V3")
class Autogrow(ComfyTypeI):
    """Slots that grow as they are linked: copies of a template input named prefix0, prefix1... (TemplatePrefix)
    or from a list (TemplateNames); execute receives {slot name: value} for the slots given."""

    Type = dict
    _MaxNames = 100

    class _AutogrowTemplate:
        def __init__(self, input: Input):  # noqa: A002
            if isinstance(input, DynamicInput):
                raise ValueError("an Autogrow template cannot be a dynamic input")
            self.input = copy.copy(input)
            if isinstance(self.input, WidgetInput):
                self.input.force_input = True
            self.names: list[str] = []
            self.min = 0
            self.cached_inputs: dict[str, Input] = {}

        def _create_cached_inputs(self) -> None:
            for name in self.names:
                made = copy.copy(self.input)
                made.id = name
                self.cached_inputs[name] = made

        def get_all(self) -> list[Input]:
            return list(self.cached_inputs.values())

        def as_dict(self) -> dict[str, Any]:
            return prune_dict({"input": create_input_dict_v1([self.input])})

        def validate(self) -> None:
            self.input.validate()

    class TemplatePrefix(_AutogrowTemplate):
        def __init__(self, input: Input, prefix: str, min: int = 1, max: int = 10):  # noqa: A002
            super().__init__(input)
            if not (min >= 0 and 1 <= max <= Autogrow._MaxNames):
                raise ValueError(f"Autogrow: min {min} / max {max} out of range")
            self.prefix, self.min, self.max = prefix, min, max
            self.names = [f"{prefix}{i}" for i in range(max)]
            self._create_cached_inputs()

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | prune_dict({"prefix": self.prefix, "min": self.min, "max": self.max})

    class TemplateNames(_AutogrowTemplate):
        def __init__(self, input: Input, names: list[str], min: int = 1):  # noqa: A002
            super().__init__(input)
            if min < 0:
                raise ValueError(f"Autogrow: min {min} out of range")
            self.names = list(names)[:Autogrow._MaxNames]
            self.min = min
            self._create_cached_inputs()

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | prune_dict({"names": self.names, "min": self.min})

    class Input(DynamicInput):
        def __init__(self, id: str, template: Any, display_name: str | None = None,  # noqa: A002
                     optional: bool = False, tooltip: str | None = None, lazy: bool | None = None,
                     extra_dict: dict[str, Any] | None = None):
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
            self.template = template

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | prune_dict({"template": self.template.as_dict()})

        def get_all(self) -> list[Input]:
            return [self, *self.template.get_all()]

        def validate(self) -> None:
            self.template.validate()


@comfytype(io_type="COMFY_DYNAMICCOMBO_V3")
class DynamicCombo(ComfyTypeI):
    """A combo whose options reveal their own inputs ("<id>.<name>" in prompts); execute receives
    {"<id>": chosen key, name: value...} for the chosen option's inputs."""

    Type = dict

    class Option:
        def __init__(self, key: str, inputs: list[Input]):
            self.key, self.inputs = key, inputs

        def as_dict(self) -> dict[str, Any]:
            return {"key": self.key, "inputs": create_input_dict_v1(self.inputs)}

    class Input(DynamicInput):
        def __init__(self, id: str, options: list[DynamicCombo.Option], display_name: str | None = None,  # noqa: A002
                     optional: bool = False, tooltip: str | None = None, lazy: bool | None = None,
                     extra_dict: dict[str, Any] | None = None):
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
            self.options = options

        def get_all(self) -> list[Input]:
            return [self, *(i for option in self.options for i in option.inputs)]

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | prune_dict({"options": [o.as_dict() for o in self.options]})

        def validate(self) -> None:
            for option in self.options:
                for declared in option.inputs:
                    declared.validate()


def create_input_dict_v1(inputs: list[Input]) -> dict[str, Any]:
    """ComfyUI's V1 input dict of `inputs` ({"required": {...}, "optional": {...}}; "required" always there)."""
    result: dict[str, Any] = {"required": {}}
    for declared in inputs:
        add_to_dict_v1(declared, result)
    return result


def add_to_dict_v1(declared: Input, d: dict[str, Any]) -> None:
    options = declared.as_dict()
    options.pop("optional", None)
    d.setdefault("optional" if declared.optional else "required", {})[declared.id] = \
        (declared.get_io_type(), options)


# ---- hidden inputs ----------------------------------------------------------------------------------------------
class Hidden(str, Enum):
    """The hidden inputs a node may ask for (Schema(hidden=[...])); it reads them as cls.hidden.<name>."""

    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"
    auth_token_comfy_org = "AUTH_TOKEN_COMFY_ORG"
    api_key_comfy_org = "API_KEY_COMFY_ORG"


class HiddenHolder:
    """The hidden values of one call (None for those not asked for)."""

    def __init__(self, unique_id: str | None = None, prompt: Any = None, extra_pnginfo: Any = None,
                 dynprompt: Any = None, auth_token_comfy_org: str | None = None,
                 api_key_comfy_org: str | None = None, **_: Any):
        self.unique_id = unique_id
        self.prompt = prompt
        self.extra_pnginfo = extra_pnginfo
        self.dynprompt = dynprompt
        self.auth_token_comfy_org = auth_token_comfy_org
        self.api_key_comfy_org = api_key_comfy_org

    def __getattr__(self, key: str) -> Any:
        return None

    @classmethod
    def from_dict(cls, values: dict[Any, Any] | None) -> HiddenHolder:
        values = values or {}
        return cls(**{hidden.name: values.get(hidden, values.get(hidden.value)) for hidden in Hidden})


# ---- the schema -------------------------------------------------------------------------------------------------
@dataclass
class NodeInfoV1:
    input: dict | None = None
    input_order: dict[str, list[str]] | None = None
    output: list | None = None
    output_is_list: list[bool] | None = None
    output_name: list[str] | None = None
    output_tooltips: list[str | None] | None = None
    output_matchtypes: list[str | None] | None = None
    name: str | None = None
    display_name: str | None = None
    description: str | None = None
    python_module: Any = None
    category: str | None = None
    output_node: bool | None = None
    deprecated: bool | None = None
    experimental: bool | None = None
    api_node: bool | None = None


@dataclass
class Schema:
    """A V3 node's declaration."""

    node_id: str
    display_name: str | None = None
    category: str = "sd"
    inputs: list[Input] | None = None
    outputs: list[Output] | None = None
    hidden: list[Hidden] | None = None
    description: str = ""
    search_aliases: list[str] = field(default_factory=list)
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False
    # accepted as newer ComfyUI declares them; accept_all_inputs (inputs an editor extension adds beyond those
    # declared are passed to execute) is not honoured: only declared inputs reach execute here
    is_dev_only: bool = False
    price_badge: Any = None
    accept_all_inputs: bool = False
    essentials_category: str | None = None
    has_intermediate_output: bool = False

    def validate(self) -> None:
        """Input and output ids are unique, within and across the two lists."""
        input_ids = [i.id for declared in self.inputs or () if not isinstance(declared, DynamicInput)
                     for i in declared.get_all()]
        output_ids = [o.id for o in self.outputs or ()]
        issues = []
        for kind, ids in (("Input", input_ids), ("Output", output_ids)):
            repeated = [item for item, count in Counter(ids).items() if count > 1]
            if repeated:
                issues.append(f"{kind} ids must be unique, but {repeated} are not.")
        both = set(input_ids) & set(output_ids)
        if both:
            issues.append(f"Ids must be unique between inputs and outputs, but {both} are not.")
        if issues:
            raise ValueError("\n".join(issues))
        for declared in self.inputs or ():
            declared.validate()

    def finalize(self) -> None:
        """Add the hidden inputs the node's kind implies, and ids to outputs declared without one."""
        wanted: list[Hidden] = []
        if self.is_api_node:
            wanted += [Hidden.auth_token_comfy_org, Hidden.api_key_comfy_org]
        if self.is_output_node:
            wanted += [Hidden.prompt, Hidden.extra_pnginfo]
        if wanted:
            self.hidden = list(self.hidden or [])
            self.hidden += [h for h in wanted if h not in self.hidden]
        for index, output in enumerate(self.outputs or ()):
            if output.id is None:
                output.id = f"_{index}_{output.io_type}_"

    def get_v1_info(self, cls: type) -> NodeInfoV1:
        inputs = create_input_dict_v1(list(self.inputs or ()))
        for hidden in self.hidden or ():
            inputs.setdefault("hidden", {})[hidden.name] = (hidden.value,)
        outputs = list(self.outputs or ())
        return NodeInfoV1(
            input=inputs, input_order={key: list(value) for key, value in inputs.items()},
            output=[o.io_type for o in outputs], output_is_list=[o.is_output_list for o in outputs],
            output_name=[o.display_name or o.io_type for o in outputs],
            output_tooltips=[o.tooltip or None for o in outputs],
            output_matchtypes=[o.template.template_id if isinstance(o, MatchType.Output) else None
                               for o in outputs] if any(isinstance(o, MatchType.Output) for o in outputs) else None,
            name=self.node_id, display_name=self.display_name,
            description=self.description, python_module=getattr(cls, "RELATIVE_PYTHON_MODULE", None) or "nodes",
            category=self.category, output_node=self.is_output_node, deprecated=self.is_deprecated,
            experimental=self.is_experimental, api_node=self.is_api_node)


# ---- nodes ------------------------------------------------------------------------------------------------------
class _UIOutput(ABC):
    """A ui output (comfy_api.latest.ui): `as_dict()` is what the executed message carries."""

    @abstractmethod
    def as_dict(self) -> dict[str, Any]:
        ...


class NodeOutput:
    """What execute returns: the output values, and optionally a ui and an expansion graph."""

    def __init__(self, *args: Any, ui: _UIOutput | dict[str, Any] | None = None, expand: dict[str, Any] | None = None,
                 block_execution: str | None = None):
        self.args = args
        self.ui = ui
        self.expand = expand
        self.block_execution = block_execution

    @property
    def result(self) -> tuple[Any, ...] | None:
        return self.args if self.args else None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodeOutput:
        return cls(*tuple(data.get("result") or ()), ui=data.get("ui"), expand=data.get("expand"))

    def __getitem__(self, index: int) -> Any:
        return self.args[index]


class _classproperty:  # noqa: N801 - used as a decorator
    def __init__(self, getter: Any):
        self.getter = getter

    def __get__(self, instance: Any, owner: type) -> Any:
        return self.getter(owner)


class _ComfyNodeBase:
    RELATIVE_PYTHON_MODULE: str | None = None
    SCHEMA: Schema | None = None
    hidden: HiddenHolder | None = None
    resources: Any = None

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs: Any) -> NodeOutput:
        raise NotImplementedError

    @classmethod
    def validate_inputs(cls, **kwargs: Any) -> bool | str:
        """V1's VALIDATE_INPUTS: True, or the error text."""
        raise NotImplementedError

    @classmethod
    def fingerprint_inputs(cls, **kwargs: Any) -> Any:
        """V1's IS_CHANGED: a value mixed into the cache key (NaN: always run)."""
        raise NotImplementedError

    @classmethod
    def check_lazy_status(cls, **kwargs: Any) -> list[str]:
        """The lazy inputs still needed (None: not evaluated yet)."""
        return [name for name, value in kwargs.items() if value is None]

    @classmethod
    def VALIDATE_CLASS(cls) -> None:  # noqa: N802 - ComfyUI's name
        if first_real_override(cls, "define_schema") is None:
            raise TypeError(f"No define_schema function was defined for node class {cls.__name__}.")
        if first_real_override(cls, "execute") is None:
            raise TypeError(f"No execute function was defined for node class {cls.__name__}.")

    @classmethod
    def FINALIZE_SCHEMA(cls) -> Schema:  # noqa: N802
        schema = cls.define_schema()
        schema.finalize()
        return schema

    @classmethod
    def GET_SCHEMA(cls) -> Schema:  # noqa: N802
        """The node's schema, checked and finalized (also kept as cls.SCHEMA)."""
        cls.VALIDATE_CLASS()
        schema = cls.FINALIZE_SCHEMA()
        schema.validate()
        cls.SCHEMA = schema
        return schema

    @classmethod
    def PREPARE_CLASS_CLONE(cls, hidden_inputs: dict[Any, Any] | None) -> type:  # noqa: N802
        """A subclass carrying one call's hidden values (the node class itself is never modified)."""
        return type(cls.__name__, (cls,), {"hidden": HiddenHolder.from_dict(hidden_inputs),
                                           "__module__": cls.__module__, "__qualname__": cls.__qualname__})

    @classmethod
    def INPUT_TYPES(cls, include_hidden: bool = True, return_schema: bool = False) -> Any:  # noqa: N802
        schema = cls.FINALIZE_SCHEMA()
        inputs = schema.get_v1_info(cls).input or {}
        if not include_hidden:
            inputs.pop("hidden", None)
        return (inputs, schema) if return_schema else inputs

    @classmethod
    def GET_NODE_INFO_V1(cls) -> dict[str, Any]:  # noqa: N802
        return asdict(cls.GET_SCHEMA().get_v1_info(cls))

    @_classproperty
    def FUNCTION(cls) -> str:  # noqa: N802, N805
        return "EXECUTE_NORMALIZED_ASYNC" if inspect.iscoroutinefunction(cls.execute) else "EXECUTE_NORMALIZED"

    @_classproperty
    def RETURN_TYPES(cls) -> tuple[Any, ...]:  # noqa: N802, N805
        return tuple(o.io_type for o in cls.GET_SCHEMA().outputs or ())

    @_classproperty
    def RETURN_NAMES(cls) -> tuple[str, ...]:  # noqa: N802, N805
        return tuple(o.display_name or o.io_type for o in cls.GET_SCHEMA().outputs or ())

    @_classproperty
    def OUTPUT_IS_LIST(cls) -> tuple[bool, ...]:  # noqa: N802, N805
        return tuple(o.is_output_list for o in cls.GET_SCHEMA().outputs or ())

    @_classproperty
    def OUTPUT_NODE(cls) -> bool:  # noqa: N802, N805
        return cls.GET_SCHEMA().is_output_node

    @_classproperty
    def CATEGORY(cls) -> str:  # noqa: N802, N805
        return cls.GET_SCHEMA().category

    @_classproperty
    def DESCRIPTION(cls) -> str:  # noqa: N802, N805
        return cls.GET_SCHEMA().description

    @classmethod
    def EXECUTE_NORMALIZED(cls, *args: Any, **kwargs: Any) -> NodeOutput:  # noqa: N802
        return normalize_output(cls, cls.execute(*args, **kwargs))

    @classmethod
    async def EXECUTE_NORMALIZED_ASYNC(cls, *args: Any, **kwargs: Any) -> NodeOutput:  # noqa: N802
        return normalize_output(cls, await cls.execute(*args, **kwargs))


class ComfyNode(_ComfyNodeBase):
    """Base of every V3 node: override define_schema and execute (classmethods); optionally validate_inputs,
    fingerprint_inputs and check_lazy_status."""


def normalize_output(cls: type, returned: Any) -> NodeOutput:
    """What execute returned as a NodeOutput (None, a tuple or ComfyUI's {"result", "ui", "expand"} dict too)."""
    if returned is None:
        returned = NodeOutput()
    elif isinstance(returned, tuple):
        returned = NodeOutput(*returned)
    elif isinstance(returned, dict):
        returned = NodeOutput.from_dict(returned)
    elif not isinstance(returned, NodeOutput):
        raise TypeError(f"Invalid return type from node: {type(returned)}")
    schema = getattr(cls, "SCHEMA", None)
    if returned.expand is not None and schema is not None and not schema.enable_expand:
        raise TypeError(f"Node {cls.__name__} is not expandable, but expand included in NodeOutput; developer should "
                        "set enable_expand=True on node's Schema to allow this.")
    return returned


__all__ = [
    "FolderType", "UploadType", "RemoteOptions", "NumberDisplay", "comfytype", "Custom", "Input", "WidgetInput",
    "Output", "ComfyTypeI", "ComfyTypeIO", "Boolean", "Int", "Float", "String", "Combo", "MultiCombo", "Image",
    "Mask", "Latent", "Conditioning", "Sampler", "Sigmas", "Noise", "Guider", "Clip", "ControlNet", "Vae", "Model",
    "ClipVision", "ClipVisionOutput", "StyleModel", "Gligen", "UpscaleModel", "Audio", "Video", "SVG", "LoraModel",
    "LossMap", "Voxel", "Mesh", "Hooks", "HookKeyframes", "TimestepsRange", "LatentOperation", "FlowControl",
    "Accumulation", "Photomaker", "Point", "FaceAnalysis", "BBOX", "SEGS", "AnyType", "MODEL_PATCH", "AudioEncoder",
    "AudioEncoderOutput", "WanCameraEmbedding", "Tracks", "LatentUpscaleModel", "Load3DCamera", "Load3D",
    "Load3DAnimation", "Webcam", "BoundingBox", "MultiType", "MatchType", "DynamicInput", "DynamicOutput",
    "Autogrow", "DynamicCombo", "create_input_dict_v1", "add_to_dict_v1", "Hidden", "HiddenHolder", "Schema", "NodeInfoV1", "ComfyNode",
    "NodeOutput",
]
