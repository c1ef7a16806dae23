"""A MODEL's function patches: ComfyUI's ``ModelPatcher.model_options`` as one immutable, composable value.

ComfyUI patches a model without copying its weights by putting functions into ``model_options``: transformer
patches the UNet calls between and inside its blocks, functions that change how classifier-free guidance combines
the predictions, a wrapper around each model call and a function that reshapes the inpainting mask per step.
``ModelOptions`` holds exactly those, under ComfyUI's names and with ComfyUI's calling conventions, so a function
written for ComfyUI runs unchanged here. Each ``with_*`` method returns a new value with one more patch (the
`Model` handle carries one in ``options``; the weights are never copied):

    model.with_options(model.options.with_patch("output_block_patch", freeu))

Where each patch runs and what it is given (the same as ComfyUI's):

    patches["attn1_patch" | "attn2_patch"]      fn(n, context, value, extra_options) -> (n, context, value)
                                                before the self / cross attention of every transformer block
    patches["attn1_output_patch" | ...2...]     fn(n, extra_options) -> n, on the attention's output
    patches["middle_patch"]                     fn(x, extra_options) -> x, after the self-attention residual
    patches["input_block_patch"]                fn(h, transformer_options) -> h, after each input block
    patches["input_block_patch_after_skip"]     the same, after h was stored as the block's skip
    patches["output_block_patch"]               fn(h, hsp, transformer_options) -> (h, hsp), before the concat
    patches_replace["attn1" | "attn2"][key]     fn(q, k, v, extra_options) -> out, instead of the attention
                                                (key: (block name, number, transformer index) or (name, number);
                                                block names "input" / "middle" / "output")
    sampler_pre_cfg_function (list)             fn(args) -> conds_out; args {"conds", "conds_out", "cond_scale",
                                                "timestep", "input", "sigma", "model", "model_options"}
    sampler_cfg_function                        fn(args) -> x − guided x0; args {"cond", "uncond", "cond_scale",
                                                "timestep", "input", "sigma", "cond_denoised", "uncond_denoised",
                                                "model", "model_options"} (cond / uncond are x − the predictions)
    sampler_post_cfg_function (list)            fn(args) -> guided x0; args {"denoised", "cond", "uncond",
                                                "cond_scale", "model", "uncond_denoised", "cond_denoised", "sigma",
                                                "model_options", "input"} (cond / uncond: the conditioning groups)
    model_function_wrapper                      fn(apply_model, {"input", "timestep", "c", "cond_or_uncond"})
                                                -> x0; apply_model(input, timestep, **c) is the denoiser
    denoise_mask_function                       fn(sigma, denoise_mask, extra_options={"model", "sigmas"}) -> mask
    disable_cfg1_optimization                   evaluate the negative even at cfg 1

The transformer options a forward sees are ``transformer_options()`` plus, per model call, ``cond_or_uncond``
(one 0 / 1 per conditioning chunk of the batch), ``sigmas`` ([B]) and the UNet's own ``original_shape``,
``block``, ``block_index`` and ``transformer_index`` (diffusion/unet.py).

Mapping for a ``comfy.model_patcher.ModelPatcher`` shim (its ``model_options`` dict is ``to_comfy()`` and goes
back with ``ModelOptions.from_comfy``):

    set_model_patch(fn, name)                       with_patch(name, fn)
    set_model_attn1_patch / attn2_patch             with_patch("attn1_patch" / "attn2_patch", fn)
    set_model_attn1_output_patch / attn2_...        with_patch("attn1_output_patch" / ..., fn)
    set_model_input_block_patch(_after_skip)        with_patch("input_block_patch(_after_skip)", fn)
    set_model_output_block_patch                    with_patch("output_block_patch", fn)
    set_model_patch_replace(fn, name, block, n, i)  with_patch_replace(fn, name, block, n, i)
    set_model_attn1_replace / attn2_replace         with_patch_replace(fn, "attn1" / "attn2", block, n, i)
    set_model_sampler_cfg_function(fn, d)           with_sampler_cfg_function(fn, disable_cfg1_optimization=d)
    set_model_sampler_post_cfg_function(fn, d)      with_post_cfg_function(fn, disable_cfg1_optimization=d)
    set_model_sampler_pre_cfg_function(fn, d)       with_pre_cfg_function(fn, disable_cfg1_optimization=d)
    set_model_unet_function_wrapper(fn)             with_model_function_wrapper(fn)
    set_model_denoise_mask_function(fn)             with_denoise_mask_function(fn)
    model_options["transformer_options"][k] = v     with_transformer_option(k, v)
    add_object_patch("model_sampling", s)           dataclasses.replace(model, sampling=s)  (the handle's field)

The functions themselves are called with ``model_options`` = this value, which also reads like ComfyUI's dict
(``opts["transformer_options"]``, ``opts.get(...)``, ``opts.copy()`` gives the dict), and ``model`` = the
guided denoiser's model view (diffusion/guidance.py GuidanceModel: ``calc_cond_batch(conds, x, sigma,
model_options)`` and ``model_sampling``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import Tensor

PatchFn = Callable[..., Any]
BlockKey = tuple[Any, ...]
"""(block name, block number) or (block name, block number, transformer index); names "input"/"middle"/"output"."""

TRANSFORMER_PATCHES = (
    "attn1_patch", "attn2_patch", "attn1_output_patch", "attn2_output_patch", "middle_patch",
    "input_block_patch", "input_block_patch_after_skip", "output_block_patch",
)
"""The transformer patch lists the UNet calls (other names are kept and handed to the forward as they are)."""
REPLACEABLE = ("attn1", "attn2")
"""The attentions a replace patch can take the place of."""

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class ModelOptionsError(ValueError):
    """A patch that cannot be added (unknown replace target, a non-callable, a malformed model_options dict)."""


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


def _callable(fn: Any, what: str) -> PatchFn:
    if not callable(fn):
        raise ModelOptionsError(f"{what} must be callable, got {type(fn).__name__}")
    return fn


@dataclass(frozen=True, eq=False)
class ModelOptions:
    """The function patches of one MODEL handle (see the module docstring for each one's contract).

    patches              transformer patch name -> functions, called in order
    patches_replace      "attn1" / "attn2" -> {block key: function}
    transformer_extra    other transformer_options entries (handed to every patched forward)
    sampler_cfg_function / sampler_pre_cfg_function / sampler_post_cfg_function / model_function_wrapper /
    denoise_mask_function / disable_cfg1_optimization   as ComfyUI's model_options keys
    extra                other top-level model_options entries a custom node set (kept, not interpreted)
    """

    patches: Mapping[str, tuple[PatchFn, ...]] = field(default_factory=lambda: _EMPTY)
    patches_replace: Mapping[str, Mapping[BlockKey, PatchFn]] = field(default_factory=lambda: _EMPTY)
    transformer_extra: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    sampler_cfg_function: PatchFn | None = None
    sampler_pre_cfg_function: tuple[PatchFn, ...] = ()
    sampler_post_cfg_function: tuple[PatchFn, ...] = ()
    model_function_wrapper: PatchFn | None = None
    denoise_mask_function: PatchFn | None = None
    disable_cfg1_optimization: bool = False
    extra: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    # -- composing --------------------------------------------------------------------------------------------
    def with_patch(self, name: str, fn: PatchFn) -> ModelOptions:
        """One more function in the transformer patch list ``name`` (after those already there)."""
        fn = _callable(fn, f"model patch {name!r}")
        patches = {**self.patches, name: self.patches.get(name, ()) + (fn,)}
        return dataclasses.replace(self, patches=_frozen(patches))

    def with_patch_replace(self, fn: PatchFn, name: str, block_name: str, number: int,
                           transformer_index: int | None = None) -> ModelOptions:
        """Replace attention ``name`` ("attn1" self, "attn2" cross) of (block_name, number[, transformer_index])."""
        if name not in REPLACEABLE:
            raise ModelOptionsError(f"a replace patch targets one of {REPLACEABLE}, got {name!r}")
        fn = _callable(fn, f"{name} replace patch")
        key: BlockKey = (block_name, number) if transformer_index is None else (block_name, number,
                                                                                 transformer_index)
        table = {**self.patches_replace.get(name, {}), key: fn}
        return dataclasses.replace(self, patches_replace=_frozen({**self.patches_replace, name: _frozen(table)}))

    def with_transformer_option(self, key: str, value: Any) -> ModelOptions:
        if key in ("patches", "patches_replace"):
            raise ModelOptionsError(f"transformer option {key!r} is set with with_patch / with_patch_replace")
        return dataclasses.replace(self, transformer_extra=_frozen({**self.transformer_extra, key: value}))

    def with_sampler_cfg_function(self, fn: PatchFn, *, disable_cfg1_optimization: bool = False) -> ModelOptions:
        """Replace CFG's combination (the one set before is dropped, as in ComfyUI)."""
        return dataclasses.replace(self, sampler_cfg_function=_callable(fn, "sampler_cfg_function"),
                                   disable_cfg1_optimization=self.disable_cfg1_optimization
                                   or disable_cfg1_optimization)

    def with_pre_cfg_function(self, fn: PatchFn, *, disable_cfg1_optimization: bool = False) -> ModelOptions:
        fns = self.sampler_pre_cfg_function + (_callable(fn, "sampler_pre_cfg_function"),)
        return dataclasses.replace(self, sampler_pre_cfg_function=fns,
                                   disable_cfg1_optimization=self.disable_cfg1_optimization
                                   or disable_cfg1_optimization)

    def with_post_cfg_function(self, fn: PatchFn, *, disable_cfg1_optimization: bool = False) -> ModelOptions:
        fns = self.sampler_post_cfg_function + (_callable(fn, "sampler_post_cfg_function"),)
        return dataclasses.replace(self, sampler_post_cfg_function=fns,
                                   disable_cfg1_optimization=self.disable_cfg1_optimization
                                   or disable_cfg1_optimization)

    def with_model_function_wrapper(self, fn: PatchFn) -> ModelOptions:
        return dataclasses.replace(self, model_function_wrapper=_callable(fn, "model_function_wrapper"))

    def with_denoise_mask_function(self, fn: PatchFn) -> ModelOptions:
        return dataclasses.replace(self, denoise_mask_function=_callable(fn, "denoise_mask_function"))

    def with_extra(self, key: str, value: Any) -> ModelOptions:
        return dataclasses.replace(self, extra=_frozen({**self.extra, key: value}))

    # -- reading ----------------------------------------------------------------------------------------------
    @property
    def touches_model(self) -> bool:
        """Whether model calls need transformer options or go through a wrapper."""
        return bool(any(self.patches.values()) or any(self.patches_replace.values()) or self.transformer_extra
                    or self.model_function_wrapper is not None)

    @property
    def touches_guidance(self) -> bool:
        """Whether the guided denoiser combines the predictions other than by plain CFG."""
        return bool(self.sampler_cfg_function is not None or self.sampler_pre_cfg_function
                    or self.sampler_post_cfg_function or self.disable_cfg1_optimization)

    @property
    def is_empty(self) -> bool:
        return not (self.touches_model or self.touches_guidance or self.denoise_mask_function is not None
                    or self.extra)

    def network_only(self) -> ModelOptions:
        """These options without the guidance functions (for one conditioning's prediction in a guider)."""
        return dataclasses.replace(self, sampler_cfg_function=None, sampler_pre_cfg_function=(),
                                   sampler_post_cfg_function=(), disable_cfg1_optimization=False)

    def transformer_options(self) -> dict[str, Any] | None:
        """A fresh transformer_options dict in ComfyUI's form (None when nothing patches the network)."""
        if not (any(self.patches.values()) or any(self.patches_replace.values()) or self.transformer_extra):
            return None
        return {**self.transformer_extra,
                "patches": {k: list(v) for k, v in self.patches.items() if v},
                "patches_replace": {k: dict(v) for k, v in self.patches_replace.items() if v}}

    def to_comfy(self) -> dict[str, Any]:
        """ComfyUI's model_options dict (fresh; changing it changes nothing here)."""
        out: dict[str, Any] = dict(self.extra)
        out["transformer_options"] = self.transformer_options() or {}
        if self.sampler_cfg_function is not None:
            out["sampler_cfg_function"] = self.sampler_cfg_function
        if self.sampler_pre_cfg_function:
            out["sampler_pre_cfg_function"] = list(self.sampler_pre_cfg_function)
        if self.sampler_post_cfg_function:
            out["sampler_post_cfg_function"] = list(self.sampler_post_cfg_function)
        if self.model_function_wrapper is not None:
            out["model_function_wrapper"] = self.model_function_wrapper
        if self.denoise_mask_function is not None:
            out["denoise_mask_function"] = self.denoise_mask_function
        if self.disable_cfg1_optimization:
            out["disable_cfg1_optimization"] = True
        return out

    @classmethod
    def from_comfy(cls, options: Mapping[str, Any] | ModelOptions) -> ModelOptions:
        """The value of a ComfyUI model_options dict (a ModelOptions is returned as it is)."""
        if isinstance(options, ModelOptions):
            return options
        if not isinstance(options, Mapping):
            raise ModelOptionsError(f"model_options must be a dict, got {type(options).__name__}")
        known = {"transformer_options", "sampler_cfg_function", "sampler_pre_cfg_function",
                 "sampler_post_cfg_function", "model_function_wrapper", "denoise_mask_function",
                 "disable_cfg1_optimization"}
        to = dict(options.get("transformer_options") or {})
        patches = {k: tuple(v) for k, v in (to.pop("patches", None) or {}).items()}
        replace = {k: _frozen(v) for k, v in (to.pop("patches_replace", None) or {}).items()}
        return cls(
            patches=_frozen(patches), patches_replace=_frozen(replace), transformer_extra=_frozen(to),
            sampler_cfg_function=options.get("sampler_cfg_function"),
            sampler_pre_cfg_function=tuple(options.get("sampler_pre_cfg_function") or ()),
            sampler_post_cfg_function=tuple(options.get("sampler_post_cfg_function") or ()),
            model_function_wrapper=options.get("model_function_wrapper"),
            denoise_mask_function=options.get("denoise_mask_function"),
            disable_cfg1_optimization=bool(options.get("disable_cfg1_optimization", False)),
            extra=_frozen({k: v for k, v in options.items() if k not in known}),
        )

    # ComfyUI-written functions read model_options as a dict: these make the value read like one.
    def __getitem__(self, key: str) -> Any:
        return self.to_comfy()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.to_comfy()

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_comfy())

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_comfy().get(key, default)

    def copy(self) -> dict[str, Any]:
        return self.to_comfy()


NO_OPTIONS = ModelOptions()


def with_sample_sigmas(options: ModelOptions, sigmas: Tensor) -> ModelOptions:
    """The run's schedule as transformer option "sample_sigmas" (ComfyUI's CFGGuider adds it for patches that
    need to know the step), for a MODEL that has patches; an unpatched one is returned as it is."""
    return options if options.is_empty else options.with_transformer_option("sample_sigmas", sigmas)


# ---- classifier-free guidance with the options (ComfyUI's sampling_function / cfg_function) --------------------
def pre_cfg(options: ModelOptions, *, model: Any, conds: Sequence[Any], conds_out: list[Tensor], cond_scale: float,
            x: Tensor, sigma: Tensor) -> list[Tensor]:
    """The sampler_pre_cfg_functions in order, each given the previous one's conds_out."""
    for fn in options.sampler_pre_cfg_function:
        conds_out = fn({"conds": conds, "conds_out": conds_out, "cond_scale": cond_scale, "timestep": sigma,
                        "input": x, "sigma": sigma, "model": model, "model_options": options})
    return conds_out


def cfg_combine(options: ModelOptions, *, model: Any, cond_pred: Tensor, uncond_pred: Tensor, cond_scale: float,
                x: Tensor, sigma: Tensor, cond: Any = None, uncond: Any = None) -> Tensor:
    """CFG (Ho & Salimans 2022) or the sampler_cfg_function, then each sampler_post_cfg_function in order."""
    if options.sampler_cfg_function is not None:
        args = {"cond": x - cond_pred, "uncond": x - uncond_pred, "cond_scale": cond_scale, "timestep": sigma,
                "input": x, "sigma": sigma, "cond_denoised": cond_pred, "uncond_denoised": uncond_pred,
                "model": model, "model_options": options}
        result = x - options.sampler_cfg_function(args)
    else:
        result = uncond_pred + (cond_pred - uncond_pred) * cond_scale
    for fn in options.sampler_post_cfg_function:
        result = fn({"denoised": result, "cond": cond, "uncond": uncond, "cond_scale": cond_scale, "model": model,
                     "uncond_denoised": uncond_pred, "cond_denoised": cond_pred, "sigma": sigma,
                     "model_options": options, "input": x})
    return result


__all__ = [
    "BlockKey", "ModelOptions", "ModelOptionsError", "NO_OPTIONS", "PatchFn", "REPLACEABLE", "TRANSFORMER_PATCHES",
    "cfg_combine", "pre_cfg", "with_sample_sigmas",
]
