"""ControlNets for Flux.1 in XLabs-AI's layout (x-flux: "flux-canny-controlnet-v3", depth, hed), as ComfyUI's
``ControlNetFlux`` (comfy/ldm/flux/controlnet.py) and ``load_controlnet_flux_xlabs_mistoline`` load them.

The net is a shallow copy of the Flux transformer's trunk (img_in, time_in, vector_in, guidance_in, txt_in and a few
double blocks, here named exactly as in the file). A hint image in [0, 1] at the latent size x 8 is mapped to
[-1, 1], encoded 8x down by ``input_hint_block`` (eight 3x3 convolutions, 16 wide), cut into the same 2x2 patches as
the latent and added to the image tokens through ``pos_embed_input``. After each double block i a zero-initialised
Linear ``controlnet_blocks.i`` gives a residual for the image tokens; after each single block (XLabs files have none)
``controlnet_single_blocks.i`` does the same for the image part of the joint sequence.

As in ComfyUI, the residuals are cycled to the released Flux depths (19 double, 38 single blocks): a 2-block net
gives (c0, c1, c0, c1, ...). ``Flux.forward_tokens`` adds ``input[i]`` after its double block i and ``output[i]``
after its single block i (diffusion/flux.py).

Not loaded here (a clear UnknownCheckpoint says so): InstantX / Shakker-Labs union nets in diffusers' layout
(``controlnet_x_embedder``, ``transformer_blocks``; they read VAE-encoded hints) and TheMistoAI's MistoLine
(``controlnet_blocks.0.linear``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from diffusion.checkpoint import UnknownCheckpoint
from diffusion.controlnet import (
    HINT_COMPRESSION,
    ControlNetError,
    ControlResiduals,
    broadcast_hint,
    check_names,
    merge_residuals,
    resize_hint,
)
from diffusion.dit_layers import Linear
from diffusion.flux import (
    PATCH,
    DoubleStreamBlock,
    FluxConfig,
    FluxConfigError,
    MLPEmbedder,
    SingleStreamBlock,
    TIME_EMBED_DIM,
    patchify,
    position_embedding,
    timestep_embedding,
)
from diffusion.safetensors_io import open_tensors, read_header

if TYPE_CHECKING:
    from diffusion.controlnet import PreparedControl

Shapes = Mapping[str, tuple[int, ...]]

MAIN_DOUBLE_BLOCKS = 19
"""Double blocks of the released Flux.1 models: the double residuals are cycled to this many (ComfyUI's
main_model_double)."""
MAIN_SINGLE_BLOCKS = 38
"""Single blocks of the released models (ComfyUI's main_model_single)."""
HINT_WIDTH = 16
"""Channels of the hint encoder; its output is patched like a 16-channel latent."""
_HINT_STRIDES = (1, 1, 2, 1, 2, 1, 2, 1)  # convolutions at sequential indices 0, 2, ..., 14; SiLU between

XLABS_KEYS = ("controlnet_blocks.0.weight", "double_blocks.0.img_attn.norm.key_norm.scale")
INSTANTX_KEY = "controlnet_x_embedder.weight"
MISTOLINE_KEY = "controlnet_blocks.0.linear.weight"


@dataclass(frozen=True)
class FluxControlNetConfig:
    """A Flux ControlNet: its trunk's FluxConfig (depth = its double blocks, depth_single_blocks = its single ones;
    out_channels is unused) and the hint image's channels."""

    flux: FluxConfig
    hint_channels: int = 3


def _hint_block(hint_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, stride in enumerate(_HINT_STRIDES):
        if i:
            layers.append(nn.SiLU())
        layers.append(nn.Conv2d(hint_channels if i == 0 else HINT_WIDTH, HINT_WIDTH, 3, stride=stride, padding=1))
    return nn.Sequential(*layers)


def _cycled(residuals: tuple[Tensor, ...], length: int) -> tuple[Tensor, ...]:
    """(c0, c1) -> (c0, c1, c0, c1, ...)[:length] (ComfyUI repeats the tuple; an empty one stays empty)."""
    if not residuals:
        return ()
    return (residuals * math.ceil(length / len(residuals)))[:length]


class FluxControlNetModel(nn.Module):
    """XLabs' ControlNetFlux; ``state_dict()`` keys equal the file's."""

    def __init__(self, config: FluxControlNetConfig) -> None:
        super().__init__()
        self.config = config
        cfg = config.flux
        dim = cfg.hidden_size
        self.img_in = Linear(cfg.in_channels * PATCH * PATCH, dim)
        self.time_in = MLPEmbedder(TIME_EMBED_DIM, dim)
        self.vector_in = MLPEmbedder(cfg.vec_in_dim, dim)
        self.guidance_in = MLPEmbedder(TIME_EMBED_DIM, dim) if cfg.guidance_embed else None
        self.txt_in = Linear(cfg.context_in_dim, dim)
        self.double_blocks = nn.ModuleList(DoubleStreamBlock(cfg) for _ in range(cfg.depth))
        self.single_blocks = nn.ModuleList(SingleStreamBlock(cfg) for _ in range(cfg.depth_single_blocks))
        self.controlnet_blocks = nn.ModuleList(Linear(dim, dim) for _ in range(cfg.depth))
        self.controlnet_single_blocks = nn.ModuleList(Linear(dim, dim) for _ in range(cfg.depth_single_blocks))
        self.pos_embed_input = Linear(HINT_WIDTH * PATCH * PATCH, dim)
        self.input_hint_block = _hint_block(config.hint_channels)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype activations take (the biases')."""
        return self.img_in.bias.dtype

    def forward(self, x: Tensor, hint: Tensor, timesteps: Tensor, context: Tensor, y: Tensor,
                guidance: Tensor | None = None) -> ControlResiduals:
        """The residuals for one batch.

        Args:
            x: [B, 16, h, w] the latents as the Flux model gets them.
            hint: [B, hint_channels, 8h, 8w] the hint image in [0, 1].
            timesteps: [B] (or one) the model's timesteps (σ for Flux).
            context: [B, T, context_in_dim] T5 states.
            y: [B, vec_in_dim] pooled CLIP-L.
            guidance: [B] (or one) the guidance scale, for nets with guidance_in; None skips it.

        Returns:
            input: the double-block residuals [B, L, hidden] cycled to 19; output: the single-block ones cycled to
            38 (empty without single blocks).
        """
        cfg = self.config.flux
        dtype = self.dtype
        bs = x.shape[0]
        img, img_ids = patchify(x)
        features = self.input_hint_block(hint.to(dtype) * 2.0 - 1.0)  # (B, 16, h, w)
        img = self.img_in(img.to(dtype)) + self.pos_embed_input(patchify(features)[0])
        timesteps = timesteps.reshape(-1).float().expand(bs) if timesteps.numel() == 1 else timesteps.float()
        vec = self.time_in(timestep_embedding(timesteps).to(dtype))
        if self.guidance_in is not None and guidance is not None:
            guidance = guidance.reshape(-1).float().expand(bs) if guidance.numel() == 1 else guidance.float()
            vec = vec + self.guidance_in(timestep_embedding(guidance).to(dtype))
        vec = vec + self.vector_in(y[:, :cfg.vec_in_dim].to(dtype))
        txt = self.txt_in(context.to(dtype))
        txt_ids = torch.zeros((bs, txt.shape[1], 3), device=x.device, dtype=torch.float32)
        pe = position_embedding(torch.cat((txt_ids, img_ids), dim=1), cfg.rope_axes)

        double: list[Tensor] = []
        for block, project in zip(self.double_blocks, self.controlnet_blocks):
            img, txt = block(img, txt, vec, pe)
            double.append(project(img))
        joint = torch.cat((txt, img), dim=1)
        single: list[Tensor] = []
        for block, project in zip(self.single_blocks, self.controlnet_single_blocks):
            joint = block(joint, vec, pe)
            single.append(project(joint[:, txt.shape[1]:]))
        return ControlResiduals(input=_cycled(tuple(double), MAIN_DOUBLE_BLOCKS),
                                output=_cycled(tuple(single), MAIN_SINGLE_BLOCKS))


# ---------------------------------------------------------------------------------------------------------------
# Detection and loading


def flux_controlnet_kind(shapes: Shapes) -> str | None:
    """"xlabs", "instantx" or "mistoline" for a Flux ControlNet's tensor names (ComfyUI's dispatch in
    load_controlnet_state_dict), None for anything else."""
    if "controlnet_blocks.0.weight" in shapes:
        if all(k in shapes for k in XLABS_KEYS):
            return "xlabs"
        if INSTANTX_KEY in shapes:
            return "instantx"
    elif MISTOLINE_KEY in shapes:
        return "mistoline"
    return None


def _count(shapes: Shapes, prefix: str) -> int:
    regex = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = sorted({int(m.group(1)) for k in shapes if (m := regex.match(k))})
    return len(found) if found == list(range(len(found))) else -1


def detect_flux_controlnet(shapes: Shapes, *, path: str | os.PathLike[str]) -> FluxControlNetConfig:
    """The configuration of an XLabs-layout Flux ControlNet from names and shapes alone.

    Raises:
        UnknownCheckpoint: not a Flux ControlNet, or one in a layout not loaded here (InstantX, MistoLine).
    """
    path = Path(path)
    kind = flux_controlnet_kind(shapes)
    if kind == "instantx":
        raise UnknownCheckpoint(path, "Flux ControlNets in the InstantX / union layout (controlnet_x_embedder, "
                                      "transformer_blocks) are not supported; XLabs-layout Flux ControlNets are")
    if kind == "mistoline":
        raise UnknownCheckpoint(path, "MistoLine Flux ControlNets (controlnet_blocks.0.linear) are not supported; "
                                      "XLabs-layout Flux ControlNets are")
    if kind != "xlabs":
        raise UnknownCheckpoint(path, "not a Flux ControlNet: no controlnet_blocks.0 with double_blocks.0")

    def shape(key: str) -> tuple[int, ...]:
        if key not in shapes:
            raise UnknownCheckpoint(path, f"XLabs Flux ControlNet without {key}")
        return tuple(shapes[key])

    hidden, patch_in = shape("img_in.weight")
    head_dim = shape("double_blocks.0.img_attn.norm.query_norm.scale")[0]
    depth = _count(shapes, "double_blocks.")
    depth_single = _count(shapes, "single_blocks.")
    if depth <= 0 or depth_single < 0:
        raise UnknownCheckpoint(path, "Flux ControlNet blocks are not numbered 0..n-1")
    try:
        flux = FluxConfig(
            in_channels=patch_in // (PATCH * PATCH), out_channels=patch_in // (PATCH * PATCH), hidden_size=hidden,
            num_heads=hidden // head_dim, mlp_ratio=shape("double_blocks.0.img_mlp.0.weight")[0] / hidden,
            depth=depth, depth_single_blocks=depth_single, context_in_dim=shape("txt_in.weight")[1],
            vec_in_dim=shape("vector_in.in_layer.weight")[1], guidance_embed="guidance_in.in_layer.weight" in shapes,
            qkv_bias="double_blocks.0.img_attn.qkv.bias" in shapes)
    except FluxConfigError as exc:
        raise UnknownCheckpoint(path, f"Flux ControlNet configuration read from the shapes is invalid: {exc}") from None
    return FluxControlNetConfig(flux=flux, hint_channels=shape("input_hint_block.0.weight")[1])


def check_flux_controlnet_layout(shapes: Shapes, *, path: str | os.PathLike[str]) -> FluxControlNetConfig:
    """Detection plus the strict name-and-shape match against the module built on the meta device.

    Raises:
        UnknownCheckpoint, CheckpointMismatch (diffusion.checkpoint)
    """
    config = detect_flux_controlnet(shapes, path=path)
    with torch.device("meta"):
        module = FluxControlNetModel(config)
    check_names(module, shapes, Path(path), what="Flux ControlNet")
    return config


@dataclass(frozen=True, eq=False)
class LoadedFluxControlNet:
    """A Flux ControlNet file loaded: its module (shared by every value made from it) and configuration."""

    path: Path
    model: FluxControlNetModel
    config: FluxControlNetConfig


def load_flux_controlnet_file(path: str | os.PathLike[str], *, device: torch.device | str = "cpu",
                              dtype: torch.dtype | None = None) -> LoadedFluxControlNet:
    """Load an XLabs-layout Flux ControlNet (.safetensors).

    Args:
        device, dtype: where the module lives and its dtype (default fp32 on the CPU, the file's float dtype
            elsewhere).

    Raises:
        CheckpointFormatError, UnknownCheckpoint, CheckpointMismatch: unreadable, unknown, or not matching.
    """
    device = torch.device(device)
    header = read_header(path)
    config = check_flux_controlnet_layout(header.shapes, path=header.path)
    if dtype is None:
        floats = [t.dtype for t in header.tensors.values() if t.dtype in ("F32", "F16", "BF16")]
        code = max(set(floats), key=floats.count) if floats and device.type != "cpu" else "F32"
        dtype = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[code]
    with torch.device("meta"):
        module = FluxControlNetModel(config)
    with open_tensors(header.path) as reader:
        tensors = {key: reader.get(key).to(device=device, dtype=dtype) for key in header.shapes}
    module.load_state_dict(tensors, strict=True, assign=True)
    return LoadedFluxControlNet(header.path, module.eval().requires_grad_(False), config)


# ---------------------------------------------------------------------------------------------------------------
# The CONTROL_NET value


@dataclass(frozen=True, eq=False)
class FluxControlNet:
    """CONTROL_NET for a Flux ControlNet (the same interface as controlnet.ControlNet: AppliedControl and
    PreparedControl use it unchanged). Union types do not apply to XLabs nets; SetUnionControlNetType's choice is
    kept and ignored."""

    model: FluxControlNetModel
    name: str = ""
    owner: Any = None
    union_type: tuple[int, ...] = ()
    global_average_pooling: bool = False
    concat_mask: bool = False

    @property
    def hint_channels(self) -> int:
        return self.model.config.hint_channels

    def with_union_type(self, union_type: tuple[int, ...]) -> FluxControlNet:
        return replace(self, union_type=union_type)

    @property
    def modules(self) -> tuple[nn.Module, ...]:
        return (self.model,)

    def check_hint(self, hint: Tensor) -> None:
        if hint.shape[1] != self.hint_channels:
            raise ControlNetError(f"{self.name or 'this Flux ControlNet'} reads {self.hint_channels}-channel hint "
                                  f"images, the image has {hint.shape[1]} channels")

    def residuals(self, prepared: PreparedControl, x: Tensor, sigma: Tensor, model_inputs: Mapping[str, Any],
                  batched_number: int) -> ControlResiduals:
        """This net's residuals for one model call (ComfyUI ControlNet.get_control with extra_conds y and
        guidance): the hint at the latent size x 8, the model's input and timestep."""
        model = self.model
        cfg = model.config.flux
        context = model_inputs["context"]
        y = model_inputs.get("y")
        if context.shape[-1] != cfg.context_in_dim or y is None or x.shape[1] != cfg.in_channels:
            raise ControlNetError(
                f"{self.name or 'this Flux ControlNet'} is for a Flux model ({cfg.in_channels}-channel latents, "
                f"{cfg.context_in_dim}-wide text states and a pooled vector); this model gives {x.shape[1]}-channel "
                f"latents and {context.shape[-1]}-wide text states{'' if y is not None else ' without one'}")
        hint = prepared.cached(("flux-hint", *x.shape[-2:], x.shape[0], batched_number), lambda: broadcast_hint(
            resize_hint(prepared.applied.hint.to(x.device, torch.float32), x.shape[-2] * HINT_COMPRESSION,
                        x.shape[-1] * HINT_COMPRESSION), x.shape[0], batched_number).to(model.dtype))
        guidance = model_inputs.get("guidance")
        # ComfyUI casts the input, timestep and extra conds to the net's dtype before the call.
        own = model(prepared.sampling.calculate_input(sigma, x).to(model.dtype),
                    hint, prepared.sampling.timestep(sigma).to(model.dtype), context.to(model.dtype),
                    y.to(model.dtype), guidance=None if guidance is None else guidance.to(model.dtype))
        return merge_residuals(own, prepared.applied.strength, False, None)


__all__ = [
    "FluxControlNet", "FluxControlNetConfig", "FluxControlNetModel", "LoadedFluxControlNet",
    "check_flux_controlnet_layout", "detect_flux_controlnet", "flux_controlnet_kind", "load_flux_controlnet_file",
]
