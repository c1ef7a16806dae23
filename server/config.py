"""The settings of one server, frozen: everything `create_app(config)` needs, and nothing global.

`ServerConfig.create(base_dir, ...)` fills in the folder defaults (ComfyUI's layout under base_dir); the CLI builds one
from its flags, tests build one in tmp_path. Nothing reads the environment except `auth_token_from_env`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

PreviewMethod = Literal["none", "auto", "latent2rgb"]
DeviceChoice = Literal["auto", "cpu"]
WeightDtype = Literal["auto", "fp32", "fp16", "bf16"]
VramMode = Literal["normal", "low", "none"]

DEFAULT_PORT = 8188
DEFAULT_MAX_UPLOAD = 100 * 1024 * 1024  # ComfyUI's --max-upload-size default (100 MB)
AUTH_TOKEN_ENV = "CHISEL_AUTH_TOKEN"
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ServerConfig:
    """One server's settings.

    base_dir            root of models/, input/, output/, temp/, user/, custom_nodes/ (ComfyUI's --base-directory)
    listen / port       addresses to bind (default loopback only) and the port (0: any free port)
    auth_token          when set, every route and the websocket need it (Bearer header, ?token=, or login cookie)
    input/output/temp/user_dir   folder overrides (default: under base_dir)
    extra_model_paths   extra_model_paths.yaml files (ComfyUI's format) adding model search folders
    max_upload_size     bytes; bigger request bodies get 413
    cache_ram_bytes     memory budget of the node output cache; cache_vram_bytes the GPU part (None: automatic)
    preview_method      sampler previews: none | auto | latent2rgb (a prompt's extra_data.preview_method overrides)
    preview_size        longest side of a preview image, pixels
    disable_metadata    do not write prompt/workflow PNG text chunks
    web_root            the editor's static files (default: the repository's web/)
    workflows_dir       the bundled workflow templates (default: the repository's workflows/); their example
                        inputs (workflows/assets/) are copied into input/ when missing
    bundled_models_dir  the project's own models/ (the built-in model), searched after base_dir's models/ so the
                        ready workflows run from any base directory; None to leave it out
    custom_nodes_dir    ComfyUI-style custom node packages (default: base_dir/custom_nodes)
    load_custom_nodes   False: import no pack at all (--disable-custom-nodes)
    disabled_custom_nodes  pack names (entries of custom_nodes/) not to import (--disable-custom-node NAME)
    allow_pickle_custom_nodes  comfy.utils.load_torch_file may unpickle arbitrary objects for packs (default: weights
                        only, as torch's weights_only loader)
    allowed_origins     extra browser origins allowed to make state-changing requests ("https://host:port")
    allowed_hosts       extra Host names accepted while bound to loopback (e.g. a reverse proxy's name)
    device              "cpu" forces CPU even when a GPU is present
    weight_dtype        model weights' dtype: auto = fp32 on the CPU (ComfyUI's numbers), the file's fp16/bf16 on a
                        GPU, and on a CPU with AVX-512 BF16 / AMX bf16 for bf16 / fp8 Flux and SD3 files (the SD
                        UNets keep fp32); bf16 on such a CPU samples about 3x faster at ~1 % different pixels
    vram_mode           ComfyUI's --lowvram / --novram: "low" lets weights take at most half of the GPU's memory
                        (the rest of a diffusion model streams block by block), "none" streams every diffusion model
                        (budget 0); both apply to an accelerator only. "normal": the free memory less the reserve
    vram_budget_bytes   the most weight bytes a run places on the compute device (a larger diffusion model
                        streams); wins over vram_mode and applies on a CPU too (the streaming path, for tests)
    reserve_vram_bytes  GPU memory kept free beside the weights (ComfyUI's --reserve-vram; None: 1 GiB)
    history_limit       completed prompts kept in history (oldest dropped)
    ray                 None: one worker thread in this process (the default). "local": start a Ray runtime here
                        and run prompts on `ray_workers` worker processes; an address ("10.0.0.5:6379"): join that
                        Ray cluster, run workers on this machine and on every machine added with `chisel worker`
    ray_workers         worker processes on this machine (None: one per GPU, or one without a GPU)
    ray_shared_output   output_dir is one folder every worker machine sees at the same path: workers save into it
                        directly instead of sending the files back (set it on `chisel worker` machines too)
    ray_worker_threads  torch threads per worker process (None: this machine's cores / its workers)
    ray_hang_timeout    seconds a running worker may stay silent before it is declared lost and its prompt leased
                        again
    ray_affinity_wait   seconds an idle worker waits for a busy worker holding a prompt's model before it takes the
                        prompt itself (and loads the model)
    """

    base_dir: Path
    listen: tuple[str, ...] = ("127.0.0.1",)
    port: int = DEFAULT_PORT
    auth_token: str | None = None
    input_dir: Path = field(default=None)  # type: ignore[assignment]  # filled by __post_init__
    output_dir: Path = field(default=None)  # type: ignore[assignment]
    temp_dir: Path = field(default=None)  # type: ignore[assignment]
    user_dir: Path = field(default=None)  # type: ignore[assignment]
    models_dir: Path = field(default=None)  # type: ignore[assignment]
    custom_nodes_dir: Path = field(default=None)  # type: ignore[assignment]
    extra_model_paths: tuple[Path, ...] = ()
    max_upload_size: int = DEFAULT_MAX_UPLOAD
    cache_ram_bytes: int = 4 * 1024**3
    cache_vram_bytes: int | None = None
    preview_method: PreviewMethod = "auto"
    preview_size: int = 512
    disable_metadata: bool = False
    web_root: Path = REPO_ROOT / "web"
    workflows_dir: Path = REPO_ROOT / "workflows"
    bundled_models_dir: Path | None = REPO_ROOT / "models"
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    device: DeviceChoice = "auto"
    weight_dtype: WeightDtype = "auto"
    vram_mode: VramMode = "normal"
    vram_budget_bytes: int | None = None
    reserve_vram_bytes: int | None = None
    history_limit: int = 10_000
    load_custom_nodes: bool = True
    disabled_custom_nodes: tuple[str, ...] = ()
    allow_pickle_custom_nodes: bool = False
    ray: str | None = None
    ray_workers: int | None = None
    ray_shared_output: bool = False
    ray_worker_threads: int | None = None
    ray_hang_timeout: float = 120.0
    ray_affinity_wait: float = 5.0

    def __post_init__(self) -> None:
        base = Path(self.base_dir).expanduser().resolve()
        object.__setattr__(self, "base_dir", base)
        defaults = {"input_dir": "input", "output_dir": "output", "temp_dir": "temp", "user_dir": "user",
                    "models_dir": "models", "custom_nodes_dir": "custom_nodes"}
        for name, sub in defaults.items():
            value = getattr(self, name)
            object.__setattr__(self, name, (base / sub) if value is None else Path(value).expanduser().resolve())
        object.__setattr__(self, "listen", tuple(self.listen))
        object.__setattr__(self, "extra_model_paths", tuple(Path(p).expanduser() for p in self.extra_model_paths))
        object.__setattr__(self, "allowed_origins", tuple(o.rstrip("/").lower() for o in self.allowed_origins))
        object.__setattr__(self, "allowed_hosts", tuple(h.lower() for h in self.allowed_hosts))
        if self.auth_token is not None and len(self.auth_token) < 8:
            raise ValueError("auth_token must be at least 8 characters")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is not in 0..65535")
        if self.max_upload_size <= 0:
            raise ValueError("max_upload_size must be positive")
        if self.ray_workers is not None and self.ray_workers < 0:
            raise ValueError("ray_workers must be 0 or more")
        if self.ray_worker_threads is not None and self.ray_worker_threads < 1:
            raise ValueError("ray_worker_threads must be at least 1")
        if self.ray is not None and not self.ray.strip():
            raise ValueError("ray must be 'local' or a Ray cluster address")
        if self.vram_mode not in ("normal", "low", "none"):
            raise ValueError(f"vram_mode {self.vram_mode!r} is not one of normal, low, none")
        if self.vram_budget_bytes is not None and self.vram_budget_bytes < 0:
            raise ValueError("vram_budget_bytes must be 0 or more")
        if self.reserve_vram_bytes is not None and self.reserve_vram_bytes < 0:
            raise ValueError("reserve_vram_bytes must be 0 or more")
        if self.preview_method not in ("none", "auto", "latent2rgb"):
            raise ValueError(f"preview_method {self.preview_method!r} is not one of none, auto, latent2rgb")

    @classmethod
    def create(cls, base_dir: str | os.PathLike[str], **overrides: Any) -> ServerConfig:
        """A config rooted at base_dir; keyword overrides for any field (None values are ignored)."""
        return cls(base_dir=Path(base_dir), **{k: v for k, v in overrides.items() if v is not None})

    def with_changes(self, **changes: Any) -> ServerConfig:
        return replace(self, **changes)

    @property
    def loopback_only(self) -> bool:
        """Bound only to loopback addresses: then Host must be a loopback name (DNS-rebinding guard)."""
        return all(is_loopback_address(a) for a in self.listen)


def is_loopback_address(address: str) -> bool:
    import ipaddress

    if address in ("localhost", ""):
        return address == "localhost"
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def auth_token_from_env(environ: dict[str, str] | None = None) -> str | None:
    """The auth token from CHISEL_AUTH_TOKEN, or None when unset/empty."""
    value = (os.environ if environ is None else environ).get(AUTH_TOKEN_ENV, "").strip()
    return value or None
