"""ComfyUI's `comfy.sd`: the CLIP and VAE objects packs receive, and checkpoint / LoRA loading.

`CLIP` and `VAE` wrap Chisel's CLIP and VAE handles (diffusion/handles.py) with ComfyUI's methods: `tokenize`,
`encode_from_tokens(_scheduled)`, `encode`, `clone`, `clip_layer`; `VAE.decode/encode(_tiled)` on ComfyUI's tensor
layouts ([B, H, W, C] images in [0, 1], raw latents). The work is done by the same code as the core nodes
(CLIPTextEncode, VAEDecode, VAEEncode), on the server's model manager.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch

from comfy_compat import host
from comfy_compat.surface.comfy.model_patcher import ModelPatcher
from diffusion.handles import Clip, Vae


def _services() -> Any:
    return host.services()


class CLIP:
    """ComfyUI's CLIP object over a CLIP handle (`.handle`); clone() then clip_layer(n) as in ComfyUI."""

    def __init__(self, handle: Clip):
        if not isinstance(handle, Clip):
            raise TypeError(f"CLIP wraps a CLIP handle, got {type(handle).__name__}")
        self.handle = handle
        self.layer_idx = handle.stop_at_clip_layer
        self.patches: dict[str, list[Any]] = {}

    @property
    def tokenizer(self) -> Any:
        return self.handle.tokenizer

    @property
    def cond_stage_model(self) -> torch.nn.Module:
        return torch.nn.ModuleList([e.module for e in self.handle.encoders])

    @property
    def patcher(self) -> Any:
        return self

    def compat_modules(self) -> list[torch.nn.Module]:
        return list(self.handle.modules)

    def clone(self) -> CLIP:
        n = CLIP(self.handle)
        n.layer_idx = self.layer_idx
        n.patches = {k: list(v) for k, v in self.patches.items()}
        return n

    def clip_layer(self, layer_idx: int) -> None:
        self.layer_idx = layer_idx

    def to_handle(self) -> Clip:
        handle = self.handle
        if self.layer_idx != handle.stop_at_clip_layer:
            handle = handle.with_layer(self.layer_idx)
        if self.patches:
            from comfy_compat.weight_patches import to_clip_weight_patches

            handle = handle.with_patches(*to_clip_weight_patches(self.patches))
        return handle

    def get_key_patches(self) -> dict[str, list[Any]]:
        """{"<encoder slot>.<parameter>": [(weight,), *its patches]}: what CLIP-merging code adds to another CLIP."""
        from comfy_compat.weight_patches import remember_owner

        handle = self.to_handle()
        out: dict[str, list[Any]] = {}
        for encoder in handle.encoders:
            for name, weight in encoder.module.named_parameters():
                own = tuple(p for p in handle.patches
                            if getattr(p, "root", None) == encoder.slot.name and getattr(p, "target", None) == name)
                remember_owner(weight, encoder.module, name, own)
                out[f"{encoder.slot.name}.{name}"] = [(weight,)] + list(self.patches.get(f"{encoder.slot.name}.{name}",
                                                                                          []))
        return out

    def add_patches(self, patches: dict[str, Any], strength_patch: float = 1.0, strength_model: float = 1.0
                    ) -> list[str]:
        """Weight patches by key ("<encoder slot>.<parameter>", as get_sd / get_key_patches name them); returns
        the keys this CLIP has."""
        names = set(self.get_sd())
        added = []
        for key, value in patches.items():
            name = key[0] if isinstance(key, tuple) else key
            if name in names:
                self.patches.setdefault(name, []).append((strength_patch, value, strength_model, None, None))
                added.append(key)
        return added

    def _encoders(self) -> list[tuple[Any, Any]]:
        return [(e.slot, e.module) for e in self.handle.encoders]

    def tokenize(self, text: str, return_word_ids: bool = False, **kwargs: Any) -> dict[str, Any]:
        """{encoder key ("l", "g"): [chunk of (token, weight) pairs, ...]}, ComfyUI's prompt syntax and
        embedding:name included."""
        from diffusion.text_encode import folder_embedding_lookup, tokenize_prompt

        lookup = folder_embedding_lookup(_services().folders.search_dirs("embeddings"))
        tokens = tokenize_prompt(text, encoders=self._encoders(), tokenizer=self.handle.tokenizer,
                                 embedding_lookup=lookup)
        return {key: [list(chunk) for chunk in chunks] for key, chunks in tokens.items()}

    def encode_from_tokens(self, tokens: dict[str, Any], return_pooled: bool | str = False,
                           return_dict: bool = False) -> Any:
        from diffusion.patches import applied_to_clip
        from diffusion.text_encode import encode_tokens

        handle = self.to_handle()
        models = _services().models
        chunks = {key: [tuple(tuple(pair[:2]) for pair in chunk) for chunk in value] for key, value in tokens.items()}
        with torch.inference_mode(), ExitStack() as stack:
            stack.enter_context(models.on_device(*handle.modules))
            stack.enter_context(applied_to_clip(handle))
            encoded = encode_tokens(chunks, encoders=self._encoders(), stop_at_clip_layer=handle.stop_at_clip_layer)
        cond, pooled = encoded.cond.cpu(), encoded.pooled.cpu() if encoded.pooled is not None else None
        if return_dict:
            return {"cond": cond, "pooled_output": pooled}
        if return_pooled:
            return cond, pooled
        return cond

    def encode_from_tokens_scheduled(self, tokens: dict[str, Any], unprojected: bool = False,
                                     add_dict: dict[str, Any] | None = None, show_pbar: bool = True) -> list[Any]:
        """CONDITIONING ([[cond, {"pooled_output": ...}]]) for these tokens."""
        out = self.encode_from_tokens(tokens, return_dict=True)
        cond = out.pop("cond")
        return [[cond, {**out, **(add_dict or {})}]]

    def encode(self, text: str) -> torch.Tensor:
        return self.encode_from_tokens(self.tokenize(text))

    def load_sd(self, sd: dict[str, torch.Tensor], full_model: bool = False) -> Any:
        raise NotImplementedError("loading text encoder weights into a CLIP from a custom node is not supported")

    def get_sd(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for encoder in self.handle.encoders:
            out.update({f"{encoder.slot.name}.{k}": v for k, v in encoder.module.state_dict().items()})
        return out


class VAE:
    """ComfyUI's VAE object over a VAE handle (`.handle`)."""

    def __init__(self, sd: Any = None, device: Any = None, config: Any = None, dtype: Any = None,
                 metadata: Any = None):
        if isinstance(sd, Vae):
            self.handle = sd
        elif isinstance(sd, dict):
            self.handle = _vae_from_state_dict(sd)
        else:
            raise TypeError(f"VAE takes a VAE handle or a state dict, got {type(sd).__name__}")
        self.latent_channels = self.handle.latent_channels
        self.downscale_ratio = self.handle.downscale
        self.upscale_ratio = self.handle.downscale
        self.output_channels = 3
        self.latent_dim = 2
        self.vae_dtype = torch.float32

    @property
    def first_stage_model(self) -> torch.nn.Module:
        return self.handle.module

    @property
    def device(self) -> torch.device:
        return _services().models.device

    @property
    def patcher(self) -> Any:
        return self

    def compat_modules(self) -> list[torch.nn.Module]:
        return [self.handle.module]

    def to_handle(self) -> Vae:
        return self.handle

    def spacial_compression_decode(self) -> int:
        return self.handle.downscale

    def spacial_compression_encode(self) -> int:
        return self.handle.downscale

    def temporal_compression_decode(self) -> None:
        return None

    def decode(self, samples_in: torch.Tensor, vae_options: Any = None) -> torch.Tensor:
        """Raw latents [B, C, h, w] -> images [B, h*f, w*f, 3] in [0, 1] (ComfyUI's IMAGE layout)."""
        from nodes.vae_ops import decode_images

        ctx = host.current_run()
        check = ctx.check_interrupted if ctx is not None else (lambda: None)
        return decode_images(_services().models, self.handle, samples_in, check_interrupted=check).cpu()

    def decode_tiled(self, samples: torch.Tensor, tile_x: int | None = None, tile_y: int | None = None,
                     overlap: int | None = None, tile_t: int | None = None, overlap_t: int | None = None
                     ) -> torch.Tensor:
        module = self.handle.module
        with torch.inference_mode(), _services().models.on_device(module) as device:
            decoded = module.decode_tiled(samples.to(device=device, dtype=torch.float32))
        return ((decoded.float() + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1).cpu()

    def encode(self, pixel_samples: torch.Tensor) -> torch.Tensor:
        """Images [B, H, W, C] in [0, 1] -> raw latents (the sides cropped to multiples of the downscale)."""
        from nodes.vae_ops import encode_images

        f = self.handle.downscale
        h, w = (pixel_samples.shape[1] // f) * f, (pixel_samples.shape[2] // f) * f
        return encode_images(_services().models, self.handle, pixel_samples[:, :h, :w, :]).cpu()

    def encode_tiled(self, pixel_samples: torch.Tensor, tile_x: int = 512, tile_y: int = 512, overlap: int = 64,
                     tile_t: int | None = None, overlap_t: int | None = None) -> torch.Tensor:
        return self.encode(pixel_samples)

    def get_sd(self) -> dict[str, torch.Tensor]:
        return self.handle.module.state_dict()


class CLIPType:
    STABLE_DIFFUSION = 1
    STABLE_CASCADE = 2
    SD3 = 3
    STABLE_AUDIO = 4
    HUNYUAN_DIT = 5
    FLUX = 6
    MOCHI = 7
    LTXV = 8
    HUNYUAN_VIDEO = 9
    PIXART = 10
    COSMOS = 11
    LUMINA2 = 12
    WAN = 13
    HIDREAM = 14
    CHROMA = 15


def _vae_from_state_dict(sd: dict[str, torch.Tensor]) -> Vae:
    """A VAE handle from a state dict (ldm, diffusers or full-checkpoint layout), read by the VAELoader's code."""
    import tempfile

    import safetensors.torch

    from diffusion.checkpoint import load_vae_file
    from diffusion.handles import vae_handle

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "vae.safetensors"
        safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
        loaded = load_vae_file(path, device=torch.device("cpu"), dtype=None)
    return vae_handle(loaded.vae, name="state dict", owner=loaded)


def load_checkpoint_guess_config(ckpt_path: str, output_vae: bool = True, output_clip: bool = True,
                                 output_clipvision: bool = False, embedding_directory: Any = None,
                                 output_model: bool = True, model_options: Any = None, te_model_options: Any = None
                                 ) -> tuple[Any, ...]:
    """(ModelPatcher, CLIP, VAE, None) of a checkpoint file (.safetensors), loaded once and shared like the
    CheckpointLoaderSimple node's."""
    from diffusion.checkpoint import load_checkpoint
    from diffusion.handles import checkpoint_handles
    from diffusion.previews import family_latent_rgb, latent_rgb_from_metadata
    from diffusion.safetensors_io import read_header

    path = Path(ckpt_path)
    models = _services().models
    loaded = models.load(path, "checkpoint",
                         lambda p, device, dtype: load_checkpoint(p, device=device, dtype=dtype))
    latent_rgb = latent_rgb_from_metadata(read_header(path).metadata) or family_latent_rgb(loaded.family.name)
    model, clip, vae = checkpoint_handles(loaded, tokenizer=models.tokenizer(), latent_rgb=latent_rgb)
    return (ModelPatcher(model) if output_model else None,
            CLIP(clip) if output_clip and clip is not None else None,
            VAE(vae) if output_vae and vae is not None else None,
            None)


def load_lora_for_models(model: Any, clip: Any, lora: dict[str, torch.Tensor], strength_model: float,
                         strength_clip: float) -> tuple[Any, Any]:
    """(model, clip) with a LoRA state dict applied (the same patches as the LoraLoader node); None stays None."""
    from diffusion.lora import apply_lora, parse_lora_tensors

    lora_file = parse_lora_tensors(lora, "lora from a custom node")
    model_handle = model.to_handle() if isinstance(model, ModelPatcher) else model
    clip_handle = clip.to_handle() if isinstance(clip, CLIP) else clip
    new_model, new_clip, _ = apply_lora(model_handle, clip_handle, lora_file, strength_model=strength_model,
                                        strength_clip=strength_clip)
    return (ModelPatcher(new_model) if new_model is not None else None,
            CLIP(new_clip) if new_clip is not None else None)


__all__ = ["CLIP", "VAE", "CLIPType", "load_checkpoint_guess_config", "load_lora_for_models"]


def __getattr__(name: str):  # noqa: ANN202 - ComfyUI's other names: placeholders that fail when used
    from comfy_compat.surface.unavailable import module_attribute

    return module_attribute('comfy.sd', name)
