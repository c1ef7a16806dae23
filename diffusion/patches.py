"""Weight patches (LoRA) applied to the shared modules while one handle runs, never copying the base weights.

A `Model` or `Clip` handle carries `LoraPatch` values; the weights they adapt belong to modules that other handles
share. Patches therefore exist on a module only inside a context:

    with applied_to_model(model) as unet:      # model.patches applied to model.unet
        eps = unet(x, t, context)
    # here model.unet is exactly as before, for every other handle

Two ways to apply them (`PatchMode`):

- "hooks" (the default): a forward hook on each adapted Linear/Conv2d adds  scale · up(down(x))  to its output,
  computed in the layer's dtype. No weight is copied or written; the extra work per call is two rank-r products
  per layer (r ≪ width), and the only extra memory is the LoRA factors on the module's device. Used for text
  encoding, short runs, and whenever memory is tight.
- "merged": W += Σ scale · up @ down  in place for the context, after saving a copy of ONLY the adapted weights
  (optionally on another device); on exit the saved copy is written back, so W is bit-identical afterwards. The
  forward then costs exactly what the base model costs; entering costs one weight-sized product per layer and
  memory for the saved copies. Worth it for long GPU sampling runs with many adapted layers.

Layers whose parent reads `.weight` directly instead of calling the layer (SpatialTransformer's proj_in/proj_out,
see unet.py) cannot be hooked; in "hooks" mode those get a new weight tensor W + ΔW for the context instead
(the base Parameter object is put back on exit and is never written to).

Whole-parameter patches (`WeightPatch`, the model-merging nodes: W' = strength_model·W + strength_patch·value) work
the same way in both modes, per parameter instead of per layer: "hooks" gives each patched parameter a new tensor for
the context (the base Parameter object is put back on exit), "merged" writes into it from a saved copy. A layer
weight that has a WeightPatch gets its LoRAs folded into that value in the handle's order, so LoRA and merges
compose as ComfyUI's calculate_weight does.

Not re-entrant: a module may have patches from one context at a time (the executor runs one prompt at a time);
opening a second context on the same module raises `PatchConflict` instead of silently adding both.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusion.handles import Clip, Model
from diffusion.unet import SpatialTransformer

PatchRoot = Literal["unet", "clip_l", "clip_h", "clip_g", "t5xxl"]
"""Which module of a handle a patch adapts: the UNet of a Model, or one text encoder (by slot name) of a Clip."""
PatchMode = Literal["hooks", "merged"]

# (parent class, child attribute) whose weight the parent reads itself (F.linear on `.weight`), so no hook fires.
_WEIGHT_READ_BY_PARENT: frozenset[tuple[type[nn.Module], str]] = frozenset(
    {(SpatialTransformer, "proj_in"), (SpatialTransformer, "proj_out")}
)


class PatchError(Exception):
    """A patch cannot be applied."""


class PatchConflict(PatchError):
    """The module already has patches from another open context."""


class PatchTargetError(PatchError):
    """A patch names a module that is missing, of the wrong kind, or of another shape than its factors."""


class UnsupportedPatch(PatchError):
    """A handle carries a patch kind this module does not know how to apply."""


@dataclass(frozen=True, eq=False)
class LoraPatch:
    """One low-rank update of one layer (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"):

        W' = W + strength · alpha / rank · up @ down            (Linear: down [r, in], up [out, r])
        conv: down [r, in, kh, kw], up [out, r, 1, 1]           (kohya LoCon)
        Tucker: down [r, in, 1, 1], mid [r', r, kh, kw], up [out, r', 1, 1]   (LyCORIS LoCon with use_tucker)

    With `rows` = (offset, size) the update adapts only those output rows of W (up is [size, r]): diffusers' separate
    q / k / v LoRAs on the fused qkv Linear of Flux and SD3 (ComfyUI's (key, (0, offset, size)) patches).

    The factors stay in the file's dtype on the CPU; they are moved to the layer's device and dtype on entry.
    """

    root: PatchRoot
    """Which module of the handle (see PatchRoot)."""
    target: str
    """Dotted module name inside that root (a UNet checkpoint name, or a text encoder's HF CLIP name)."""
    down: Tensor
    up: Tensor
    mid: Tensor | None
    alpha: float
    """The file's alpha; equal to the rank when the file has none (scale 1)."""
    strength: float
    """The node's strength (0 = no effect; negative subtracts)."""
    source: str = ""
    """The LoRA file's name, for messages."""
    rows: tuple[int, int] | None = None
    """(offset, size) of the output rows adapted (a slice of a fused weight); None: all of them."""

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        """strength · alpha / rank: the factor in front of up @ down."""
        return self.strength * self.alpha / self.rank


@dataclass(frozen=True, eq=False)
class OtherWeight:
    """A parameter of another handle's module as that handle sees it: its base value with that handle's own patches
    for it folded in (ComfyUI's get_key_patches gives a nested patch list whose first entry is the weight).

    Nothing is copied when the patch is made; the value is computed when a context applies the patch.
    """

    module: nn.Module
    """The other handle's root module (its UNet, or one text encoder); may be the very module being patched."""
    name: str
    """The parameter's dotted name inside `module`."""
    patches: tuple[object, ...] = ()
    """The other handle's patches of this parameter, in order (LoraPatch / WeightPatch)."""


@dataclass(frozen=True, eq=False)
class WeightPatch:
    """A whole-parameter update, ComfyUI's "diff" weight patch (what the model-merging nodes make):

        W' = strength_model · W + strength_patch · value

    `value` is a tensor of W's shape, another handle's parameter (OtherWeight), or None (only the strength_model
    scaling: ComfyUI scales even where a merged key's shape does not fit, and merges nothing there).

    Mapping of ComfyUI's ``ModelPatcher.add_patches(patches, strength_patch=1.0, strength_model=1.0)``: each
    ``{key: (tensor,)}`` entry becomes ``WeightPatch(root, target=key without "diffusion_model." (UNet) or the
    encoder prefix (CLIP), value=tensor, strength_patch=strength_patch, strength_model=strength_model)``, and
    ``{key: [(weight,), *patches]}`` (get_key_patches) an OtherWeight value. ModelMergeSimple is (1 − r, r) on
    model2's weights, ModelMergeSubtract (−m, m), ModelMergeAdd (1, 1).

    A handle's patches apply to a parameter in order: LoraPatch adds its ΔW, WeightPatch scales then adds, exactly
    as ComfyUI's calculate_weight walks a key's patch list.
    """

    root: PatchRoot
    """Which module of the handle (see PatchRoot)."""
    target: str
    """Dotted parameter name inside that root (e.g. "input_blocks.0.0.weight" or "...layer_norm1.bias")."""
    value: Tensor | OtherWeight | None
    strength_patch: float
    strength_model: float = 1.0
    source: str = ""
    """Where the value came from (a model name), for messages."""


# ---------------------------------------------------------------------------------------------------------------
# Checking and the explicit delta


def _trailing_ones(shape: torch.Size, dims: int) -> bool:
    return all(d == 1 for d in shape[dims:])


def check_patch(patch: LoraPatch, module: nn.Module) -> None:
    """Raise PatchTargetError unless the factors fit `module` (a Linear, or a Conv2d with groups 1)."""
    where = f"{patch.source or 'LoRA'} {patch.target!r}"
    if isinstance(module, nn.Linear):
        out, in_ = module.weight.shape
        kernel: tuple[int, ...] = ()
    elif isinstance(module, nn.Conv2d) and module.groups == 1:
        out, in_, kh, kw = module.weight.shape
        kernel = (kh, kw)
    else:
        raise PatchTargetError(f"{where}: only Linear and Conv2d (groups=1) layers can be adapted, got {module}")
    down, up, mid = patch.down.shape, patch.up.shape, patch.mid.shape if patch.mid is not None else None
    rows_ok = True
    if patch.rows is not None:
        offset, size = patch.rows
        rows_ok = offset >= 0 and size > 0 and offset + size <= out
        out = size  # the factors give only these rows
    rank = down[0] if len(down) >= 2 else -1
    inner = mid[0] if mid is not None and len(mid) == 4 else rank
    # The factors' own kernel: the layer's, unless a Tucker core carries it (then down is 1x1); a 1x1 layer may
    # come with 2-D factors (trained on the Linear form of the same map).
    down_kernel = () if mid is not None or kernel in ((), (1, 1)) else kernel
    ok = rows_ok and (
        len(down) >= 2 and down[1] == in_
        and (tuple(down[2:]) == down_kernel or (not down_kernel and _trailing_ones(down, 2)))
        and len(up) >= 2 and up[0] == out and up[1] == inner and _trailing_ones(up, 2)
        and (mid is None or (kernel and len(mid) == 4 and mid[1] == rank and tuple(mid[2:]) == kernel))
    )
    if not ok:
        expected = f"down [r, {in_}{''.join(f', {k}' for k in down_kernel)}], up [{out}, r]"
        if mid is not None:
            expected = f"down [r, {in_}, 1, 1], mid [r', r, {kernel[0] if kernel else '?'}, ...], up [{out}, r']"
        raise PatchTargetError(
            f"{where}: factors do not fit the layer's weight {tuple(module.weight.shape)}"
            + (f" rows {patch.rows[0]}:{patch.rows[0] + patch.rows[1]}" if patch.rows is not None else "")
            + f": expected {expected}, got "
            f"down {tuple(down)}, up {tuple(up)}" + (f", mid {tuple(mid)}" if mid is not None else "")
        )


def lora_delta(
    patch: LoraPatch, weight_shape: torch.Size | tuple[int, ...], device: torch.device | str | None = None
) -> Tensor:
    """ΔW = scale · up @ [mid ∘] down, float32, shaped like the layer's weight (zero outside a patch's rows),
    computed on `device` (default: the factors')."""
    down = patch.down.to(device=device, dtype=torch.float32).flatten(1)  # [r, in·kh·kw] (Tucker: [r, in])
    up = full_up(patch, weight_shape[0]).to(device=device, dtype=torch.float32).flatten(1)  # [out, r']
    if patch.mid is None:
        delta = up @ down  # [out, in·kh·kw]
    else:
        mid = patch.mid.to(device=device, dtype=torch.float32)  # [r', r, kh, kw]
        # Tucker: ΔW[o, i, h, w] = Σ_a Σ_b up[o, a] · mid[a, b, h, w] · down[b, i]
        delta = torch.einsum("oa,abhw,bi->oihw", up, mid, down)
    return (delta * patch.scale).reshape(weight_shape)


def full_up(patch: LoraPatch, out: int) -> Tensor:
    """The up factor over all `out` rows of the layer: zero rows outside a row-slice patch's (offset, size)."""
    if patch.rows is None:
        return patch.up
    offset, size = patch.rows
    up = patch.up.new_zeros((out, *patch.up.shape[1:]))
    up[offset:offset + size] = patch.up
    return up


# ---------------------------------------------------------------------------------------------------------------
# Hooks


def _on(tensor: Tensor, like: Tensor, scale: float = 1.0) -> Tensor:
    """`tensor` (× scale, applied in float32) on `like`'s device and dtype."""
    if scale != 1.0:
        tensor = tensor.float() * scale
    return tensor.to(device=like.device, dtype=like.dtype)


def _as_linear(factor: Tensor) -> Tensor:
    return factor.flatten(1)  # [a, b, 1, 1] -> [a, b]


def _as_conv(factor: Tensor) -> Tensor:
    return factor.reshape(*factor.shape[:2], 1, 1) if factor.ndim == 2 else factor  # [a, b] -> [a, b, 1, 1]


class _LoraForwardHook:
    """Adds Σ scale · up(down(x)) to a Linear/Conv2d output. Patches without a Tucker core are fused into one pair
    of products by stacking their factors along the rank:
    up₁·s₁ @ down₁ + up₂·s₂ @ down₂ = [up₁s₁ | up₂s₂] @ [down₁; down₂].

    The factors take the layer's dtype (its bias's when the weight is stored in fp8 and upcast per call) and follow
    the input to its device and dtype (a streamed layer computes on another device than its weight lives on).
    """

    def __init__(self, module: nn.Module, patches: Sequence[LoraPatch]) -> None:
        weight = module.weight
        if weight.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
            bias = getattr(module, "bias", None)
            weight = weight.new_empty((0,), dtype=bias.dtype if bias is not None else torch.float32)
        out = module.weight.shape[0]
        self.conv = isinstance(module, nn.Conv2d)
        # Factors as the layer's functional form takes them: 2-D for Linear, 4-D for Conv2d (2-D ones of a 1x1
        # layer get their [.., .., 1, 1] kernel back).
        form = _as_conv if self.conv else _as_linear
        plain = [p for p in patches if p.mid is None]
        self.down: Tensor | None = None
        self.up: Tensor | None = None
        if plain:
            self.down = torch.cat([_on(form(p.down), weight) for p in plain], dim=0)  # [Σr, in(, kh, kw)]
            ups = [_on(form(full_up(p, out)), weight, p.scale) for p in plain]
            self.up = torch.cat(ups, dim=1)  # [out, Σr(, 1, 1)]
        self.tucker = [
            (_on(_as_conv(p.down), weight), _on(p.mid, weight), _on(_as_conv(full_up(p, out)), weight, p.scale))
            for p in patches if p.mid is not None
        ]
        if isinstance(module, nn.Conv2d):
            self.stride, self.padding, self.dilation = module.stride, module.padding, module.dilation

    def _follow(self, x: Tensor) -> None:
        """Move the factors to x's device and dtype (once per change: streamed layers compute where x is)."""
        def to(t: Tensor) -> Tensor:
            return t.to(device=x.device, dtype=x.dtype)

        if self.down is not None and self.up is not None:
            self.down, self.up = to(self.down), to(self.up)
        self.tucker = [(to(d), to(m), to(u)) for d, m, u in self.tucker]

    def __call__(self, module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        x = args[0]
        factor = self.down if self.down is not None else self.tucker[0][0] if self.tucker else None
        if factor is not None and (factor.device != x.device or factor.dtype != x.dtype):
            self._follow(x)
        delta = None
        if self.down is not None and self.up is not None:
            if self.conv:
                h = F.conv2d(x, self.down, None, self.stride, self.padding, self.dilation)  # (B, Σr, H', W')
                delta = F.conv2d(h, self.up)  # 1x1: (B, out, H', W')
            else:
                delta = F.linear(F.linear(x, self.down), self.up)  # (..., Σr) -> (..., out)
        for down, mid, up in self.tucker:
            h = F.conv2d(F.conv2d(x, down), mid, None, self.stride, self.padding, self.dilation)
            term = F.conv2d(h, up)
            delta = term if delta is None else delta + term
        return output if delta is None else output + delta


class _ActivePatches:
    """No-op forward pre-hook that marks a module as patched by an open context (see PatchConflict)."""

    def __call__(self, module: nn.Module, args: tuple) -> None:
        return None


def _known_patches(patches: Iterable[object], owner: str) -> list[LoraPatch | WeightPatch]:
    out = []
    for patch in patches:
        if not isinstance(patch, (LoraPatch, WeightPatch)):
            raise UnsupportedPatch(f"{owner} carries a patch of kind {type(patch).__name__}, which cannot be applied")
        out.append(patch)
    return out


def _is_marked(module: nn.Module) -> bool:
    # torch keeps registered hooks in this dict; reading it is the only way to see what other contexts registered.
    return any(isinstance(h, _ActivePatches) for h in module._forward_pre_hooks.values())


def _grouped(module: nn.Module, patches: Iterable[object]) -> dict[str, tuple[nn.Module, list[LoraPatch]]]:
    """Patches by target, each checked against its layer."""
    groups: dict[str, tuple[nn.Module, list[LoraPatch]]] = {}
    for patch in _known_patches(patches, type(module).__name__):
        if not isinstance(patch, LoraPatch):
            continue  # whole-parameter patches: _parameter_plan
        if patch.target not in groups:
            try:
                layer = module.get_submodule(patch.target)
            except AttributeError:
                raise PatchTargetError(
                    f"{patch.source or 'LoRA'}: no layer {patch.target!r} in {type(module).__name__}"
                ) from None
            groups[patch.target] = (layer, [])
        check_patch(patch, groups[patch.target][0])
        groups[patch.target][1].append(patch)
    return groups


def _weight_read_by_parent(root: nn.Module, target: str) -> bool:
    parent_name, _, child = target.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    return any(isinstance(parent, cls) and child == attr for cls, attr in _WEIGHT_READ_BY_PARENT)


def _merged_weight(layer: nn.Module, patches: Sequence[LoraPatch]) -> Tensor:
    """W + Σ ΔW, summed in float32 and rounded once to W's dtype."""
    weight = layer.weight
    total = weight.detach().float()
    for patch in patches:
        total = total + lora_delta(patch, weight.shape, weight.device)
    return total.to(weight.dtype)


def _parameter_name(patch: LoraPatch | WeightPatch) -> str:
    """The parameter a patch changes (a LoRA adapts its layer's weight)."""
    return patch.target + ".weight" if isinstance(patch, LoraPatch) else patch.target


def _source_value(value: Tensor | OtherWeight, device: torch.device) -> Tensor:
    if isinstance(value, OtherWeight):
        try:
            base = value.module.get_parameter(value.name)
        except AttributeError:
            raise PatchTargetError(f"merge source has no parameter {value.name!r}") from None
        return patched_value(base, _known_patches(value.patches, "merge source"), device)
    return value.to(device=device, dtype=torch.float32)


def patched_value(base: Tensor, patches: Sequence[LoraPatch | WeightPatch],
                  device: torch.device | str | None = None) -> Tensor:
    """One parameter with its patches folded in, in order, float32 on `device` (default: the parameter's):
    a LoraPatch adds its ΔW; a WeightPatch scales by strength_model, then adds strength_patch · value (ComfyUI's
    calculate_weight). Reads `base` and the sources only, so it may run while nothing is applied."""
    device = torch.device(device) if device is not None else base.device
    total = base.detach().to(device=device, dtype=torch.float32)
    for patch in patches:
        if isinstance(patch, LoraPatch):
            total = total + lora_delta(patch, total.shape, device)
            continue
        if patch.strength_model != 1.0:
            total = total * patch.strength_model
        if patch.value is not None and patch.strength_patch != 0.0:
            value = _source_value(patch.value, device)
            if value.shape != total.shape:
                raise PatchTargetError(
                    f"{patch.source or 'merge'}: {patch.target!r} has shape {tuple(value.shape)} in the merged model "
                    f"and {tuple(total.shape)} here"
                )
            total = total + value * patch.strength_patch
    return total


def _parameter_plan(module: nn.Module, patches: Iterable[object]) -> dict[str, tuple[nn.Module, str, list]]:
    """Parameters that have at least one WeightPatch: name -> (owning module, attribute, every patch of that
    parameter in order, LoRAs of its layer included, so they fold in order instead of running as hooks)."""
    known = _known_patches(patches, type(module).__name__)
    names = {p.target for p in known if isinstance(p, WeightPatch)}
    by_name: dict[str, list] = {}
    for patch in known:
        by_name.setdefault(_parameter_name(patch), []).append(patch)
    plan: dict[str, tuple[nn.Module, str, list]] = {}
    for name in sorted(names):
        owner_name, _, attr = name.rpartition(".")
        try:
            owner = module.get_submodule(owner_name) if owner_name else module
        except AttributeError:
            owner = None
        if owner is None or not isinstance(getattr(owner, attr, None), nn.Parameter):
            raise PatchTargetError(f"no parameter {name!r} in {type(module).__name__}")
        plan[name] = (owner, attr, by_name[name])
    return plan


def _planned_values(plan: dict[str, tuple[nn.Module, str, list]]) -> dict[str, Tensor]:
    """Every planned parameter's new value in its own dtype, all computed before any is written: a merge source
    may be the very module being patched (a model merged with a LoRA'd copy of itself)."""
    values = {}
    for name, (owner, attr, group) in plan.items():
        param = getattr(owner, attr)
        values[name] = patched_value(param, group, param.device).to(param.dtype)
    return values


def _mark(stack: ExitStack, modules: Iterable[nn.Module]) -> None:
    """Raise PatchConflict if another open context patches one of `modules`; else mark them until `stack` closes."""
    modules = list(modules)
    if any(_is_marked(m) for m in modules):
        raise PatchConflict(
            "a module already has patches applied by another open context; patches of two handles of the same "
            "model cannot be active at the same time"
        )
    for m in modules:
        stack.callback(m.register_forward_pre_hook(_ActivePatches()).remove)


@contextmanager
def hooked(module: nn.Module, patches: Iterable[object]) -> Iterator[nn.Module]:
    """Apply `patches` to `module` with forward hooks for the context (see the module docstring); yields `module`."""
    patches = list(patches)
    plan = _parameter_plan(module, patches)
    groups = {t: g for t, g in _grouped(module, patches).items() if t + ".weight" not in plan}
    with ExitStack() as stack:
        if groups or plan:
            _mark(stack, [module, *(layer for layer, _ in groups.values()), *(o for o, _, _ in plan.values())])
        for name, value in _planned_values(plan).items():
            owner, attr, _ = plan[name]
            stack.callback(setattr, owner, attr, getattr(owner, attr))  # the same Parameter object goes back
            setattr(owner, attr, nn.Parameter(value, requires_grad=False))
        for target, (layer, group) in groups.items():
            if _weight_read_by_parent(module, target):
                original = layer.weight
                swapped = nn.Parameter(_merged_weight(layer, group), requires_grad=False)
                stack.callback(setattr, layer, "weight", original)  # the same Parameter object goes back
                layer.weight = swapped
            else:
                stack.callback(layer.register_forward_hook(_LoraForwardHook(layer, group)).remove)
        yield module


@contextmanager
def merged(
    module: nn.Module, patches: Iterable[object], *, backup_device: torch.device | str | None = None
) -> Iterator[nn.Module]:
    """Add the patches into the weights for the context and restore them exactly from a saved copy of only the
    adapted weights (kept on `backup_device`, default: the weight's own). Yields `module`."""
    patches = list(patches)
    plan = _parameter_plan(module, patches)
    groups = {t: g for t, g in _grouped(module, patches).items() if t + ".weight" not in plan}
    with ExitStack() as stack:
        if groups or plan:
            _mark(stack, [module, *(layer for layer, _ in groups.values()), *(o for o, _, _ in plan.values())])
        for name, value in _planned_values(plan).items():
            owner, attr, _ = plan[name]
            param = getattr(owner, attr)
            stack.callback(_write, param, param.detach().to(backup_device or param.device, copy=True))
            _write(param, value)
        for layer, group in groups.values():
            weight = layer.weight
            saved = weight.detach().to(backup_device or weight.device, copy=True)
            new = _merged_weight(layer, group)  # computed before the write: a failure leaves W untouched
            stack.callback(_write, weight, saved)
            _write(weight, new)
        yield module


def _write(weight: Tensor, value: Tensor) -> None:
    with torch.no_grad():  # a parameter's data, not a step of any computation
        weight.copy_(value)


def applied(module: nn.Module, patches: Iterable[object], *, mode: PatchMode = "hooks"):
    """Apply `patches` to `module` for the duration of a `with` block ("hooks" by default, or "merged")."""
    if mode == "hooks":
        return hooked(module, patches)
    if mode == "merged":
        return merged(module, patches)
    raise ValueError(f"patch mode must be 'hooks' or 'merged', got {mode!r}")


# ---------------------------------------------------------------------------------------------------------------
# Handles


@contextmanager
def applied_to_model(model: Model, *, mode: PatchMode = "hooks") -> Iterator[nn.Module]:
    """The model's patches applied to `model.unet` for the context; yields the UNet to call."""
    patches = _known_patches(model.patches, f"MODEL {model.name!r}")
    foreign = sorted({p.root for p in patches if p.root != "unet"})
    if foreign:
        raise PatchTargetError(f"MODEL {model.name!r} carries patches for {foreign}, not for its UNet")
    with applied(model.unet, patches, mode=mode) as unet:
        yield unet


@contextmanager
def applied_to_clip(clip: Clip, *, mode: PatchMode = "hooks") -> Iterator[Clip]:
    """The clip's patches applied to its text encoders for the context; yields `clip`."""
    patches = _known_patches(clip.patches, f"CLIP {clip.name!r}")
    slots = {e.slot.name for e in clip.encoders}
    foreign = sorted({p.root for p in patches if p.root not in slots})
    if foreign:
        raise PatchTargetError(f"CLIP {clip.name!r} carries patches for {foreign}; its encoders are {sorted(slots)}")
    with ExitStack() as stack:
        for encoder in clip.encoders:
            mine = [p for p in patches if p.root == encoder.slot.name]
            if mine:
                stack.enter_context(applied(encoder.module, mine, mode=mode))
        yield clip


__all__ = [
    "LoraPatch",
    "OtherWeight",
    "WeightPatch",
    "patched_value",
    "PatchConflict",
    "PatchError",
    "PatchMode",
    "PatchRoot",
    "PatchTargetError",
    "UnsupportedPatch",
    "applied",
    "applied_to_clip",
    "applied_to_model",
    "check_patch",
    "hooked",
    "lora_delta",
    "merged",
]
