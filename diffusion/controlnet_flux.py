"""ControlNets for Flux.1 in XLabs-AI's layout (x-flux: "flux-canny-controlnet-v3", depth, hed) and in InstantX's /
Shakker-Labs' diffusers layout (FLUX.1-dev-Controlnet-Canny, -Union, -Union-Pro), as ComfyUI's ``ControlNetFlux``
(comfy/ldm/flux/controlnet.py), ``load_controlnet_flux_xlabs_mistoline`` and ``load_controlnet_flux_instantx`` load
them.

The net is a shallow copy of the Flux transformer's trunk (img_in, time_in, vector_in, guidance_in, txt_in and a few
double blocks, here named exactly as in the file). A hint image in [0, 1] at the latent size x 8 is mapped to
[-1, 1], encoded 8x down by ``input_hint_block`` (eight 3x3 convolutions, 16 wide), cut into the same 2x2 patches as
the latent and added to the image tokens through ``pos_embed_input``. After each double block i a zero-initialised
Linear ``controlnet_blocks.i`` gives a residual for the image tokens; after each single block (XLabs files have none)
``controlnet_single_blocks.i`` does the same for the image part of the joint sequence.

InstantX nets (diffusers' FluxControlNetModel: ``controlnet_x_embedder``, ``transformer_blocks.N``,
``single_transformer_blocks.N``, ...) are renamed to the same trunk (ComfyUI's flux_to_diffusers read backwards: q, k
and v, and the single blocks' MLP input, are concatenated into the fused layers). They read a *latent* hint
(``latent_input``): the hint image at the latent size x 8 is encoded by the VAE given to the apply node, taken into
the Flux latent space ((raw - 0.1159) x 0.3611) and patched straight into ``pos_embed_input`` (diffusers'
controlnet_x_embedder). Union nets (``controlnet_mode_embedder``) prepend the embedding of SetUnionControlNetType's
mode to the text tokens; "auto" prepends nothing, as in ComfyUI.

As in ComfyUI, the residuals are spread over the released Flux depths (19 double, 38 single blocks): XLabs' are
cycled, a 2-block net gives (c0, c1, c0, c1, ...); InstantX's are repeated in place, (c0, c0, ..., c1, c1, ...), as
diffusers' FluxTransformer2DModel uses them. ``Flux.forward_tokens`` adds ``input[i]`` after its double block i and
``output[i]`` after its single block i (diffusion/flux.py).

Not loaded here (a clear UnknownCheckpoint says so): TheMistoAI's MistoLine (``controlnet_blocks.0.linear``), and
InstantX-layout inpainting nets whose hint has a mask channel (17 latent channels).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
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
    count_blocks,
    merge_residuals,
    resize_hint,
)
from diffusion.dit_layers import Linear
from diffusion.families import FLUX
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
HintEncoder = Callable[[Tensor], Tensor]
"""Hint images [B, 3, H, W] in [0, 1] -> raw VAE latents [B, C, H/f, W/f] (the apply node's VAE)."""

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
    out_channels is unused) and the hint image's channels.

    latent_input  InstantX nets: the hint is a VAE-encoded latent (in_channels wide) fed to pos_embed_input as is
    union_modes   rows of controlnet_mode_embedder (InstantX union nets), 0 for none
    """

    flux: FluxConfig
    hint_channels: int = 3
    latent_input: bool = False
    union_modes: int = 0


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


def _repeated(residuals: tuple[Tensor, ...], length: int) -> tuple[Tensor, ...]:
    """(c0, c1) -> (c0, c0, ..., c1, c1, ...)[:length]: each ⌈length/n⌉ times (ComfyUI's latent_input nets)."""
    if not residuals:
        return ()
    times = math.ceil(length / len(residuals))
    return tuple(r for r in residuals for _ in range(times))[:length]


class FluxControlNetModel(nn.Module):
    """ComfyUI's ControlNetFlux; ``state_dict()`` keys equal an XLabs file's (InstantX files are renamed to them)."""

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
        hint_width = cfg.in_channels if config.latent_input else HINT_WIDTH
        self.pos_embed_input = Linear(hint_width * PATCH * PATCH, dim)
        self.input_hint_block = None if config.latent_input else _hint_block(config.hint_channels)
        self.controlnet_mode_embedder = nn.Embedding(config.union_modes, dim) if config.union_modes else None

    @property
    def dtype(self) -> torch.dtype:
        """The dtype activations take (the biases')."""
        return self.img_in.bias.dtype

    def forward(self, x: Tensor, hint: Tensor, timesteps: Tensor, context: Tensor, y: Tensor,
                guidance: Tensor | None = None, control_type: tuple[int, ...] = ()) -> ControlResiduals:
        """The residuals for one batch.

        Args:
            x: [B, 16, h, w] the latents as the Flux model gets them.
            hint: [B, hint_channels, 8h, 8w] the hint image in [0, 1]; latent_input nets: [B, in_channels, h, w]
                the hint's latent in the Flux latent space.
            timesteps: [B] (or one) the model's timesteps (σ for Flux).
            context: [B, T, context_in_dim] T5 states.
            y: [B, vec_in_dim] pooled CLIP-L.
            guidance: [B] (or one) the guidance scale, for nets with guidance_in; None skips it.
            control_type: union nets: the modes whose embeddings go before the text tokens (empty: none).

        Returns:
            input: the double-block residuals [B, L, hidden] spread over 19; output: the single-block ones over 38
            (empty without single blocks).
        """
        cfg = self.config.flux
        dtype = self.dtype
        bs = x.shape[0]
        img, img_ids = patchify(x)
        if self.input_hint_block is not None:
            features = self.input_hint_block(hint.to(dtype) * 2.0 - 1.0)  # (B, 16, h, w)
        else:
            features = hint.to(dtype)
        img = self.img_in(img.to(dtype)) + self.pos_embed_input(patchify(features)[0])
        timesteps = timesteps.reshape(-1).float().expand(bs) if timesteps.numel() == 1 else timesteps.float()
        vec = self.time_in(timestep_embedding(timesteps).to(dtype))
        if self.guidance_in is not None and guidance is not None:
            guidance = guidance.reshape(-1).float().expand(bs) if guidance.numel() == 1 else guidance.float()
            vec = vec + self.guidance_in(timestep_embedding(guidance).to(dtype))
        vec = vec + self.vector_in(y[:, :cfg.vec_in_dim].to(dtype))
        txt = self.txt_in(context.to(dtype))
        if self.controlnet_mode_embedder is not None and control_type:
            modes = self.controlnet_mode_embedder.num_embeddings
            if max(control_type) >= modes or min(control_type) < 0:
                raise ControlNetError(f"union control type {max(control_type)} is out of range: this Flux "
                                      f"ControlNet knows {modes} modes")
            mode = self.controlnet_mode_embedder(torch.tensor(control_type, device=x.device)).to(dtype)
            txt = torch.cat((mode.unsqueeze(0).expand(bs, -1, -1), txt), dim=1)
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
        spread = _repeated if self.config.latent_input else _cycled
        return ControlResiduals(input=spread(tuple(double), MAIN_DOUBLE_BLOCKS),
                                output=spread(tuple(single), MAIN_SINGLE_BLOCKS))


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


def instantx_names(shapes: Shapes) -> dict[str, tuple[str, ...]]:
    """Our tensor names -> the diffusers tensors of an InstantX-layout file each is made of (concatenated along the
    rows, in order): ComfyUI's flux_to_diffusers read backwards. The ControlNet's own layers (controlnet_blocks,
    controlnet_single_blocks, controlnet_mode_embedder) have the same names in both layouts and are not listed."""
    names: dict[str, tuple[str, ...]] = {}

    def linear(ours: str, *theirs: str) -> None:
        for suffix in ("weight", "bias"):
            names[f"{ours}.{suffix}"] = tuple(f"{t}.{suffix}" for t in theirs)

    def norm(ours: str, theirs: str) -> None:
        names[f"{ours}.scale"] = (f"{theirs}.weight",)

    for i in range(max(count_blocks(shapes, "transformer_blocks."), 0)):
        d, b = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        linear(b + "img_attn.qkv", *(d + f"attn.to_{p}" for p in "qkv"))
        linear(b + "txt_attn.qkv", *(d + f"attn.add_{p}_proj" for p in "qkv"))
        for ours, theirs in (("img_attn.proj", "attn.to_out.0"), ("txt_attn.proj", "attn.to_add_out"),
                             ("img_mod.lin", "norm1.linear"), ("txt_mod.lin", "norm1_context.linear"),
                             ("img_mlp.0", "ff.net.0.proj"), ("img_mlp.2", "ff.net.2"),
                             ("txt_mlp.0", "ff_context.net.0.proj"), ("txt_mlp.2", "ff_context.net.2")):
            linear(b + ours, d + theirs)
        for ours, theirs in (("img_attn.norm.query_norm", "attn.norm_q"), ("img_attn.norm.key_norm", "attn.norm_k"),
                             ("txt_attn.norm.query_norm", "attn.norm_added_q"),
                             ("txt_attn.norm.key_norm", "attn.norm_added_k")):
            norm(b + ours, d + theirs)
    for i in range(max(count_blocks(shapes, "single_transformer_blocks."), 0)):
        d, b = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        linear(b + "linear1", *(d + f"attn.to_{p}" for p in "qkv"), d + "proj_mlp")
        linear(b + "linear2", d + "proj_out")
        linear(b + "modulation.lin", d + "norm.linear")
        norm(b + "norm.query_norm", d + "attn.norm_q")
        norm(b + "norm.key_norm", d + "attn.norm_k")
    for ours, theirs in (("img_in", "x_embedder"), ("txt_in", "context_embedder"),
                         ("pos_embed_input", "controlnet_x_embedder"),
                         ("time_in.in_layer", "time_text_embed.timestep_embedder.linear_1"),
                         ("time_in.out_layer", "time_text_embed.timestep_embedder.linear_2"),
                         ("guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1"),
                         ("guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2"),
                         ("vector_in.in_layer", "time_text_embed.text_embedder.linear_1"),
                         ("vector_in.out_layer", "time_text_embed.text_embedder.linear_2")):
        linear(ours, theirs)
    return names


def renamed_instantx(shapes: Shapes) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[str, ...]]]:
    """An InstantX file's shapes under our names, and where each of our tensors comes from. A tensor not in the
    table (the ControlNet's own layers, or a stray one) keeps its name, so the layout check names strays."""
    sources: dict[str, tuple[str, ...]] = {}
    used: set[str] = set()
    for ours, theirs in instantx_names(shapes).items():
        if all(t in shapes for t in theirs):
            sources[ours] = theirs
            used.update(theirs)
    for key in shapes:
        if key not in used:
            sources[key] = (key,)
    renamed = {ours: (sum(shapes[t][0] for t in theirs), *shapes[theirs[0]][1:]) for ours, theirs in sources.items()}
    return renamed, sources


def _trunk(shapes: Shapes, path: Path, what: str) -> FluxConfig:
    """The trunk's FluxConfig from our tensor names and shapes."""

    def shape(key: str) -> tuple[int, ...]:
        if key not in shapes:
            raise UnknownCheckpoint(path, f"{what} Flux ControlNet without {key}")
        return tuple(shapes[key])

    hidden, patch_in = shape("img_in.weight")
    head_dim = shape("double_blocks.0.img_attn.norm.query_norm.scale")[0]
    depth = count_blocks(shapes, "double_blocks.")
    depth_single = count_blocks(shapes, "single_blocks.")
    if depth <= 0 or depth_single < 0:
        raise UnknownCheckpoint(path, "Flux ControlNet blocks are not numbered 0..n-1")
    try:
        return FluxConfig(
            in_channels=patch_in // (PATCH * PATCH), out_channels=patch_in // (PATCH * PATCH), hidden_size=hidden,
            num_heads=hidden // head_dim, mlp_ratio=shape("double_blocks.0.img_mlp.0.weight")[0] / hidden,
            depth=depth, depth_single_blocks=depth_single, context_in_dim=shape("txt_in.weight")[1],
            vec_in_dim=shape("vector_in.in_layer.weight")[1], guidance_embed="guidance_in.in_layer.weight" in shapes,
            qkv_bias="double_blocks.0.img_attn.qkv.bias" in shapes)
    except FluxConfigError as exc:
        raise UnknownCheckpoint(path, f"Flux ControlNet configuration read from the shapes is invalid: {exc}") from None


def detect_flux_controlnet(shapes: Shapes, *, path: str | os.PathLike[str]) -> FluxControlNetConfig:
    """The configuration of a Flux ControlNet from the file's tensor names and shapes alone.

    Raises:
        UnknownCheckpoint: not a Flux ControlNet, or one in a layout not loaded here (MistoLine, InstantX
            inpainting).
    """
    path = Path(path)
    kind = flux_controlnet_kind(shapes)
    if kind == "mistoline":
        raise UnknownCheckpoint(path, "MistoLine Flux ControlNets (controlnet_blocks.0.linear) are not supported; "
                                      "XLabs- and InstantX-layout Flux ControlNets are")
    if kind == "instantx":
        shapes = renamed_instantx(shapes)[0]
        flux = _trunk(shapes, path, "InstantX")
        if "pos_embed_input.weight" not in shapes:
            raise UnknownCheckpoint(path, "InstantX Flux ControlNet without controlnet_x_embedder.weight")
        hint_width = shapes["pos_embed_input.weight"][1] // (PATCH * PATCH)
        if hint_width != flux.in_channels:
            raise UnknownCheckpoint(path, f"InstantX Flux ControlNets with a {hint_width}-channel latent hint "
                                          f"(inpainting nets with a mask channel) are not supported; those with a "
                                          f"{flux.in_channels}-channel one are")
        modes = shapes.get("controlnet_mode_embedder.weight", (0,))[0]
        return FluxControlNetConfig(flux=flux, latent_input=True, union_modes=modes)
    if kind != "xlabs":
        raise UnknownCheckpoint(path, "not a Flux ControlNet: no controlnet_blocks.0 with double_blocks.0")
    flux = _trunk(shapes, path, "XLabs")
    if "input_hint_block.0.weight" not in shapes:
        raise UnknownCheckpoint(path, "XLabs Flux ControlNet without input_hint_block.0.weight")
    return FluxControlNetConfig(flux=flux, hint_channels=shapes["input_hint_block.0.weight"][1])


def check_flux_controlnet_layout(shapes: Shapes, *, path: str | os.PathLike[str]) -> FluxControlNetConfig:
    """Detection plus the strict name-and-shape match against the module built on the meta device.

    Raises:
        UnknownCheckpoint, CheckpointMismatch (diffusion.checkpoint)
    """
    config = detect_flux_controlnet(shapes, path=path)
    if config.latent_input:
        shapes = renamed_instantx(shapes)[0]
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
    """Load a Flux ControlNet (.safetensors) in XLabs' or InstantX's layout.

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
    if config.latent_input:
        sources = renamed_instantx(header.shapes)[1]
    else:
        sources = {key: (key,) for key in header.shapes}
    with open_tensors(header.path) as reader:
        tensors = {ours: torch.cat([reader.get(t) for t in theirs]).to(device=device, dtype=dtype)
                   if len(theirs) > 1 else reader.get(theirs[0]).to(device=device, dtype=dtype)
                   for ours, theirs in sources.items()}
    module.load_state_dict(tensors, strict=True, assign=True)
    return LoadedFluxControlNet(header.path, module.eval().requires_grad_(False), config)


# ---------------------------------------------------------------------------------------------------------------
# The CONTROL_NET value


@dataclass(frozen=True, eq=False)
class FluxControlNet:
    """CONTROL_NET for a Flux ControlNet (the same interface as controlnet.ControlNet: AppliedControl and
    PreparedControl use it unchanged). Union types apply to InstantX union nets only; other nets keep
    SetUnionControlNetType's choice and ignore it.

    encode_hint / vae_downscale  the apply node's VAE, for nets that read a latent hint (ComfyUI's ControlNet.vae
                                 with latent_format Flux); None until a VAE is given
    """

    model: FluxControlNetModel
    name: str = ""
    owner: Any = None
    union_type: tuple[int, ...] = ()
    global_average_pooling: bool = False
    concat_mask: bool = False
    encode_hint: HintEncoder | None = None
    vae_downscale: int = HINT_COMPRESSION

    @property
    def needs_vae(self) -> bool:
        """The hint is VAE-encoded (InstantX nets)."""
        return self.model.config.latent_input

    def with_vae(self, encode_hint: HintEncoder, downscale: int) -> FluxControlNet:
        return replace(self, encode_hint=encode_hint, vae_downscale=downscale)

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
        if model.config.latent_input:
            hint = prepared.cached(("flux-latent-hint", *x.shape[-2:], x.shape[0], batched_number),
                                   lambda: self._latent_hint(prepared.applied.hint, x, batched_number))
        else:
            hint = prepared.cached(("flux-hint", *x.shape[-2:], x.shape[0], batched_number), lambda: broadcast_hint(
                resize_hint(prepared.applied.hint.to(x.device, torch.float32), x.shape[-2] * HINT_COMPRESSION,
                            x.shape[-1] * HINT_COMPRESSION), x.shape[0], batched_number).to(model.dtype))
        guidance = model_inputs.get("guidance")
        # ComfyUI casts the input, timestep and extra conds to the net's dtype before the call.
        own = model(prepared.sampling.calculate_input(sigma, x).to(model.dtype),
                    hint, prepared.sampling.timestep(sigma).to(model.dtype), context.to(model.dtype),
                    y.to(model.dtype), guidance=None if guidance is None else guidance.to(model.dtype),
                    control_type=self.union_type if model.config.union_modes else ())
        return merge_residuals(own, prepared.applied.strength, False, None)

    def _latent_hint(self, image: Tensor, x: Tensor, batched_number: int) -> Tensor:
        """The hint image at the latent size x the VAE's downscale, encoded, in the Flux latent space, batched as
        the call (ComfyUI's get_control with a vae and latent_format)."""
        if self.encode_hint is None:
            raise ControlNetError(f"{self.name or 'this Flux ControlNet'} reads VAE-encoded hints but no VAE was "
                                  "given: connect a VAE to the vae input of the Apply ControlNet node")
        f = self.vae_downscale
        pixels = resize_hint(image.to(torch.float32), x.shape[-2] * f, x.shape[-1] * f)
        raw = self.encode_hint(pixels).to(x.device, torch.float32)
        latent = (raw - FLUX.latent_shift_factor) * FLUX.latent_scale_factor
        return broadcast_hint(latent, x.shape[0], batched_number).to(self.model.dtype)


__all__ = [
    "FluxControlNet", "FluxControlNetConfig", "FluxControlNetModel", "LoadedFluxControlNet",
    "check_flux_controlnet_layout", "detect_flux_controlnet", "flux_controlnet_kind", "instantx_names",
    "load_flux_controlnet_file", "renamed_instantx",
]
