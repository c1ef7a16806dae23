"""ComfyUI's `comfy.utils`: loading weight files, resizing, batch helpers, tiled processing and the ProgressBar.

ProgressBar reports to the node run in progress (the `progress` websocket message, like Chisel's own nodes); as in
ComfyUI, reporting progress is also where an interrupted prompt stops (InterruptProcessingException).
load_torch_file reads .safetensors with safetensors; other (pickle) files only with torch's weights_only loader
unless the server allows pickles (`--allow-pickle-custom-nodes`).
"""

from __future__ import annotations

import itertools
import logging
import math
import struct
from collections.abc import Callable, Mapping
from typing import Any

import torch

from comfy_compat import host
from diffusion.concat_cond import resize_to_batch as _resize_to_batch
from nodes.latent import bislerp as _bislerp
from nodes.tensor_ops import repeat_to_batch_size
from nodes.tensor_ops import upscale as _upscale

log = logging.getLogger("chisel.custom_nodes")

ALWAYS_SAFE_LOAD = True
MMAP_TORCH_FILES = False
DISABLE_MMAP = False
PROGRESS_BAR_ENABLED = True
PROGRESS_BAR_HOOK: Callable[..., Any] | None = None


# ---- files --------------------------------------------------------------------------------------------------------
def load_torch_file(ckpt: str, safe_load: bool = False, device: torch.device | None = None,
                    return_metadata: bool = False) -> Any:
    """A weight file as a state dict ({name: tensor}); with return_metadata, (state dict, safetensors metadata)."""
    device = device or torch.device("cpu")
    metadata = None
    path = str(ckpt)
    if path.lower().endswith((".safetensors", ".sft")):
        import safetensors

        try:
            with safetensors.safe_open(path, framework="pt", device=device.type) as handle:
                sd = {key: handle.get_tensor(key) for key in handle.keys()}
                if return_metadata:
                    metadata = handle.metadata()
        except Exception as error:
            message = str(error.args[0]) if error.args else ""
            if "HeaderTooLarge" in message or "MetadataIncompleteBuffer" in message:
                raise ValueError(f"{message}\n\nFile path: {path}\n\nThe safetensors file is corrupt or incomplete."
                                 ) from error
            raise
    else:
        if host.HOST.allow_pickle and not safe_load:
            log.warning("loading %s with pickle (allowed by --allow-pickle-custom-nodes)", path)
            loaded = torch.load(path, map_location=device, weights_only=False)
        else:
            try:
                loaded = torch.load(path, map_location=device, weights_only=True)
            except Exception as error:
                raise RuntimeError(f"{path}: this file holds Python objects beyond tensors, which could run code when "
                                   "loaded; Chisel loads such files only with --allow-pickle-custom-nodes (or convert "
                                   f"it to .safetensors). ({type(error).__name__}: {error})") from error
        if isinstance(loaded, Mapping) and "state_dict" in loaded:
            sd = loaded["state_dict"]
        elif isinstance(loaded, Mapping) and len(loaded) == 1 and isinstance(next(iter(loaded.values())), dict):
            sd = next(iter(loaded.values()))
        else:
            sd = loaded
    return (sd, metadata) if return_metadata else sd


def save_torch_file(sd: Mapping[str, torch.Tensor], ckpt: str, metadata: Mapping[str, str] | None = None) -> None:
    import safetensors.torch

    safetensors.torch.save_file(dict(sd), ckpt, metadata=dict(metadata) if metadata is not None else None)


def safetensors_header(safetensors_path: str, max_size: int = 100 * 1024 * 1024) -> bytes | None:
    with open(safetensors_path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > max_size:
            return None
        return handle.read(length)


# ---- state dicts --------------------------------------------------------------------------------------------------
def calculate_parameters(sd: Mapping[str, torch.Tensor], prefix: str = "") -> int:
    return sum(w.nelement() for k, w in sd.items() if k.startswith(prefix))


def weight_dtype(sd: Mapping[str, torch.Tensor], prefix: str = "") -> torch.dtype | None:
    counts: dict[torch.dtype, int] = {}
    for key, weight in sd.items():
        if key.startswith(prefix):
            counts[weight.dtype] = counts.get(weight.dtype, 0) + weight.numel()
    return max(counts, key=counts.get) if counts else None  # type: ignore[arg-type]


def state_dict_key_replace(state_dict: dict[str, Any], keys_to_replace: Mapping[str, str]) -> dict[str, Any]:
    for old, new in keys_to_replace.items():
        if old in state_dict:
            state_dict[new] = state_dict.pop(old)
    return state_dict


def state_dict_prefix_replace(state_dict: dict[str, Any], replace_prefix: Mapping[str, str],
                              filter_keys: bool = False) -> dict[str, Any]:
    out = {} if filter_keys else state_dict
    for prefix, replacement in replace_prefix.items():
        for key in [k for k in state_dict if k.startswith(prefix)]:
            out[replacement + key[len(prefix):]] = state_dict.pop(key)
    return out


def convert_sd_to(state_dict: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    for key in list(state_dict):
        state_dict[key] = state_dict[key].to(dtype)
    return state_dict


def set_attr(obj: Any, attr: str, value: Any) -> Any:
    *parents, last = attr.split(".")
    for name in parents:
        obj = getattr(obj, name)
    previous = getattr(obj, last)
    setattr(obj, last, value)
    return previous


def set_attr_param(obj: Any, attr: str, value: torch.Tensor) -> Any:
    return set_attr(obj, attr, torch.nn.Parameter(value, requires_grad=False))


def copy_to_param(obj: Any, attr: str, value: torch.Tensor) -> None:
    *parents, last = attr.split(".")
    for name in parents:
        obj = getattr(obj, name)
    getattr(obj, last).data.copy_(value)


def get_attr(obj: Any, attr: str) -> Any:
    for name in attr.split("."):
        obj = getattr(obj, name)
    return obj


# ---- batches and resizing -----------------------------------------------------------------------------------------
def resize_to_batch_size(tensor: torch.Tensor, batch_size: int) -> torch.Tensor:
    return _resize_to_batch(tensor, batch_size)


def resize_list_to_batch_size(items: list[Any], batch_size: int) -> list[Any]:
    if len(items) == batch_size or not items:
        return items
    return [items[i] for i in _resize_to_batch(torch.arange(len(items)), batch_size).tolist()]


def bislerp(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    return _bislerp(samples, width, height)


def lanczos(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    return _upscale(samples, width, height, "lanczos")


def common_upscale(samples: torch.Tensor, width: int, height: int, upscale_method: str, crop: str) -> torch.Tensor:
    """[B, C, H, W] (or [B, C, T, H, W]) resized to height x width with ComfyUI's methods (nearest-exact, bilinear,
    area, bicubic, bislerp, lanczos), centre-cropped to the target's aspect ratio first when crop == "center"."""
    if samples.ndim == 5:  # video latents: frames as batch
        b, c, t, h, w = samples.shape
        flat = samples.movedim(2, 1).reshape(b * t, c, h, w)
        out = common_upscale(flat, width, height, upscale_method, crop)
        return out.reshape(b, t, c, height, width).movedim(1, 2)
    if upscale_method == "bislerp":
        if crop == "center":
            from nodes.resize import crop_to_aspect

            samples = crop_to_aspect(samples, width, height)
        return _bislerp(samples, width, height)
    return _upscale(samples, width, height, upscale_method, crop)


def reshape_mask(input_mask: torch.Tensor, output_shape: tuple[int, ...]) -> torch.Tensor:
    dims = len(output_shape) - 2
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[dims]
    if dims == 2:
        input_mask = input_mask.reshape((-1, 1, input_mask.shape[-2], input_mask.shape[-1]))
    if dims == 3 and input_mask.ndim < 5:
        input_mask = input_mask.reshape((1, 1, -1, input_mask.shape[-2], input_mask.shape[-1]))
    mask = torch.nn.functional.interpolate(input_mask, size=output_shape[2:], mode=mode)
    if mask.shape[1] < output_shape[1]:
        mask = mask.repeat((1, output_shape[1]) + (1,) * dims)[:, :output_shape[1]]
    return repeat_to_batch_size(mask, output_shape[0])


# ---- tiles --------------------------------------------------------------------------------------------------------
def get_tiled_scale_steps(width: int, height: int, tile_x: int, tile_y: int, overlap: int) -> int:
    rows = 1 if height <= tile_y else math.ceil((height - overlap) / (tile_y - overlap))
    cols = 1 if width <= tile_x else math.ceil((width - overlap) / (tile_x - overlap))
    return rows * cols


@torch.inference_mode()
def tiled_scale_multidim(samples: torch.Tensor, function: Callable[[torch.Tensor], torch.Tensor],
                         tile: tuple[int, ...] = (64, 64), overlap: Any = 8, upscale_amount: Any = 4,
                         out_channels: int = 3, output_device: str = "cpu", downscale: bool = False,
                         index_formulas: Any = None, pbar: ProgressBar | None = None) -> torch.Tensor:
    """Run `function` over overlapping tiles of each sample and blend the results with feathered edges."""
    dims = len(tile)
    amounts = upscale_amount if isinstance(upscale_amount, (tuple, list)) else [upscale_amount] * dims
    overlaps = overlap if isinstance(overlap, (tuple, list)) else [overlap] * dims
    formulas = index_formulas if index_formulas is not None else amounts
    formulas = formulas if isinstance(formulas, (tuple, list)) else [formulas] * dims

    def scaled(table: Any, dim: int, value: float) -> float:
        factor = table[dim]
        if callable(factor):
            return factor(value)
        return value / factor if downscale else factor * value

    def scaled_shape(shape: Any) -> list[int]:
        return [round(scaled(amounts, i, shape[i])) for i in range(len(shape))]

    output = torch.empty([samples.shape[0], out_channels] + scaled_shape(samples.shape[2:]), device=output_device)
    for b in range(samples.shape[0]):
        s = samples[b:b + 1]
        if all(s.shape[d + 2] <= tile[d] for d in range(dims)):
            output[b:b + 1] = function(s).to(output_device)
            if pbar is not None:
                pbar.update(1)
            continue
        out = torch.zeros([1, out_channels] + scaled_shape(s.shape[2:]), device=output_device)
        out_div = torch.zeros_like(out)
        positions = [range(0, s.shape[d + 2] - overlaps[d], tile[d] - overlaps[d]) if s.shape[d + 2] > tile[d]
                     else [0] for d in range(dims)]
        for it in itertools.product(*positions):
            s_in = s
            corner = []
            for d in range(dims):
                pos = max(0, min(s.shape[d + 2] - overlaps[d], it[d]))
                length = min(tile[d], s.shape[d + 2] - pos)
                s_in = s_in.narrow(d + 2, pos, length)
                corner.append(round(scaled(formulas, d, pos)))
            ps = function(s_in).to(output_device)
            mask = torch.ones_like(ps)
            for d in range(2, dims + 2):
                feather = round(scaled(amounts, d - 2, overlaps[d - 2]))
                if feather >= mask.shape[d]:
                    continue
                for t in range(feather):
                    a = (t + 1) / feather
                    mask.narrow(d, t, 1).mul_(a)
                    mask.narrow(d, mask.shape[d] - 1 - t, 1).mul_(a)
            o, o_d = out, out_div
            for d in range(dims):
                o = o.narrow(d + 2, corner[d], mask.shape[d + 2])
                o_d = o_d.narrow(d + 2, corner[d], mask.shape[d + 2])
            o.add_(ps * mask)
            o_d.add_(mask)
            if pbar is not None:
                pbar.update(1)
        output[b:b + 1] = out / out_div
    return output


def tiled_scale(samples: torch.Tensor, function: Callable[[torch.Tensor], torch.Tensor], tile_x: int = 64,
                tile_y: int = 64, overlap: int = 8, upscale_amount: float = 4, out_channels: int = 3,
                output_device: str = "cpu", pbar: ProgressBar | None = None) -> torch.Tensor:
    return tiled_scale_multidim(samples, function, (tile_y, tile_x), overlap=overlap, upscale_amount=upscale_amount,
                                out_channels=out_channels, output_device=output_device, pbar=pbar)


# ---- progress -----------------------------------------------------------------------------------------------------
def set_progress_bar_enabled(enabled: bool) -> None:
    global PROGRESS_BAR_ENABLED
    PROGRESS_BAR_ENABLED = enabled


def set_progress_bar_global_hook(function: Callable[..., Any] | None) -> None:
    global PROGRESS_BAR_HOOK
    PROGRESS_BAR_HOOK = function


def _report_to_run(value: int, total: int, preview: Any, node_id: str | None = None) -> None:
    """The default hook: the node run in progress reports `progress` (and stops there when interrupted)."""
    ctx = host.current_run()
    if ctx is None:
        return
    ctx.progress(int(value), int(total), _preview(preview))


def _preview(preview: Any) -> Any:
    """ComfyUI's ("JPEG"|"PNG", PIL image, max size) preview as Chisel's Preview; anything else is dropped."""
    if not (isinstance(preview, tuple) and len(preview) >= 2):
        return None
    try:
        import io

        from diffusion.values import Preview

        kind = "PNG" if str(preview[0]).upper() == "PNG" else "JPEG"
        image = preview[1].convert("RGB")
        if len(preview) > 2 and preview[2]:
            image.thumbnail((int(preview[2]), int(preview[2])))
        buffer = io.BytesIO()
        image.save(buffer, format=kind, quality=95)
        return Preview(data=buffer.getvalue(), format=kind)
    except Exception:  # a preview is a nicety: never let it fail the node
        return None


class ProgressBar:
    """Progress of a node: `update(n)` adds n steps, `update_absolute(value, total, preview)` sets it."""

    def __init__(self, total: int, node_id: str | None = None):
        self.total = total
        self.current = 0
        self.hook = PROGRESS_BAR_HOOK or _report_to_run
        self.node_id = node_id

    def update_absolute(self, value: int, total: int | None = None, preview: Any = None) -> None:
        if total is not None:
            self.total = total
        self.current = min(value, self.total)
        if self.hook is not None:
            self.hook(self.current, self.total, preview, node_id=self.node_id)

    def update(self, value: int) -> None:
        self.update_absolute(self.current + value)


def __getattr__(name: str):  # noqa: ANN202 - ComfyUI's other names: placeholders that fail when used
    from comfy_compat.surface.unavailable import module_attribute

    return module_attribute('comfy.utils', name)
