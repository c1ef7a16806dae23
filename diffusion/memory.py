"""The model manager: which device computes, what dtype weights take there, loading files once, and keeping the
modules a run needs on the compute device.

Ownership: a loaded checkpoint lives as long as something holds it, normally the executor's output cache (which
counts its bytes and evicts it under its memory budget). The manager only remembers loaded files weakly, so two nodes
loading the same unchanged file share one copy, and it never keeps weights alive on its own.

Placement: on a GPU, modules are loaded straight onto it when they fit, and `on_device(...)` moves what a run needs
onto it, first moving the least recently used idle modules back to the CPU when free memory runs short; models stay
on the GPU between prompts until then. On a CPU-only machine all of this is a no-op.

Streaming (ComfyUI's low-VRAM mode): a diffusion model that does not fit the device's budget even after the idle
modules went back to the CPU is not moved; it runs streamed instead (diffusion/streaming.py: its blocks come to the
device one at a time, as many as fit staying there for the run). The budget is the GPU's free memory less the
reserve, or `budget_bytes` when given; a budget on a CPU-only machine makes the same decision and runs the same
streaming code (copies from the CPU to the CPU), which is how it is tested without a GPU.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from diffusion.streaming import StreamPlan, can_stream, streamed

DeviceChoice = Literal["auto", "cpu", "cuda", "mps"]
WeightDtype = Literal["auto", "fp32", "fp16", "bf16"]
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
RESERVE_BYTES = 1 << 30  # kept free on the GPU for activations beyond the weights (ComfyUI reserves ~1.2 GB)


def pick_device(choice: DeviceChoice = "auto") -> torch.device:
    """The compute device: the first CUDA GPU, else Apple's MPS, else the CPU (or what `choice` names)."""
    if choice == "cpu":
        return torch.device("cpu")
    if choice in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if choice in ("auto", "mps") and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    if choice != "auto":
        raise RuntimeError(f"device {choice!r} was asked for but is not available")
    return torch.device("cpu")


def _weight_dtype(device: torch.device, choice: WeightDtype = "auto") -> torch.dtype | None:
    """The dtype weights take on `device`. auto: fp32 on the CPU (ComfyUI's numbers); on CUDA bf16 where the GPU
    supports it (Ampere and newer: tensor-core speed, and fp32's range, so the VAE cannot overflow as it can in fp16),
    else fp16; elsewhere None = the file's own float dtype. An explicit choice applies everywhere (bf16 on a CPU with
    AMX is ~3x faster than fp32)."""
    if choice != "auto":
        return _DTYPES[choice]
    if device.type == "cpu":
        return torch.float32
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def is_out_of_memory(error: BaseException) -> bool:
    """True for an accelerator out-of-memory error (CUDA OOM, or an accelerator error saying so)."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def module_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.parameters()) + sum(
        t.numel() * t.element_size() for t in module.buffers())


@dataclass(frozen=True)
class FileKey:
    """A loaded file's identity: its real path and the stat fields that change when it is replaced."""

    path: str
    mtime_ns: int
    size: int
    variant: str  # what was loaded from it and how (e.g. "checkpoint@cuda:0/None")

    @staticmethod
    def of(path: Path, variant: str) -> FileKey:
        real = os.path.realpath(path)
        stat = os.stat(real)
        return FileKey(real, stat.st_mtime_ns, stat.st_size, variant)


class ModelManager:
    """Loads model files (through loader functions passed in) and places modules on the compute device."""

    def __init__(self, device: torch.device | None = None, *, weight_dtype: WeightDtype = "auto",
                 reserve_bytes: int = RESERVE_BYTES, budget_bytes: int | None = None, cpu_bf16_flow: bool = False):
        """budget_bytes: the most weight bytes one run may place on the compute device; a module larger than what is
        left of it runs streamed. None: the GPU's free memory less `reserve_bytes` (no limit on a CPU).
        cpu_bf16_flow: with the automatic dtype, bf16 / fp8 Flux and SD3 files compute in bf16 on a CPU that has it
        (the server's managers; off by default: fp32 on the CPU everywhere, ComfyUI's numbers)."""
        self.device = device if device is not None else pick_device()
        self.offload_device = torch.device("cpu")
        self.dtype = _weight_dtype(self.device, weight_dtype)
        self.auto_dtype = weight_dtype == "auto" and cpu_bf16_flow
        """The dtype is the automatic one, and loaders may refine it per file (on a CPU, bf16 / fp8 Flux and SD3
        files compute in bf16 where the CPU has it: diffusion/model_files.flow_compute_dtype)."""
        self.reserve_bytes = reserve_bytes
        self.budget_bytes = budget_bytes
        self.streamed_runs = 0
        self.last_stream: StreamPlan | None = None  # the latest streamed run's plan (tests, /system_stats)
        self._lock = threading.RLock()
        self._files: weakref.WeakValueDictionary[FileKey, Any] = weakref.WeakValueDictionary()
        self._resident: OrderedDict[int, weakref.ref[nn.Module]] = OrderedDict()  # LRU of modules on the GPU
        self._in_use: set[int] = set()
        self.loads = 0  # files actually read (for tests and /system_stats)
        self._tokenizer: Any = None

    def tokenizer(self) -> Any:
        """The CLIP tokenizer, built on first use and shared (it is immutable)."""
        with self._lock:
            if self._tokenizer is None:
                from diffusion.tokenizer import ClipTokenizer

                self._tokenizer = ClipTokenizer()
            return self._tokenizer

    # ---- loading ------------------------------------------------------------------------------------------------
    def load(self, path: Path, kind: str, loader: Callable[..., Any]) -> Any:
        """`loader(path, device=, dtype=)` once per unchanged file and kind while its result is alive."""
        key = FileKey.of(path, f"{kind}@{self.device}/{self.dtype}")
        with self._lock:
            found = self._files.get(key)
            if found is not None:
                return found
            device = self._load_device(Path(key.path))
            loaded = loader(Path(key.path), device=device, dtype=self.dtype)
            self.loads += 1
            self._files[key] = loaded
            if device.type != "cpu":
                for module in _modules_of(loaded):
                    self._mark_resident(module)
            return loaded

    def _load_device(self, path: Path) -> torch.device:
        """Load straight onto the GPU when the file fits beside the reserve; otherwise onto the CPU."""
        if self.device.type != "cuda":
            return self.device
        free, _ = torch.cuda.mem_get_info(self.device)
        size = os.path.getsize(path)
        fits = size + self.reserve_bytes < free and (self.budget_bytes is None or size <= self.budget_bytes)
        return self.device if fits else self.offload_device

    # ---- placement ----------------------------------------------------------------------------------------------
    @contextmanager
    def on_device(self, *modules: nn.Module) -> Iterator[torch.device]:
        """Keep `modules` on the compute device for the duration of the block (streaming those that do not fit the
        budget); yields that device."""
        with self._lock:
            ids = {id(m) for m in modules}
            self._in_use |= ids
            try:
                to_stream, left = self._place(modules)
            except BaseException:
                self._in_use -= ids
                raise
        try:
            with ExitStack() as stack:
                for module in to_stream:
                    plan = stack.enter_context(streamed(module, self.device, left))
                    self.streamed_runs += 1
                    self.last_stream = plan
                yield self.device
        finally:
            with self._lock:
                self._in_use -= ids

    def _place(self, modules: tuple[nn.Module, ...]) -> tuple[list[nn.Module], int]:
        """Move the modules that fit onto the device (smallest first: ControlNets before the model); return the
        ones to stream and the budget left for them."""
        if self.device.type == "cpu" and self.budget_bytes is None:
            return [], 0
        # On the CPU with a budget, every module counts as away (the budget stands for a separate device's memory).
        away = [m for m in modules if self.device.type == "cpu" or _device_of(m) != self.device]
        for module in modules:
            if module not in away:
                self._mark_resident(module)
        if self.device.type == "cuda":
            self._make_room(sum(module_bytes(m) for m in away))
        left = self._budget()
        to_stream = []
        for module in sorted(away, key=module_bytes):
            size = module_bytes(module)
            if size > left and can_stream(module):
                to_stream.append(module)
                continue
            left -= size  # a module that cannot stream is moved whole, as it would fit (an OOM is handled upstream)
            if self.device.type != "cpu":
                module.to(self.device)
                self._mark_resident(module)
        return to_stream, max(left, 0)

    def _budget(self) -> int:
        """Weight bytes the device can take now: `budget_bytes`, or the GPU's free memory less the reserve."""
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            free -= self.reserve_bytes
            return free if self.budget_bytes is None else min(free, self.budget_bytes)
        return self.budget_bytes if self.budget_bytes is not None else 1 << 62

    def _make_room(self, needed: int) -> None:
        if self.device.type != "cuda" or needed == 0:
            return
        for key in list(self._resident):  # oldest first
            free, _ = torch.cuda.mem_get_info(self.device)
            if free >= needed + self.reserve_bytes:
                return
            module = self._resident[key]()
            if module is None:
                del self._resident[key]
            elif key not in self._in_use:
                module.to(self.offload_device)
                del self._resident[key]
                torch.cuda.empty_cache()

    def _mark_resident(self, module: nn.Module) -> None:
        key = id(module)
        self._resident.pop(key, None)
        self._resident[key] = weakref.ref(module)

    def offload_all(self) -> None:
        """Move every idle module off the GPU (POST /free, and after an out-of-memory error)."""
        with self._lock:
            for key, ref in list(self._resident.items()):
                module = ref()
                if module is not None and key not in self._in_use:
                    module.to(self.offload_device)
                self._resident.pop(key, None)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def loaded_files(self) -> list[str]:
        """Real paths of the model files loaded now (alive while something, e.g. the output cache, holds them)."""
        with self._lock:
            return sorted({key.path for key in list(self._files.keys())})

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"device": str(self.device), "dtype": str(self.dtype), "budget_bytes": self.budget_bytes,
                    "reserve_bytes": self.reserve_bytes, "files_loaded": self.loads,
                    "files_alive": len(self._files), "modules_on_device": len(self._resident),
                    "streamed_runs": self.streamed_runs}


def _device_of(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    return torch.device("cpu")


def _modules_of(loaded: Any) -> list[nn.Module]:
    """The modules held by a loaded-file object (its fields, and the values of mapping fields)."""
    found: list[nn.Module] = []
    for value in getattr(loaded, "__dict__", {}).values():
        values = value.values() if hasattr(value, "values") else [value]
        for item in values:
            item = getattr(item, "module", item)
            if isinstance(item, nn.Module):
                found.append(item)
    return found
