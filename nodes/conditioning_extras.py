"""More conditioning nodes: SDXL's size/crop and refiner aesthetic-score encodes (ComfyUI's nodes_clip_sdxl.py), the
ControlNet text encode (nodes_cond.py), token concatenation, area strength, and the inpainting / InstructPix2Pix
conditionings whose images the UNet of such a checkpoint takes as extra input channels (diffusion/concat_cond.py)."""

from __future__ import annotations

import logging
from contextlib import ExitStack

import torch
import torch.nn.functional as F

from diffusion.concat_cond import CONCAT_LATENT_IMAGE, CONCAT_MASK
from diffusion.handles import Clip, Vae
from diffusion.patches import applied_to_clip
from diffusion.prompt_weights import Chunk
from diffusion.text_encode import encode_tokens, folder_embedding_lookup, tokenize_prompt
from nodes.conditioning import encode_prompt
from nodes.context import RunContext
from nodes.inputs import MAX_RESOLUTION, Boolean, Float, Int, Link, String
from nodes.registry import Node, Output
from nodes.types import CondEntry, Conditioning, Latent
from nodes.vae_ops import encode_images

log = logging.getLogger(__name__)


class ConditioningError(ValueError):
    """Inputs a conditioning node cannot use (e.g. an SDXL encode with a CLIP that has no clip_g)."""


def encode_sdxl(ctx: RunContext, clip: Clip, text_g: str, text_l: str) -> CondEntry:
    """clip_g encodes text_g and clip_l text_l; the shorter is padded with empty-prompt chunks to the same length
    (ComfyUI's CLIPTextEncodeSDXL)."""
    slots = {e.slot.name for e in clip.encoders}
    if not {"clip_l", "clip_g"} <= slots:
        raise ConditioningError(f"CLIPTextEncodeSDXL needs a CLIP with clip_l and clip_g (SDXL's); "
                                f"{clip.name or 'this CLIP'} has {sorted(slots)}")
    encoders = [(e.slot, e.module) for e in clip.encoders]
    lookup = folder_embedding_lookup(ctx.services.folders.search_dirs("embeddings"))

    def tokens(text: str) -> dict[str, tuple[Chunk, ...]]:
        return tokenize_prompt(text, encoders=encoders, tokenizer=clip.tokenizer, embedding_lookup=lookup)

    chunks = {"clip_g": tokens(text_g)["clip_g"], "clip_l": tokens(text_l)["clip_l"]}
    if len(chunks["clip_l"]) != len(chunks["clip_g"]):
        empty = tokens("")
        longest = max(len(chunks["clip_l"]), len(chunks["clip_g"]))
        for key in chunks:
            chunks[key] = chunks[key] + empty[key] * (longest - len(chunks[key]))
    models = ctx.services.models
    with torch.inference_mode(), ExitStack() as stack:
        stack.enter_context(models.on_device(*clip.modules))
        stack.enter_context(applied_to_clip(clip))
        encoded = encode_tokens(chunks, encoders=encoders,  # type: ignore[arg-type]
                                stop_at_clip_layer=clip.stop_at_clip_layer)
    return CondEntry(cross_attn=encoded.cond, pooled=encoded.pooled)


class CLIPTextEncodeSDXL(Node):
    """Encodes SDXL prompts (clip_g and clip_l separately) with the size and crop conditioning."""

    category = "advanced/conditioning"
    v3_schema = True
    clip = Link("CLIP")
    width = Int(1024, min=0, max=MAX_RESOLUTION)
    height = Int(1024, min=0, max=MAX_RESOLUTION)
    crop_w = Int(0, min=0, max=MAX_RESOLUTION)
    crop_h = Int(0, min=0, max=MAX_RESOLUTION)
    target_width = Int(1024, min=0, max=MAX_RESOLUTION)
    target_height = Int(1024, min=0, max=MAX_RESOLUTION)
    text_g = String(None, multiline=True, dynamic_prompts=True)
    text_l = String(None, multiline=True, dynamic_prompts=True)
    outputs = (Output("CONDITIONING"),)
    description = ""

    @classmethod
    def run(cls, ctx: RunContext, clip: Clip, width: int, height: int, crop_w: int, crop_h: int, target_width: int,
            target_height: int, text_g: str, text_l: str) -> tuple[Conditioning]:
        entry = encode_sdxl(ctx, clip, text_g, text_l)
        extra = {"width": width, "height": height, "crop_w": crop_w, "crop_h": crop_h, "target_width": target_width,
                 "target_height": target_height}
        return (Conditioning((entry.replace(extra=extra),)),)


class CLIPTextEncodeSDXLRefiner(Node):
    """Encodes a prompt for the SDXL refiner with its aesthetic score and size conditioning."""

    category = "advanced/conditioning"
    v3_schema = True
    ascore = Float(6.0, min=0.0, max=1000.0, step=0.01)
    width = Int(1024, min=0, max=MAX_RESOLUTION)
    height = Int(1024, min=0, max=MAX_RESOLUTION)
    text = String(None, multiline=True, dynamic_prompts=True)
    clip = Link("CLIP")
    outputs = (Output("CONDITIONING"),)
    description = ""

    @classmethod
    def run(cls, ctx: RunContext, ascore: float, width: int, height: int, text: str,
            clip: Clip) -> tuple[Conditioning]:
        return (encode_prompt(ctx, clip, text).with_extra(aesthetic_score=ascore, width=width, height=height),)


class CLIPTextEncodeControlnet(Node):
    """Adds a separate text embedding for ControlNets that take their own cross-attention input."""

    category = "_for_testing/conditioning"
    v3_schema = True
    experimental = True
    clip = Link("CLIP")
    conditioning = Link("CONDITIONING")
    text = String(None, multiline=True, dynamic_prompts=True)
    outputs = (Output("CONDITIONING"),)
    description = ""

    @classmethod
    def run(cls, ctx: RunContext, clip: Clip, conditioning: Conditioning, text: str) -> tuple[Conditioning]:
        encoded = encode_prompt(ctx, clip, text).entries[0]
        return (conditioning.with_extra(cross_attn_controlnet=encoded.cross_attn,
                                        pooled_output_controlnet=encoded.pooled),)


class ConditioningConcat(Node):
    """Appends the tokens of conditioning_from (its first entry) to every entry of conditioning_to."""

    description = ""
    display_name = "Conditioning (Concat)"
    category = "conditioning"
    conditioning_to = Link("CONDITIONING")
    conditioning_from = Link("CONDITIONING")
    outputs = (Output("CONDITIONING"),)

    @classmethod
    def run(cls, ctx: RunContext, conditioning_to: Conditioning,
            conditioning_from: Conditioning) -> tuple[Conditioning]:
        if len(conditioning_from) > 1:
            log.warning("ConditioningConcat: conditioning_from has %d entries; only the first is used",
                        len(conditioning_from))
        tokens = conditioning_from.entries[0].cross_attn

        def concat(entry: CondEntry) -> CondEntry:
            if tokens.shape[2] != entry.cross_attn.shape[2]:
                raise ConditioningError(f"ConditioningConcat: conditionings of widths {entry.cross_attn.shape[2]} "
                                        f"and {tokens.shape[2]} cannot be concatenated (different models?)")
            return entry.replace(cross_attn=torch.cat([entry.cross_attn, tokens.to(entry.cross_attn)], dim=1))

        return (conditioning_to.map(concat),)


class ConditioningSetAreaStrength(Node):
    """Sets the strength of every entry of a conditioning."""

    description = ""
    display_name = "ConditioningSetAreaStrength"
    category = "conditioning"
    conditioning = Link("CONDITIONING")
    strength = Float(1.0, min=0.0, max=10.0, step=0.01)
    outputs = (Output("CONDITIONING"),)

    @classmethod
    def run(cls, ctx: RunContext, conditioning: Conditioning, strength: float) -> tuple[Conditioning]:
        return (conditioning.map(lambda e: e.replace(strength=strength)),)


def _crop_pixels(pixels: torch.Tensor, multiple: int) -> torch.Tensor:
    """[B, H, W, C] centre-cropped to multiples of the VAE downscale, ComfyUI's offsets ((size % multiple) // 2)."""
    height, width = pixels.shape[1], pixels.shape[2]
    h, w = height // multiple * multiple, width // multiple * multiple
    y, x = (height % multiple) // 2, (width % multiple) // 2
    return pixels[:, y:y + h, x:x + w]


class InpaintModelConditioning(Node):
    """Conditions an inpainting model on the image with the masked area blanked and the mask; the latent is the
    whole image (optionally with the mask as its noise mask)."""

    description = ""
    display_name = "InpaintModelConditioning"
    category = "conditioning/inpaint"
    positive = Link("CONDITIONING")
    negative = Link("CONDITIONING")
    vae = Link("VAE")
    pixels = Link("IMAGE")
    mask = Link("MASK")
    noise_mask = Boolean(True, tooltip="Add a noise mask to the latent so sampling will only happen within the mask. "
                                       "Might improve results or completely break things depending on the model.")
    outputs = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"), Output("LATENT", "latent"))

    @classmethod
    def run(cls, ctx: RunContext, positive: Conditioning, negative: Conditioning, vae: Vae, pixels: torch.Tensor,
            mask: torch.Tensor, noise_mask: bool) -> tuple[Conditioning, Conditioning, Latent]:
        height, width = pixels.shape[1], pixels.shape[2]
        mask = F.interpolate(mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float(), size=(height, width),
                             mode="bilinear")  # (M, 1, H, W)
        f = vae.downscale
        cropped = _crop_pixels(pixels, f)
        mask = _crop_pixels(mask.movedim(1, -1), f).movedim(-1, 1)  # (M, 1, H', W')
        keep = (1.0 - mask.round()).movedim(1, -1)  # (M, H', W', 1)
        blanked = (cropped[..., :3] - 0.5) * keep + 0.5  # the masked area -> 0.5 grey
        models = ctx.services.models
        concat_latent = encode_images(models, vae, blanked)
        latent = encode_images(models, vae, cropped)
        values = {CONCAT_LATENT_IMAGE: concat_latent, CONCAT_MASK: mask}
        out = Latent(latent, noise_mask=mask if noise_mask else None)
        return positive.with_extra(**values), negative.with_extra(**values), out


class InstructPixToPixConditioning(Node):
    """Conditions an InstructPix2Pix model on an image; the latent is an empty one of its size."""

    category = "conditioning/instructpix2pix"
    v3_schema = True
    positive = Link("CONDITIONING")
    negative = Link("CONDITIONING")
    vae = Link("VAE")
    pixels = Link("IMAGE")
    outputs = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"), Output("LATENT", "latent"))
    description = ""

    @classmethod
    def run(cls, ctx: RunContext, positive: Conditioning, negative: Conditioning, vae: Vae,
            pixels: torch.Tensor) -> tuple[Conditioning, Conditioning, Latent]:
        concat_latent = encode_images(ctx.services.models, vae, _crop_pixels(pixels, vae.downscale))
        out = Latent(torch.zeros_like(concat_latent))
        return (positive.with_extra(**{CONCAT_LATENT_IMAGE: concat_latent}),
                negative.with_extra(**{CONCAT_LATENT_IMAGE: concat_latent}), out)


NODES = (CLIPTextEncodeSDXL, CLIPTextEncodeSDXLRefiner, CLIPTextEncodeControlnet, ConditioningConcat,
         ConditioningSetAreaStrength, InpaintModelConditioning, InstructPixToPixConditioning)
