"""ComfyUI's `comfy.model_patcher.ModelPatcher`: the MODEL object custom node packs receive, clone and patch.

A ModelPatcher wraps one of Chisel's MODEL handles (diffusion.handles.Model, immutable). As in ComfyUI it is
mutable and cheap to clone: `clone()` copies the patch lists and `model_options`, never the weights. Returning it
from a node turns it back into a handle (`to_handle()`): `model_options` (ComfyUI's dict of function patches) becomes
the handle's ModelOptions (diffusion/model_options.py), weight patches added with `add_patches` become weight-diff
patches (diffusion/patches.py), `add_object_patch("model_sampling", s)` replaces the handle's sampling.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from diffusion.handles import Model
from diffusion.model_options import ModelOptions


class _ModelView:
    """`patcher.model`: what packs read off ComfyUI's BaseModel (model_sampling, latent_format, diffusion_model...)."""

    def __init__(self, patcher: ModelPatcher):
        self._patcher = patcher

    @property
    def diffusion_model(self) -> torch.nn.Module:
        return self._patcher.handle.unet

    @property
    def model_sampling(self) -> Any:
        return self._patcher.get_model_object("model_sampling")

    @property
    def latent_format(self) -> Any:
        from comfy_compat.surface.comfy.latent_formats import latent_format_of

        return latent_format_of(self._patcher.handle)

    @property
    def model_type(self) -> Any:
        from comfy_compat.surface.comfy.model_base import model_type_of

        return model_type_of(self._patcher.handle)

    @property
    def model_config(self) -> Any:
        return self._patcher.handle.family

    def get_dtype(self) -> torch.dtype:
        for parameter in self._patcher.handle.unet.parameters():
            return parameter.dtype
        return torch.float32

    def memory_required(self, input_shape: Any) -> int:
        return 0

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"diffusion_model." + k: v for k, v in self._patcher.handle.unet.state_dict().items()}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._patcher.handle.unet, name)


class ModelPatcher:
    """ComfyUI's ModelPatcher over a MODEL handle (see the module docstring)."""

    def __init__(self, handle: Model, load_device: torch.device | None = None,
                 offload_device: torch.device | None = None, size: int = 0, weight_inplace_update: bool = False):
        if not isinstance(handle, Model):
            raise TypeError(f"ModelPatcher wraps a MODEL handle, got {type(handle).__name__}")
        self.handle = handle
        self.model_options: dict[str, Any] = handle.options.to_comfy()
        self.patches: dict[str, list[tuple[Any, ...]]] = {}
        self.object_patches: dict[str, Any] = {}
        self.patches_uuid = object()
        self.weight_inplace_update = weight_inplace_update
        self.size = size
        from comfy_compat.surface.comfy import model_management

        self.load_device = load_device or model_management.get_torch_device()
        self.offload_device = offload_device or torch.device("cpu")
        self.parent: ModelPatcher | None = None
        self.attachments: dict[str, Any] = {}
        self.additional_models: dict[str, list[Any]] = {}
        self.callbacks: dict[str, Any] = {}
        self.wrappers: dict[str, Any] = {}

    # ---- what a pack reads --------------------------------------------------------------------------------------
    @property
    def model(self) -> _ModelView:
        return _ModelView(self)

    def compat_modules(self) -> list[torch.nn.Module]:
        return [self.handle.unet]

    def model_size(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.handle.unet.parameters())

    def model_dtype(self) -> torch.dtype:
        return self.model.get_dtype()

    def get_model_object(self, name: str) -> Any:
        """An attribute of the model, object patches first: "model_sampling", "diffusion_model", "latent_format"."""
        if name in self.object_patches:
            return self.object_patches[name]
        if name == "model_sampling":
            return self.handle.sampling
        if name == "diffusion_model":
            return self.handle.unet
        if name == "latent_format":
            return self.model.latent_format
        from comfy_compat.surface.comfy.utils import get_attr

        return get_attr(self.handle.unet, name.removeprefix("diffusion_model."))

    def model_state_dict(self, filter_prefix: str | None = None) -> dict[str, torch.Tensor]:
        sd = self.model.state_dict()
        return {k: v for k, v in sd.items() if filter_prefix is None or k.startswith(filter_prefix)}

    def is_clone(self, other: Any) -> bool:
        return isinstance(other, ModelPatcher) and other.handle.unet is self.handle.unet

    def clone_has_same_weights(self, clone: Any) -> bool:
        return self.is_clone(clone) and clone.patches == self.patches

    # ---- cloning and patching -----------------------------------------------------------------------------------
    def clone(self) -> ModelPatcher:
        n = ModelPatcher.__new__(ModelPatcher)
        n.__dict__.update(self.__dict__)
        n.patches = {k: list(v) for k, v in self.patches.items()}
        n.object_patches = dict(self.object_patches)
        n.model_options = _copy_options(self.model_options)
        n.attachments = dict(self.attachments)
        n.additional_models = {k: list(v) for k, v in self.additional_models.items()}
        n.callbacks = dict(self.callbacks)
        n.wrappers = dict(self.wrappers)
        n.parent = self
        return n

    def add_patches(self, patches: dict[str, Any], strength_patch: float = 1.0, strength_model: float = 1.0
                    ) -> list[str]:
        """Weight patches by state-dict key ("diffusion_model.x.weight"), ComfyUI's (strength_patch, value,
        strength_model, offset, function) entries; returns the keys that exist in the model."""
        names = set(self.model.state_dict())
        added = []
        for key, value in patches.items():
            name = key[0] if isinstance(key, tuple) else key
            if name in names:
                self.patches.setdefault(name, []).append((strength_patch, value, strength_model, None, None))
                added.append(key)
        return added

    def get_key_patches(self, filter_prefix: str | None = None) -> dict[str, list[Any]]:
        """{key: [(weight,), *its patches]}: what model-merging code adds to another patcher."""
        from comfy_compat.weight_patches import UNET_PREFIX, remember_owner

        handle = self.to_handle()
        out = {}
        for name, weight in handle.unet.named_parameters():
            key = UNET_PREFIX + name
            if filter_prefix is not None and not key.startswith(filter_prefix):
                continue
            own = tuple(p for p in handle.patches if getattr(p, "target", None) == name)
            remember_owner(weight, handle.unet, name, own)
            out[key] = [(weight,)] + list(self.patches.get(key, []))
        return out

    def add_object_patch(self, name: str, obj: Any) -> None:
        self.object_patches[name] = obj

    def set_model_sampler_cfg_function(self, sampler_cfg_function: Any, disable_cfg1_optimization: bool = False
                                       ) -> None:
        self.model_options["sampler_cfg_function"] = sampler_cfg_function
        if disable_cfg1_optimization:
            self.model_options["disable_cfg1_optimization"] = True

    def set_model_sampler_post_cfg_function(self, post_cfg_function: Any, disable_cfg1_optimization: bool = False
                                            ) -> None:
        self.model_options["sampler_post_cfg_function"] = \
            list(self.model_options.get("sampler_post_cfg_function", [])) + [post_cfg_function]
        if disable_cfg1_optimization:
            self.model_options["disable_cfg1_optimization"] = True

    def set_model_sampler_pre_cfg_function(self, pre_cfg_function: Any, disable_cfg1_optimization: bool = False
                                           ) -> None:
        self.model_options["sampler_pre_cfg_function"] = \
            list(self.model_options.get("sampler_pre_cfg_function", [])) + [pre_cfg_function]
        if disable_cfg1_optimization:
            self.model_options["disable_cfg1_optimization"] = True

    def set_model_unet_function_wrapper(self, unet_wrapper_function: Any) -> None:
        self.model_options["model_function_wrapper"] = unet_wrapper_function

    def set_model_denoise_mask_function(self, denoise_mask_function: Any) -> None:
        self.model_options["denoise_mask_function"] = denoise_mask_function

    def _transformer_options(self) -> dict[str, Any]:
        return self.model_options.setdefault("transformer_options", {})

    def set_model_patch(self, patch: Any, name: str) -> None:
        patches = self._transformer_options().setdefault("patches", {})
        patches[name] = list(patches.get(name, [])) + [patch]

    def set_model_patch_replace(self, patch: Any, name: str, block_name: str, number: int,
                                transformer_index: int | None = None) -> None:
        self._transformer_options()
        set_model_options_patch_replace(self.model_options, patch, name, block_name, number, transformer_index)

    def set_model_attn1_patch(self, patch: Any) -> None:
        self.set_model_patch(patch, "attn1_patch")

    def set_model_attn2_patch(self, patch: Any) -> None:
        self.set_model_patch(patch, "attn2_patch")

    def set_model_attn1_replace(self, patch: Any, block_name: str, number: int,
                                transformer_index: int | None = None) -> None:
        self.set_model_patch_replace(patch, "attn1", block_name, number, transformer_index)

    def set_model_attn2_replace(self, patch: Any, block_name: str, number: int,
                                transformer_index: int | None = None) -> None:
        self.set_model_patch_replace(patch, "attn2", block_name, number, transformer_index)

    def set_model_attn1_output_patch(self, patch: Any) -> None:
        self.set_model_patch(patch, "attn1_output_patch")

    def set_model_attn2_output_patch(self, patch: Any) -> None:
        self.set_model_patch(patch, "attn2_output_patch")

    def set_model_input_block_patch(self, patch: Any) -> None:
        self.set_model_patch(patch, "input_block_patch")

    def set_model_input_block_patch_after_skip(self, patch: Any) -> None:
        self.set_model_patch(patch, "input_block_patch_after_skip")

    def set_model_output_block_patch(self, patch: Any) -> None:
        self.set_model_patch(patch, "output_block_patch")

    def set_model_forward_timestep_embed_patch(self, patch: Any) -> None:
        self.set_model_patch(patch, "forward_timestep_embed_patch")

    def set_model_compute_dtype(self, dtype: torch.dtype) -> None:
        self.model_options["compute_dtype"] = dtype

    def add_model_patch(self, patch: Any, name: str) -> None:  # older name of set_model_patch in a few packs
        self.set_model_patch(patch, name)

    # ---- placement (the model manager does it; these keep packs that call them working) -------------------------
    def patch_model(self, device_to: Any = None, lowvram_model_memory: int = 0, load_weights: bool = True,
                    force_patch_weights: bool = False) -> torch.nn.Module:
        return self.handle.unet

    def unpatch_model(self, device_to: Any = None, unpatch_weights: bool = True) -> None:
        return None

    def model_patches_to(self, device: Any) -> None:
        return None

    def current_loaded_device(self) -> torch.device:
        for parameter in self.handle.unet.parameters():
            return parameter.device
        return self.offload_device

    # ---- back to a handle ---------------------------------------------------------------------------------------
    def to_handle(self) -> Model:
        """This patcher as a MODEL handle: function patches, weight patches and the model_sampling object patch."""
        handle = self.handle
        if self.model_options != handle.options.to_comfy():  # a patch was set (unchanged: the same value)
            handle = handle.with_options(ModelOptions.from_comfy(self.model_options))
        sampling = self.object_patches.get("model_sampling")
        if sampling is not None and sampling is not handle.sampling:
            handle = dataclasses.replace(handle, sampling=sampling)
        if self.patches:
            handle = handle.with_patches(*_weight_patches(self.patches))
        return handle


def set_model_options_patch_replace(model_options: dict[str, Any], patch: Any, name: str, block_name: str,
                                    number: int, transformer_index: int | None = None) -> dict[str, Any]:
    """model_options with `patch` replacing attention `name` at that block (a new transformer_options)."""
    to = dict(model_options.get("transformer_options") or {})
    replace = dict(to.get("patches_replace") or {})
    table = dict(replace.get(name) or {})
    table[(block_name, number) if transformer_index is None else (block_name, number, transformer_index)] = patch
    replace[name] = table
    to["patches_replace"] = replace
    model_options["transformer_options"] = to
    return model_options


def set_model_options_post_cfg_function(model_options: dict[str, Any], post_cfg_function: Any,
                                        disable_cfg1_optimization: bool = False) -> dict[str, Any]:
    model_options["sampler_post_cfg_function"] = \
        list(model_options.get("sampler_post_cfg_function", [])) + [post_cfg_function]
    if disable_cfg1_optimization:
        model_options["disable_cfg1_optimization"] = True
    return model_options


def set_model_options_pre_cfg_function(model_options: dict[str, Any], pre_cfg_function: Any,
                                       disable_cfg1_optimization: bool = False) -> dict[str, Any]:
    model_options["sampler_pre_cfg_function"] = \
        list(model_options.get("sampler_pre_cfg_function", [])) + [pre_cfg_function]
    if disable_cfg1_optimization:
        model_options["disable_cfg1_optimization"] = True
    return model_options


def create_model_options_clone(orig_model_options: dict[str, Any]) -> dict[str, Any]:
    return _copy_options(orig_model_options)


def _copy_options(value: Any) -> Any:
    """model_options with its dicts and lists copied and everything else (the patch functions and objects) shared."""
    if isinstance(value, dict):
        return {k: _copy_options(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_options(v) for v in value]
    return value


def _weight_patches(patches: dict[str, list[tuple[Any, ...]]]) -> list[Any]:
    """add_patches entries as Chisel weight patches (diffusion/patches.py)."""
    from comfy_compat.weight_patches import to_weight_patches

    return to_weight_patches(patches)


def __getattr__(name: str):  # noqa: ANN202 - ComfyUI's other names: placeholders that fail when used
    from comfy_compat.surface.unavailable import module_attribute

    return module_attribute('comfy.model_patcher', name)
