"""ControlNet nodes: loading control models and attaching them, with a hint image, to conditioning entries.

A CONTROL_NET value is diffusion.controlnet.ControlNet (the loaded module); applying it gives each conditioning
entry an AppliedControl (hint, strength, start/end percent, and the control it already had as `previous`, so
stacked apply nodes add their residuals). Sampling computes the residuals per batched model call
(diffusion/guidance.py) and the UNet adds them (diffusion/unet.py). As in ComfyUI, one applied control is shared
by the positive and the negative entries an apply node touches, so they run in one model call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from diffusion.controlnet import (
    UNION_CONTROLNET_TYPES,
    AppliedControl,
    ControlModel,
    ControlNet,
    ControlNetError,
    LoadedControlNet,
    T2IAdapter,
    load_control_file,
)
from diffusion.controlnet_flux import FluxControlNet, LoadedFluxControlNet
from diffusion.t2i_adapter import LoadedT2IAdapter
from diffusion.handles import Model, Vae
from diffusion.values import CondEntry, Conditioning
from nodes.context import RunContext
from nodes.inputs import Combo, Files, Float, Link
from nodes.loaders import file_identity
from nodes.registry import Node, Output
from nodes.vae_ops import encode_images

CONTROLNET_FOLDER = "controlnet"
CATEGORY = "conditioning/controlnet"
UNION_TYPES = ("auto", *UNION_CONTROLNET_TYPES)


def _is_shuffle(name: str) -> bool:
    """ComfyUI turns on global average pooling for "shuffle" ControlNets by their file name."""
    stem = Path(name).stem
    return stem.endswith("_shuffle") or stem.endswith("_shuffle_fp16")


def _controlnet_value(loaded: LoadedControlNet | LoadedT2IAdapter | LoadedFluxControlNet,
                      name: str) -> ControlModel:
    if isinstance(loaded, LoadedT2IAdapter):
        return T2IAdapter(model=loaded.model, name=Path(name).name, owner=loaded)
    if isinstance(loaded, LoadedFluxControlNet):
        return FluxControlNet(model=loaded.model, name=Path(name).name, owner=loaded)
    return ControlNet(model=loaded.model, global_average_pooling=_is_shuffle(name), name=Path(name).name,
                      owner=loaded)


class ControlNetLoader(Node):
    """Loads a ControlNet (SD1.x / SD2.x / SDXL, lllyasviel or diffusers layout, union models too; Flux.1 in
    XLabs' or InstantX's layout, union models too) or a T2I-adapter (full, light, SDXL)."""

    description = ""
    display_name = "Load ControlNet Model"
    category = "loaders"
    control_net_name = Combo(Files(CONTROLNET_FOLDER))
    outputs = (Output("CONTROL_NET"),)

    @classmethod
    def fingerprint(cls, ctx: RunContext, control_net_name: str) -> tuple[str, int, int] | None:
        return file_identity(ctx, CONTROLNET_FOLDER, control_net_name)

    @classmethod
    def run(cls, ctx: RunContext, control_net_name: str) -> tuple[ControlModel]:
        path = ctx.services.folders.model_path(CONTROLNET_FOLDER, control_net_name)
        loaded = ctx.services.models.load(
            path, "controlnet", lambda p, device, dtype: load_control_file(p, device=device, dtype=dtype))
        return (_controlnet_value(loaded, control_net_name),)


class DiffControlNetLoader(Node):
    """Loads a ControlNet; a "diff" ControlNet (stored minus its base UNet) gets this model's weights added back."""

    description = ""
    display_name = "Load ControlNet Model (diff)"
    category = "loaders"
    model = Link("MODEL")
    control_net_name = Combo(Files(CONTROLNET_FOLDER))
    outputs = (Output("CONTROL_NET"),)

    @classmethod
    def fingerprint(cls, ctx: RunContext, control_net_name: str, **_: Any) -> tuple[str, int, int] | None:
        return file_identity(ctx, CONTROLNET_FOLDER, control_net_name)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, control_net_name: str) -> tuple[ControlModel]:
        path = ctx.services.folders.model_path(CONTROLNET_FOLDER, control_net_name)
        unet = model.unet

        def load(p: Path, device: torch.device, dtype: torch.dtype | None) -> LoadedControlNet | LoadedT2IAdapter:
            return load_control_file(p, device=device, dtype=dtype, base_unet=unet.state_dict())

        # The result depends on the base model, so it is remembered per UNet.
        loaded = ctx.services.models.load(path, f"controlnet-diff-{id(unet)}", load)
        return (_controlnet_value(loaded, control_net_name),)


def _hint(image: torch.Tensor, control_net: ControlModel, node: str) -> torch.Tensor:
    """IMAGE [B, H, W, C] -> the hint [B, C, H, W], checked against the net's hint channels."""
    if image.ndim != 4:
        raise ControlNetError(f"{node}: image must be an IMAGE batch [B, H, W, C], got shape {tuple(image.shape)}")
    hint = image.movedim(-1, 1)
    try:
        control_net.check_hint(hint)
    except ControlNetError as exc:
        raise ControlNetError(f"{node}: {exc}") from None
    return hint


def apply_control(positive: Conditioning, negative: Conditioning | None, control_net: ControlModel,
                  hint: torch.Tensor, strength: float, start_percent: float,
                  end_percent: float) -> tuple[Conditioning, Conditioning | None]:
    """ComfyUI's ControlNetApplyAdvanced: every entry gets the control chained onto the one it had; entries that
    had the same previous control share one new applied control."""
    made: dict[int, AppliedControl] = {}

    def attach(entry: CondEntry) -> CondEntry:
        previous = entry.control
        key = id(previous)
        if key not in made:
            made[key] = AppliedControl(net=control_net, hint=hint, strength=strength, start_percent=start_percent,
                                       end_percent=end_percent, previous=previous)
        return entry.replace(control=made[key], control_apply_to_uncond=False)

    return positive.map(attach), (negative.map(attach) if negative is not None else None)


class ControlNetApplyAdvanced(Node):
    """Applies a ControlNet to the positive and negative conditioning with a hint image, for part of the schedule."""

    description = ""
    display_name = "Apply ControlNet"
    category = CATEGORY
    positive = Link("CONDITIONING")
    negative = Link("CONDITIONING")
    control_net = Link("CONTROL_NET")
    image = Link("IMAGE")
    strength = Float(1.0, min=0.0, max=10.0, step=0.01)
    start_percent = Float(0.0, min=0.0, max=1.0, step=0.001)
    end_percent = Float(1.0, min=0.0, max=1.0, step=0.001)
    vae = Link("VAE", optional=True)
    outputs = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"))

    @classmethod
    def run(cls, ctx: RunContext, positive: Conditioning, negative: Conditioning, control_net: ControlModel,
            image: torch.Tensor, strength: float, start_percent: float, end_percent: float,
            vae: Vae | None = None) -> tuple[Conditioning, Conditioning]:
        # The VAE is for control models that read latents (InstantX Flux nets); the SD ControlNets read pixels.
        # Without one such a net fails when sampling uses it, as in ComfyUI.
        if strength == 0:
            return positive, negative
        if vae is not None and isinstance(control_net, FluxControlNet) and control_net.needs_vae:
            models = ctx.services.models
            control_net = control_net.with_vae(lambda pixels: encode_images(models, vae, pixels.movedim(1, -1)),
                                               vae.downscale)
        hint = _hint(image, control_net, cls.node_type)
        pos, neg = apply_control(positive, negative, control_net, hint, strength, start_percent, end_percent)
        assert neg is not None
        return pos, neg


class ControlNetApply(Node):
    """The old apply node: the control goes on the positive conditioning, and sampling also gives it to the
    negative entries that have none (control_apply_to_uncond)."""

    description = ""
    display_name = "Apply ControlNet (OLD)"
    category = CATEGORY
    deprecated = True
    conditioning = Link("CONDITIONING")
    control_net = Link("CONTROL_NET")
    image = Link("IMAGE")
    strength = Float(1.0, min=0.0, max=10.0, step=0.01)
    outputs = (Output("CONDITIONING"),)

    @classmethod
    def run(cls, ctx: RunContext, conditioning: Conditioning, control_net: ControlModel, image: torch.Tensor,
            strength: float) -> tuple[Conditioning]:
        if strength == 0:
            return (conditioning,)
        hint = _hint(image, control_net, cls.node_type)

        def attach(entry: CondEntry) -> CondEntry:
            control = AppliedControl(net=control_net, hint=hint, strength=strength, previous=entry.control)
            return entry.replace(control=control, control_apply_to_uncond=True)

        return (conditioning.map(attach),)


class SetUnionControlNetType(Node):
    """Chooses the control type a union ControlNet (ControlNet++) reads its hint as; "auto" lets it decide."""

    description = ""
    category = CATEGORY
    v3_schema = True
    control_net = Link("CONTROL_NET")
    type = Combo(UNION_TYPES)
    outputs = (Output("CONTROL_NET"),)

    @classmethod
    def run(cls, ctx: RunContext, control_net: ControlModel, type: str) -> tuple[ControlModel]:
        number = UNION_CONTROLNET_TYPES.get(type, -1)
        return (control_net.with_union_type((number,) if number >= 0 else ()),)


class ControlNetInpaintingAliMamaApply(Node):
    """Apply ControlNet for inpainting ControlNets (Alimama's): the masked area is blanked in the hint and the mask
    goes with it; with a ControlNet that takes no mask it is ControlNetApplyAdvanced."""

    description = ""
    category = CATEGORY
    v3_schema = True
    positive = Link("CONDITIONING")
    negative = Link("CONDITIONING")
    control_net = Link("CONTROL_NET")
    vae = Link("VAE")
    image = Link("IMAGE")
    mask = Link("MASK")
    strength = Float(1.0, min=0.0, max=10.0, step=0.01)
    start_percent = Float(0.0, min=0.0, max=1.0, step=0.001)
    end_percent = Float(1.0, min=0.0, max=1.0, step=0.001)
    outputs = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"))

    @classmethod
    def run(cls, ctx: RunContext, positive: Conditioning, negative: Conditioning, control_net: ControlModel,
            vae: Vae, image: torch.Tensor, mask: torch.Tensor, strength: float, start_percent: float,
            end_percent: float) -> tuple[Conditioning, Conditioning]:
        if control_net.concat_mask:
            # Only the SD3/Flux inpainting control models read the mask (their hint is blanked under it and the mask
            # concatenated); none of those load here yet.
            raise ControlNetError(f"{cls.node_type}: {control_net.name} takes an inpainting mask, which only the "
                                  "SD3/Flux control models do; they are not supported yet")
        return ControlNetApplyAdvanced.run(ctx, positive, negative, control_net, image, strength, start_percent,
                                           end_percent, vae=vae)


NODES = (ControlNetLoader, DiffControlNetLoader, ControlNetApplyAdvanced, ControlNetApply, SetUnionControlNetType,
         ControlNetInpaintingAliMamaApply)
