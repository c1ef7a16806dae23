"""Models loaded in parts, as ComfyUI's templates for the flow-matching transformers do: the diffusion model
(UNETLoader), the text encoders (CLIPLoader, DualCLIPLoader, TripleCLIPLoader), and the nodes that go with them:
Flux guidance and prompts, SD3 prompts and latents, and the flow model samplings (ModelSamplingFlux / SD3 /
AuraFlow)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch

from diffusion.families import FLUX, SD1, SD3, SDXL, ModelFamily
from diffusion.flow_sampling import (
    AURAFLOW_MULTIPLIER,
    FLOW_MULTIPLIER,
    FluxSampling,
    ShiftedFlowSampling,
    flux_shift_for,
)
from diffusion.flow_text import encode_flow_prompt
from diffusion.handles import Clip, Model, TextEncoderHandle, Vae, vae_handle
from diffusion.model_files import (
    LoadedTextEncoderFile,
    load_diffusion_model,
    load_flow_checkpoint,
    load_text_encoder_file,
)
from diffusion.patches import applied_to_clip
from diffusion.previews import LatentToRGB, family_latent_rgb
from diffusion.text_encode import folder_embedding_lookup
from nodes.context import RunContext
from nodes.inputs import MAX_RESOLUTION, Combo, Files, Float, Int, Link, String
from nodes.loaders import file_identity
from nodes.registry import Node, Output
from nodes.types import Conditioning, CondEntry, Latent

FLUX_LATENT_RGB = LatentToRGB(
    ((-0.0346, 0.0244, 0.0681), (0.0034, 0.021, 0.0687), (0.0275, -0.0668, -0.0433), (-0.0174, 0.016, 0.0617),
     (0.0859, 0.0721, 0.0329), (0.0004, 0.0383, 0.0115), (0.0405, 0.0861, 0.0915), (-0.0236, -0.0185, -0.0259),
     (-0.0245, 0.025, 0.118), (0.1008, 0.0755, -0.0421), (-0.0515, 0.0201, 0.0011), (0.0428, -0.0012, -0.0036),
     (0.0817, 0.0765, 0.0749), (-0.1264, -0.0522, -0.1103), (-0.028, -0.0881, -0.0499), (-0.1262, -0.0982, -0.0778)),
    (-0.0329, -0.0718, -0.0851))
SD3_LATENT_RGB = LatentToRGB(
    ((-0.0922, -0.0175, 0.0749), (0.0311, 0.0633, 0.0954), (0.1994, 0.0927, 0.0458), (0.0856, 0.0339, 0.0902),
     (0.0587, 0.0272, -0.0496), (-0.0006, 0.1104, 0.0309), (0.0978, 0.0306, 0.0427), (-0.0042, 0.1038, 0.1358),
     (-0.0194, 0.002, 0.0669), (-0.0488, 0.013, -0.0268), (0.0922, 0.0988, 0.0951), (-0.0278, 0.0524, -0.0542),
     (0.0332, 0.0456, 0.0895), (-0.0069, -0.003, -0.081), (-0.0596, -0.0465, -0.0293), (-0.1448, -0.1463, -0.1189)),
    (0.2394, 0.2135, 0.1925))
"""ComfyUI's latent_formats.Flux / SD3 preview factors (model-space latents -> RGB)."""
LATENT_RGB = {"flux": FLUX_LATENT_RGB, "sd3": SD3_LATENT_RGB}

CLIP_TYPES = ("stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart", "cosmos",
              "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image", "flux2", "ovis")
DUAL_CLIP_TYPES = ("sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image", "hunyuan_video_15",
                   "kandinsky5", "kandinsky5_image", "ltxv", "newbie")
CLIP_FAMILIES: Mapping[str, ModelFamily] = {"stable_diffusion": SD1, "sd3": SD3, "sdxl": SDXL, "flux": FLUX}
"""The CLIP types Chisel can build; the others are listed for ComfyUI's schema and refused with a message."""


class UnsupportedClipType(ValueError):
    """A CLIP loader type or file combination Chisel has no text-encoder model for."""


# ---- loaders ---------------------------------------------------------------------------------------------------


class UNETLoader(Node):
    """Loads a diffusion model alone (Flux.1 dev / schnell, SD3.x, or an SD1.x / SD2.x / SDXL UNet) from
    models/diffusion_models (or models/unet); weight_dtype fp8 keeps the transformers' Linear weights in 8 bits
    and upcasts them layer by layer (a UNet loads in the compute dtype)."""

    description = ""
    display_name = "Load Diffusion Model"
    category = "advanced/loaders"
    unet_name = Combo(Files("diffusion_models"))
    weight_dtype = Combo(("default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"))
    outputs = (Output("MODEL"),)

    @classmethod
    def fingerprint(cls, ctx: RunContext, unet_name: str, **_: Any) -> tuple[str, int, int] | None:
        return file_identity(ctx, "diffusion_models", unet_name)

    @classmethod
    def run(cls, ctx: RunContext, unet_name: str, weight_dtype: str) -> tuple[Model]:
        path = ctx.services.folders.model_path("diffusion_models", unet_name)
        auto = getattr(ctx.services.models, "auto_dtype", False)  # on a CPU: bf16 for bf16 / fp8 Flux and SD3
        loaded = ctx.services.models.load(
            path, f"diffusion_model/{weight_dtype}",
            lambda p, device, dtype: load_diffusion_model(p, device=device, dtype=dtype, weight_dtype=weight_dtype,
                                                          auto_dtype=auto))
        name = loaded.family.name
        return (Model(unet=loaded.module, family=loaded.family, sampling=loaded.sampling,
                      latent_rgb=LATENT_RGB.get(name) or family_latent_rgb(name), name=path.name, owner=loaded),)


def _load_text_encoder(ctx: RunContext, name: str, *, cpu: bool = False) -> LoadedTextEncoderFile:
    path = ctx.services.folders.model_path("text_encoders", name)
    if cpu:  # device "cpu": on the CPU in fp32 whatever the compute device (ComfyUI's load/offload device cpu)
        return ctx.services.models.load(path, "text_encoder/cpu", lambda p, device, dtype: load_text_encoder_file(
            p, device=torch.device("cpu"), dtype=torch.float32))
    return ctx.services.models.load(path, "text_encoder",
                                    lambda p, device, dtype: load_text_encoder_file(p, device=device, dtype=dtype))


def clip_from_files(ctx: RunContext, names: Sequence[str], clip_type: str, *, device: str = "default") -> Clip:
    """A CLIP value of the type's family from separately loaded encoders (each file's kind read from its shapes);
    device "cpu" keeps them on the CPU."""
    family = CLIP_FAMILIES.get(clip_type)
    if family is None:
        raise UnsupportedClipType(f"CLIP type {clip_type!r} is not supported by Chisel yet "
                                  f"(supported: {', '.join(CLIP_FAMILIES)})")
    cpu = device == "cpu"
    loaded = [_load_text_encoder(ctx, name, cpu=cpu) for name in names]
    slots = {slot.name: slot for slot in family.text_encoders}
    by_kind: dict[str, LoadedTextEncoderFile] = {}
    for name, item in zip(names, loaded):
        if item.kind not in slots:
            raise UnsupportedClipType(f"{name} is a {item.kind} text encoder; type {clip_type!r} takes "
                                      f"{', '.join(slots)}")
        if item.kind in by_kind:
            raise UnsupportedClipType(f"{name} and {by_kind[item.kind].path.name} are both {item.kind} encoders")
        by_kind[item.kind] = item
    if family is FLUX and "t5xxl" not in by_kind:
        raise UnsupportedClipType("type flux needs a T5-XXL encoder (and CLIP-L): clip_l + t5xxl")
    encoders = tuple(TextEncoderHandle(slot, by_kind[slot.name].module)
                     for slot in family.text_encoders if slot.name in by_kind)
    t5 = by_kind.get("t5xxl")
    return Clip(encoders=encoders, tokenizer=ctx.services.models.tokenizer(), family=family,
                name=" + ".join(names), owner=tuple(loaded), t5_tokenizer=t5.tokenizer if t5 is not None else None,
                cpu_only=cpu)


def load_flow_checkpoint_handles(ctx: RunContext, path: Path) -> tuple[Model, Clip | None, Vae | None]:
    """CheckpointLoaderSimple on a single-file Flux / SD3 checkpoint: MODEL, and CLIP / VAE when the file has
    them (None otherwise, as ComfyUI)."""
    models = ctx.services.models
    auto = getattr(models, "auto_dtype", False)
    loaded = models.load(path, "flow_checkpoint",
                         lambda p, device, dtype: load_flow_checkpoint(p, device=device, dtype=dtype, auto_dtype=auto))
    family = loaded.model.family
    model = Model(unet=loaded.model.module, family=family, sampling=loaded.model.sampling,
                  latent_rgb=LATENT_RGB.get(family.name), name=path.name, owner=loaded)
    clip = None
    if loaded.text_encoders:
        t5 = loaded.text_encoders.get("t5xxl")
        encoders = tuple(TextEncoderHandle(slot, loaded.text_encoders[slot.name].module)
                         for slot in family.text_encoders if slot.name in loaded.text_encoders)
        clip = Clip(encoders=encoders, tokenizer=models.tokenizer(), family=family, name=path.name, owner=loaded,
                    t5_tokenizer=t5.tokenizer if t5 is not None else None)
    vae = vae_handle(loaded.vae, name=path.name, owner=loaded) if loaded.vae is not None else None
    return model, clip, vae


def _device_input() -> Combo:
    return Combo(("default", "cpu"), optional=True, advanced=True)


class CLIPLoader(Node):
    """Loads one text encoder from models/text_encoders (or models/clip)."""

    description = ("[Recipes]\n\nstable_diffusion: clip-l\nstable_cascade: clip-g\nsd3: t5 xxl/ clip-g / clip-l\n"
                   "stable_audio: t5 base\nmochi: t5 xxl\ncosmos: old t5 xxl\nlumina2: gemma 2 2B\nwan: umt5 xxl\n "
                   "hidream: llama-3.1 (Recommend) or t5\nomnigen2: qwen vl 2.5 3B")
    display_name = "Load CLIP"
    category = "advanced/loaders"
    clip_name = Combo(Files("text_encoders"))
    type = Combo(CLIP_TYPES)
    device = _device_input()
    outputs = (Output("CLIP"),)

    @classmethod
    def fingerprint(cls, ctx: RunContext, clip_name: str, **_: Any) -> tuple[str, int, int] | None:
        return file_identity(ctx, "text_encoders", clip_name)

    @classmethod
    def run(cls, ctx: RunContext, clip_name: str, type: str, device: str = "default") -> tuple[Clip]:
        return (clip_from_files(ctx, [clip_name], type, device=device),)


class DualCLIPLoader(Node):
    """Loads two text encoders as one CLIP (flux: clip-l + t5; sd3: two of clip-l, clip-g, t5; sdxl: clip-l +
    clip-g)."""

    description = ("[Recipes]\n\nsdxl: clip-l, clip-g\nsd3: clip-l, clip-g / clip-l, t5 / clip-g, t5\n"
                   "flux: clip-l, t5\nhidream: at least one of t5 or llama, recommended t5 and llama\n"
                   "hunyuan_image: qwen2.5vl 7b and byt5 small\nnewbie: gemma-3-4b-it, jina clip v2")
    display_name = "DualCLIPLoader"
    category = "advanced/loaders"
    clip_name1 = Combo(Files("text_encoders"))
    clip_name2 = Combo(Files("text_encoders"))
    type = Combo(DUAL_CLIP_TYPES)
    device = _device_input()
    outputs = (Output("CLIP"),)

    @classmethod
    def fingerprint(cls, ctx: RunContext, clip_name1: str, clip_name2: str, **_: Any) -> tuple[Any, ...]:
        return file_identity(ctx, "text_encoders", clip_name1), file_identity(ctx, "text_encoders", clip_name2)

    @classmethod
    def run(cls, ctx: RunContext, clip_name1: str, clip_name2: str, type: str, device: str = "default"
            ) -> tuple[Clip]:
        return (clip_from_files(ctx, [clip_name1, clip_name2], type, device=device),)


class TripleCLIPLoader(Node):
    """Loads CLIP-L, CLIP-G and T5-XXL as SD3's CLIP."""

    description = "[Recipes]\n\nsd3: clip-l, clip-g, t5"
    category = "advanced/loaders"
    v3_schema = True
    clip_name1 = Combo(Files("text_encoders"))
    clip_name2 = Combo(Files("text_encoders"))
    clip_name3 = Combo(Files("text_encoders"))
    outputs = (Output("CLIP"),)

    @classmethod
    def fingerprint(cls, ctx: RunContext, clip_name1: str, clip_name2: str, clip_name3: str) -> tuple[Any, ...]:
        return tuple(file_identity(ctx, "text_encoders", n) for n in (clip_name1, clip_name2, clip_name3))

    @classmethod
    def run(cls, ctx: RunContext, clip_name1: str, clip_name2: str, clip_name3: str) -> tuple[Clip]:
        return (clip_from_files(ctx, [clip_name1, clip_name2, clip_name3], "sd3"),)


class T5TokenizerOptions(Node):
    """Sets T5's minimum padding and length (0: the model's default: 256 tokens for Flux, 77 for SD3)."""

    description = ""
    category = "_for_testing/conditioning"
    v3_schema = True
    experimental = True
    clip = Link("CLIP")
    min_padding = Int(0, min=0, max=10000, step=1)
    min_length = Int(0, min=0, max=10000, step=1)
    outputs = (Output("CLIP"),)

    @classmethod
    def run(cls, ctx: RunContext, clip: Clip, min_padding: int, min_length: int) -> tuple[Clip]:
        options = {"t5xxl_min_padding": min_padding}
        if min_length > 0:
            options["t5xxl_min_length"] = min_length
        return (dataclasses.replace(clip, tokenizer_options=tuple(options.items())),)


# ---- prompts and guidance ---------------------------------------------------------------------------------------


def encode_flow(ctx: RunContext, clip: Clip, texts: Mapping[str, str], *, empty_padding: bool = True
                ) -> Conditioning:
    """Per-encoder prompts through a Flux / SD3 CLIP value -> CONDITIONING (T5 states + pooled CLIP)."""
    models = ctx.services.models
    lookup = folder_embedding_lookup(ctx.services.folders.search_dirs("embeddings"))
    with torch.inference_mode(), ExitStack() as stack:
        if not clip.cpu_only:
            stack.enter_context(models.on_device(*clip.modules))
        stack.enter_context(applied_to_clip(clip))
        encoded = encode_flow_prompt(
            clip.family, texts, encoders=[(e.slot, e.module) for e in clip.encoders], clip_tokenizer=clip.tokenizer,
            t5_tokenizer=clip.t5_tokenizer, stop_at_clip_layer=clip.stop_at_clip_layer, embedding_lookup=lookup,
            tokenizer_options=dict(clip.tokenizer_options), empty_padding=empty_padding)
    return Conditioning((CondEntry(cross_attn=encoded.cond, pooled=encoded.pooled),))


def _prompt(**kw: Any) -> String:
    return String(None, multiline=True, dynamic_prompts=True, **kw)


class CLIPTextEncodeFlux(Node):
    """Encodes Flux's two prompts (CLIP-L for the pooled vector, T5-XXL for the context) with a guidance scale."""

    description = ""
    category = "advanced/conditioning/flux"
    v3_schema = True
    clip = Link("CLIP")
    clip_l = _prompt()
    t5xxl = _prompt()
    guidance = Float(3.5, min=0.0, max=100.0, step=0.1)
    outputs = (Output("CONDITIONING"),)

    @classmethod
    def run(cls, ctx: RunContext, clip: Clip, clip_l: str, t5xxl: str, guidance: float) -> tuple[Conditioning]:
        return (encode_flow(ctx, clip, {"clip_l": clip_l, "t5xxl": t5xxl}).with_extra(guidance=guidance),)


class FluxGuidance(Node):
    """Sets the guidance scale Flux dev is conditioned on (its distilled CFG; KSampler's cfg stays 1)."""

    description = ""
    category = "advanced/conditioning/flux"
    v3_schema = True
    conditioning = Link("CONDITIONING")
    guidance = Float(3.5, min=0.0, max=100.0, step=0.1)
    outputs = (Output("CONDITIONING"),)

    @classmethod
    def run(cls, ctx: RunContext, conditioning: Conditioning, guidance: float) -> tuple[Conditioning]:
        return (conditioning.with_extra(guidance=guidance),)


class FluxDisableGuidance(Node):
    """Leaves the guidance embedding out entirely."""

    description = "This node completely disables the guidance embed on Flux and Flux like models"
    category = "advanced/conditioning/flux"
    v3_schema = True
    conditioning = Link("CONDITIONING")
    outputs = (Output("CONDITIONING"),)

    @classmethod
    def run(cls, ctx: RunContext, conditioning: Conditioning) -> tuple[Conditioning]:
        return (conditioning.with_extra(guidance=None),)


class CLIPTextEncodeSD3(Node):
    """Encodes SD3's three prompts; empty_padding "none" leaves an empty prompt's encoder out."""

    description = ""
    category = "advanced/conditioning"
    v3_schema = True
    clip = Link("CLIP")
    clip_l = _prompt()
    clip_g = _prompt()
    t5xxl = _prompt()
    empty_padding = Combo(("none", "empty_prompt"))
    outputs = (Output("CONDITIONING"),)

    @classmethod
    def run(cls, ctx: RunContext, clip: Clip, clip_l: str, clip_g: str, t5xxl: str, empty_padding: str
            ) -> tuple[Conditioning]:
        texts = {"clip_l": clip_l, "clip_g": clip_g, "t5xxl": t5xxl}
        return (encode_flow(ctx, clip, texts, empty_padding=empty_padding != "none"),)


class EmptySD3LatentImage(Node):
    """An all-zero 16-channel latent (SD3, Flux) of width/8 × height/8."""

    description = ""
    category = "latent/sd3"
    v3_schema = True
    width = Int(1024, min=16, max=MAX_RESOLUTION, step=16)
    height = Int(1024, min=16, max=MAX_RESOLUTION, step=16)
    batch_size = Int(1, min=1, max=4096)
    outputs = (Output("LATENT"),)

    @classmethod
    def run(cls, ctx: RunContext, width: int, height: int, batch_size: int) -> tuple[Latent]:
        return (Latent(samples=torch.zeros([batch_size, 16, height // 8, width // 8])),)


# ---- model sampling ---------------------------------------------------------------------------------------------


class ModelSamplingFlux(Node):
    """Flux's resolution-dependent shift: μ from base_shift at 256 latent tokens to max_shift at 4096."""

    description = ""
    display_name = "ModelSamplingFlux"
    category = "advanced/model"
    model = Link("MODEL")
    max_shift = Float(1.15, min=0.0, max=100.0, step=0.01)
    base_shift = Float(0.5, min=0.0, max=100.0, step=0.01)
    width = Int(1024, min=16, max=MAX_RESOLUTION, step=8)
    height = Int(1024, min=16, max=MAX_RESOLUTION, step=8)
    outputs = (Output("MODEL"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, max_shift: float, base_shift: float, width: int, height: int
            ) -> tuple[Model]:
        shift = flux_shift_for(width, height, max_shift=max_shift, base_shift=base_shift)
        return (dataclasses.replace(model, sampling=FluxSampling(shift=shift)),)


class ModelSamplingSD3(Node):
    """The rectified-flow table with SD3's timestep shift (σ = shift·t / (1 + (shift − 1)·t))."""

    description = ""
    display_name = "ModelSamplingSD3"
    category = "advanced/model"
    model = Link("MODEL")
    shift = Float(3.0, min=0.0, max=100.0, step=0.01)
    outputs = (Output("MODEL"),)
    multiplier = FLOW_MULTIPLIER

    @classmethod
    def run(cls, ctx: RunContext, model: Model, shift: float) -> tuple[Model]:
        return (dataclasses.replace(model, sampling=ShiftedFlowSampling(shift=shift, multiplier=cls.multiplier)),)


class ModelSamplingAuraFlow(ModelSamplingSD3):
    """ModelSamplingSD3 with timestep = σ (multiplier 1), as AuraFlow was trained."""

    display_name = "ModelSamplingAuraFlow"
    shift = Float(1.73, min=0.0, max=100.0, step=0.01)
    multiplier = AURAFLOW_MULTIPLIER


FLUX_MERGE_BLOCKS = ("img_in.", "time_in.", "guidance_in", "vector_in.", "txt_in.",
                     *(f"double_blocks.{i}." for i in range(19)), *(f"single_blocks.{i}." for i in range(38)),
                     "final_layer.")
"""ModelMergeFlux1's ratio inputs: parameter-name prefixes of the Flux.1 transformer (dev's 19 + 38 blocks)."""


def _merge_flux(cls: type, ctx: RunContext, model1: Model, model2: Model, **ratios: float) -> tuple[Model]:
    """ModelMergeBlocks over Flux's parts: each weight takes the ratio of the longest prefix it starts with."""
    from diffusion import model_merge

    return (model_merge.merge_models(model1, model2, model_merge.by_block(ratios)),)


# The inputs are named like the parameters ("double_blocks.0."), which no class body can spell: built with type().
ModelMergeFlux1 = type("ModelMergeFlux1", (Node,), {
    "__doc__": "Merges two Flux.1 models with a ratio per part (embedders, each double and single block, final).",
    "__module__": __name__,
    "description": "",
    "display_name": "ModelMergeFlux1",
    "category": "advanced/model_merging/model_specific",
    "model1": Link("MODEL"),
    "model2": Link("MODEL"),
    **{name: Float(1.0, min=0.0, max=1.0, step=0.01) for name in FLUX_MERGE_BLOCKS},
    "outputs": (Output("MODEL"),),
    "run": classmethod(_merge_flux),
})


NODES = (UNETLoader, CLIPLoader, DualCLIPLoader, TripleCLIPLoader, T5TokenizerOptions, CLIPTextEncodeFlux,
         FluxGuidance, FluxDisableGuidance, CLIPTextEncodeSD3, EmptySD3LatentImage, ModelSamplingFlux,
         ModelSamplingSD3, ModelSamplingAuraFlow, ModelMergeFlux1)
