"""ComfyUI's `comfy.model_management`: devices, dtypes, memory queries, model placement and the interrupt.

Devices and placement are the server's model manager's (diffusion/memory.py): `get_torch_device()` is its compute
device, `load_models_gpu(models)` puts ModelPatchers' modules there, `unload_all_models()` / `soft_empty_cache()` move
idle models off the GPU. The interrupt is the running prompt's: `throw_exception_if_processing_interrupted()` raises
InterruptProcessingException (Chisel's own Interrupted, so the executor reports `execution_interrupted`) once the
user interrupted the prompt whose node is running.
"""

from __future__ import annotations

import enum
import os
import threading
from typing import Any

import torch

from comfy_compat import host
from nodes.context import Interrupted


def _ram() -> tuple[int, int]:
    """(total, available) bytes of system memory (Linux /proc/meminfo; sysconf elsewhere)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in handle if line.strip()}
        return fields["MemTotal"], fields.get("MemAvailable", fields.get("MemFree", 0))
    except (OSError, KeyError, ValueError, IndexError):
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return total, total // 2


class VRAMState(enum.Enum):
    DISABLED = 0
    NO_VRAM = 1
    LOW_VRAM = 2
    NORMAL_VRAM = 3
    HIGH_VRAM = 4
    SHARED = 5


class CPUState(enum.Enum):
    GPU = 0
    CPU = 1
    MPS = 2


InterruptProcessingException = Interrupted  # what ComfyUI's executor catches as an interrupt is ours here
OOM_EXCEPTION = torch.cuda.OutOfMemoryError
XFORMERS_VERSION = ""
XFORMERS_ENABLED_VAE = False
XFORMERS_IS_AVAILABLE = False
ENABLE_PYTORCH_ATTENTION = True
DISABLE_SMART_MEMORY = False
EXTRA_RESERVED_VRAM = 400 * 1024 * 1024
MIN_WEIGHT_MEMORY_RATIO = 0.4
directml_enabled = False
xpu_available = False
lowvram_available = True
interrupt_processing_mutex = threading.RLock()
interrupt_processing = False
current_loaded_models: list[Any] = []


def _manager() -> Any:
    return host.services().models


def get_torch_device() -> torch.device:
    try:
        return _manager().device
    except RuntimeError:  # not bound yet (a pack probing at import): the device the server would pick
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _state() -> tuple[VRAMState, CPUState]:
    device = get_torch_device()
    if device.type == "cpu":
        return VRAMState.DISABLED, CPUState.CPU
    if device.type == "mps":
        return VRAMState.SHARED, CPUState.MPS
    return VRAMState.NORMAL_VRAM, CPUState.GPU


def __getattr__(name: str) -> Any:  # vram_state / cpu_state follow the bound server's device
    if name in ("vram_state", "set_vram_to"):
        return _state()[0]
    if name == "cpu_state":
        return _state()[1]
    if name == "total_vram":
        return get_total_memory(get_torch_device()) / (1024 * 1024)
    if name == "total_ram":
        return _ram()[0] / (1024 * 1024)
    from comfy_compat.surface.unavailable import module_attribute

    return module_attribute('comfy.model_management', name)


def get_torch_device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} {torch.cuda.get_device_name(device)}"
    return str(device.type)


def is_device_type(device: Any, kind: str) -> bool:
    return getattr(device, "type", None) == kind


def is_device_cpu(device: Any) -> bool:
    return is_device_type(device, "cpu")


def is_device_mps(device: Any) -> bool:
    return is_device_type(device, "mps")


def is_device_cuda(device: Any) -> bool:
    return is_device_type(device, "cuda")


def is_device_xpu(device: Any) -> bool:
    return is_device_type(device, "xpu")


def cpu_mode() -> bool:
    return _state()[1] == CPUState.CPU


def mps_mode() -> bool:
    return _state()[1] == CPUState.MPS


def is_nvidia() -> bool:
    return get_torch_device().type == "cuda" and torch.version.cuda is not None


def is_amd() -> bool:
    return get_torch_device().type == "cuda" and getattr(torch.version, "hip", None) is not None


def is_intel_xpu() -> bool:
    return False


def is_directml_enabled() -> bool:
    return False


# ---- memory -------------------------------------------------------------------------------------------------------
def get_total_memory(dev: torch.device | None = None, torch_total_too: bool = False) -> Any:
    dev = dev or get_torch_device()
    if dev.type == "cuda":
        _, total = torch.cuda.mem_get_info(dev)
        reserved = torch.cuda.memory_stats(dev).get("reserved_bytes.all.current", 0)
        return (total, reserved) if torch_total_too else total
    total = _ram()[0]
    return (total, total) if torch_total_too else total


def get_free_memory(dev: torch.device | None = None, torch_free_too: bool = False) -> Any:
    dev = dev or get_torch_device()
    if dev.type == "cuda":
        stats = torch.cuda.memory_stats(dev)
        free_torch = stats.get("reserved_bytes.all.current", 0) - stats.get("active_bytes.all.current", 0)
        free_cuda, _ = torch.cuda.mem_get_info(dev)
        total = free_cuda + free_torch
        return (total, free_torch) if torch_free_too else total
    free = _ram()[1]
    return (free, free) if torch_free_too else free


def extra_reserved_memory() -> int:
    return EXTRA_RESERVED_VRAM


def minimum_inference_memory() -> int:
    return 1024 * 1024 * 1024 + extra_reserved_memory()


def maximum_vram_for_weights(device: torch.device | None = None) -> float:
    return get_total_memory(device) * 0.88 - minimum_inference_memory()


def module_size(module: torch.nn.Module) -> int:
    return sum(t.nelement() * t.element_size() for t in module.state_dict().values())


def dtype_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size() if dtype is not None else 4


# ---- placement ----------------------------------------------------------------------------------------------------
def _modules_of(model: Any) -> list[torch.nn.Module]:
    """The torch modules behind a ModelPatcher, a comfy.sd CLIP/VAE or a bare module."""
    modules = getattr(model, "compat_modules", None)
    if callable(modules):
        return list(modules())
    if isinstance(model, torch.nn.Module):
        return [model]
    inner = getattr(model, "model", None)
    return [inner] if isinstance(inner, torch.nn.Module) else []


def load_models_gpu(models: Any, memory_required: int = 0, force_patch_weights: bool = False,
                    minimum_memory_required: int | None = None, force_full_load: bool = False) -> None:
    """Move these models' modules to the compute device (the manager makes room by offloading idle ones)."""
    manager = _manager()
    device = manager.device
    for model in models:
        for module in _modules_of(model):
            if device.type != "cpu":
                with manager.on_device(module):
                    pass  # on_device moves it and marks it resident; it stays there until room is needed
            if model not in current_loaded_models:
                current_loaded_models.append(model)


def load_model_gpu(model: Any) -> None:
    load_models_gpu([model])


def loaded_models(only_currently_used: bool = False) -> list[Any]:
    return list(current_loaded_models)


def free_memory(memory_required: int, device: torch.device, keep_loaded: list[Any] | None = None) -> list[Any]:
    soft_empty_cache()
    return []


def unload_all_models() -> None:
    current_loaded_models.clear()
    _manager().offload_all()


def cleanup_models() -> None:
    return None


def cleanup_models_gc() -> None:
    return None


def soft_empty_cache(force: bool = False) -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()


# ---- devices and dtypes for each part ---------------------------------------------------------------------------
def unet_offload_device() -> torch.device:
    return torch.device("cpu")


def unet_inital_load_device(parameters: int, dtype: torch.dtype) -> torch.device:
    return get_torch_device()


def intermediate_dtype() -> torch.dtype:
    """The dtype of intermediate results between nodes (ComfyUI's default: float32)."""
    return torch.float32


def intermediate_device() -> torch.device:
    return torch.device("cpu")


def text_encoder_device() -> torch.device:
    return get_torch_device()


def text_encoder_offload_device() -> torch.device:
    return torch.device("cpu")


def text_encoder_initial_device(load_device: torch.device, offload_device: torch.device, model_size: int = 0
                                ) -> torch.device:
    return load_device


def vae_device() -> torch.device:
    return get_torch_device()


def vae_offload_device() -> torch.device:
    return torch.device("cpu")


def _weight_dtype() -> torch.dtype:
    try:
        dtype = _manager().dtype
    except RuntimeError:
        dtype = None
    return dtype or torch.float32


def unet_dtype(device: torch.device | None = None, model_params: int = 0,
               supported_dtypes: Any = (torch.float16, torch.bfloat16, torch.float32), weight_dtype: Any = None
               ) -> torch.dtype:
    return weight_dtype or _weight_dtype()


def unet_manual_cast(weight_dtype: torch.dtype, inference_device: torch.device, supported_dtypes: Any = ()
                     ) -> torch.dtype | None:
    return None


def text_encoder_dtype(device: torch.device | None = None) -> torch.dtype:
    return _weight_dtype()


def vae_dtype(device: torch.device | None = None, allowed_dtypes: Any = ()) -> torch.dtype:
    return torch.float32


def get_autocast_device(dev: Any) -> str:
    return getattr(dev, "type", "cuda")


def supports_dtype(device: torch.device, dtype: torch.dtype) -> bool:
    return dtype == torch.float32 or device.type != "cpu" or dtype == torch.bfloat16


def supports_cast(device: torch.device, dtype: torch.dtype) -> bool:
    return True


def pick_weight_dtype(dtype: torch.dtype | None, fallback_dtype: torch.dtype, device: torch.device | None = None
                      ) -> torch.dtype:
    return dtype if dtype is not None and dtype_size(dtype) <= dtype_size(fallback_dtype) else fallback_dtype


def should_use_fp16(device: torch.device | None = None, model_params: int = 0, prioritize_performance: bool = True,
                    manual_cast: bool = False) -> bool:
    device = device or get_torch_device()
    return device.type == "cuda"


def should_use_bf16(device: torch.device | None = None, model_params: int = 0, prioritize_performance: bool = True,
                    manual_cast: bool = False) -> bool:
    device = device or get_torch_device()
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def supports_fp8_compute(device: torch.device | None = None) -> bool:
    return False


def get_supported_float8_types() -> list[torch.dtype]:
    return [getattr(torch, name) for name in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, name)]


def device_supports_non_blocking(device: torch.device) -> bool:
    return device.type == "cuda"


def device_should_use_non_blocking(device: torch.device) -> bool:
    return False


def force_channels_last() -> bool:
    return False


def cast_to(weight: torch.Tensor, dtype: torch.dtype | None = None, device: torch.device | None = None,
            non_blocking: bool = False, copy: bool = False, stream: Any = None) -> torch.Tensor:
    return weight.to(device=device, dtype=dtype, non_blocking=non_blocking, copy=copy)


def cast_to_device(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype, copy: bool = False
                   ) -> torch.Tensor:
    return tensor.to(device=device, dtype=dtype, copy=copy)


def xformers_enabled() -> bool:
    return False


def xformers_enabled_vae() -> bool:
    return False


def pytorch_attention_enabled() -> bool:
    return True


def pytorch_attention_enabled_vae() -> bool:
    return True


def pytorch_attention_flash_attention() -> bool:
    return get_torch_device().type == "cuda"


def sage_attention_enabled() -> bool:
    return False


def flash_attention_enabled() -> bool:
    return False


def force_upcast_attention_dtype() -> Any:
    return None


# ---- interrupt ----------------------------------------------------------------------------------------------------
def interrupt_current_processing(value: bool = True) -> None:
    """A pack asking to stop: the node run in progress fails as interrupted at its next check."""
    global interrupt_processing
    with interrupt_processing_mutex:
        interrupt_processing = value


def processing_interrupted() -> bool:
    ctx = host.current_run()
    with interrupt_processing_mutex:
        return interrupt_processing or bool(ctx is not None and ctx.is_interrupted())


def throw_exception_if_processing_interrupted() -> None:
    global interrupt_processing
    with interrupt_processing_mutex:
        if interrupt_processing:
            interrupt_processing = False
            raise InterruptProcessingException("interrupted by a custom node")
    ctx = host.current_run()
    if ctx is not None:
        ctx.check_interrupted()
