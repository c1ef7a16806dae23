"""What the app hands to nodes through `ctx.services`: folders, the model manager, and run settings.

The app factory (server/app.py) builds one `Services` and passes it down; tests build their own in a few lines.
Nodes depend only on these protocols, never on the server package.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from diffusion.memory import DeviceChoice, ModelManager, WeightDtype

VramMode = Literal["normal", "low", "none"]

FolderKind = Literal["input", "output", "temp", "user"]
PreviewMethod = Literal["none", "auto", "latent2rgb"]


class Folders(Protocol):
    """The server's folders (implemented by server/paths.py)."""

    def directory(self, kind: FolderKind) -> Path:
        """The root of input/, output/, temp/ or user/."""
        ...

    def model_files(self, folder: str) -> Sequence[str]:
        """Relative names of the files of a model folder kind ("checkpoints", "loras", "vae", "embeddings"...),
        across every configured search path, sorted."""
        ...

    def search_dirs(self, folder: str) -> Sequence[Path]:
        """The directories searched for a model folder kind, in order (e.g. the embeddings folders)."""
        ...

    def model_path(self, folder: str, name: str) -> Path:
        """The real path of a model file; raises a typed error naming the file and the folders searched."""
        ...

    def input_path(self, name: str) -> Path:
        """The real path of an input image name (`sub/x.png`, optionally annotated ` [output]`/` [temp]`),
        refusing anything that resolves outside its folder."""
        ...


@dataclass(frozen=True)
class RunSettings:
    """Per-server settings nodes read. `save_metadata`: write prompt/workflow PNG chunks (ComfyUI's default on)."""

    save_metadata: bool = True
    preview_method: PreviewMethod = "auto"
    preview_max_size: int = 512


def cpu_model_manager() -> ModelManager:
    """A model manager computing on the CPU (placement is a no-op there): the default of `Services.models`, and what
    library callers without a server (train/eval.py) pass. torch is imported only when one is built."""
    import torch

    from diffusion.memory import ModelManager

    return ModelManager(torch.device("cpu"))


@dataclass(frozen=True)
class Services:
    """folders   the server's folders
    models    the model manager (diffusion/memory.py); never None: a CPU manager unless the app passes its own
    settings  per-server settings nodes read"""

    folders: Folders
    models: ModelManager = field(default_factory=cpu_model_manager)
    settings: RunSettings = RunSettings()


LOWVRAM_FRACTION = 0.5
"""--lowvram: the share of the GPU's total memory model weights may take (the rest of a model streams)."""


def model_manager(device_choice: DeviceChoice | None, weight_dtype: WeightDtype | None, *,
                  vram_mode: VramMode = "normal", budget_bytes: int | None = None,
                  reserve_bytes: int | None = None) -> ModelManager:
    """The model manager on the chosen device ("cpu", "auto"/None: the first GPU when there is one) with the chosen
    weight dtype (auto: bf16 / fp8 Flux and SD3 files compute in bf16 on a CPU that has it); the composition root
    builds one per server through this, never importing the model library.

    The device budget (ComfyUI's --lowvram / --novram / --reserve-vram): `budget_bytes` when given (on any device,
    the CPU included); else on an accelerator "low" = LOWVRAM_FRACTION of the GPU's total memory, "none" = 0 (every
    diffusion model streams block by block); "normal" and the CPU: no budget (the free memory less the reserve).
    `reserve_bytes`: GPU memory kept free beside the weights (None: the manager's 1 GiB)."""
    import torch

    from diffusion.memory import RESERVE_BYTES, ModelManager, pick_device

    device = pick_device(device_choice or "auto")
    if budget_bytes is None and device.type != "cpu":
        if vram_mode == "none":
            budget_bytes = 0
        elif vram_mode == "low" and device.type == "cuda":
            budget_bytes = int(torch.cuda.get_device_properties(device).total_memory * LOWVRAM_FRACTION)
    return ModelManager(device, weight_dtype=weight_dtype or "auto", cpu_bf16_flow=True, budget_bytes=budget_bytes,
                        reserve_bytes=RESERVE_BYTES if reserve_bytes is None else reserve_bytes)


def device_count() -> int:
    """GPUs this machine's torch can use (0 without CUDA); `chisel worker` starts one worker per GPU."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def out_of_memory_hint(models: ModelManager, error: BaseException) -> str | None:
    """After a GPU out-of-memory error: move idle models off the GPU and return the hint for the error message;
    None for any other error."""
    from diffusion.memory import is_out_of_memory

    if not is_out_of_memory(error):
        return None
    models.offload_all()
    return ("This error means the GPU ran out of memory. Idle models were moved off the GPU; try again, or use a "
            "smaller image or batch size.")
