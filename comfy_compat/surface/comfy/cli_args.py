"""ComfyUI's `comfy.cli_args`: `args` (ComfyUI's command-line settings, as packs read them) and its enums.

Every setting ComfyUI has is here with ComfyUI's default; the ones Chisel has are the server's (listen, port,
directories, preview method and size, --disable-metadata, --cpu), filled in when the loader binds the surface.
"""

from __future__ import annotations

import argparse
import enum
from typing import Any

from comfy_compat import host


class EnumAction(argparse.Action):
    """ComfyUI's argparse action for enum choices (some packs import it)."""

    def __init__(self, **kwargs: Any):
        enum_type = kwargs.pop("type", None)
        kwargs.setdefault("choices", tuple(e.value for e in enum_type))
        super().__init__(**kwargs)
        self._enum = enum_type

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, self._enum(values))


class LatentPreviewMethod(enum.Enum):
    NoPreviews = "none"
    Auto = "auto"
    Latent2RGB = "latent2rgb"
    TAESD = "taesd"


class PerformanceFeature(enum.Enum):
    Fp16Accumulation = "fp16_accumulation"
    Fp8MatrixMultiplication = "fp8_matrix_mult"
    CublasOps = "cublas_ops"
    AutoTune = "autotune"


args = argparse.Namespace(
    async_offload=False,
    auto_launch=False,
    base_directory=None,
    bf16_text_enc=False,
    bf16_unet=False,
    bf16_vae=False,
    cache_classic=False,
    cache_lru=0,
    cache_none=False,
    comfy_api_base='https://api.comfy.org',
    cpu=False,
    cpu_vae=False,
    cuda_device=None,
    cuda_malloc=False,
    default_device=None,
    default_hashing_function='sha256',
    deterministic=False,
    directml=None,
    disable_all_custom_nodes=False,
    disable_api_nodes=False,
    disable_auto_launch=False,
    disable_cuda_malloc=False,
    disable_ipex_optimize=False,
    disable_metadata=False,
    disable_mmap=False,
    disable_smart_memory=False,
    disable_xformers=False,
    dont_print_server=False,
    dont_upcast_attention=False,
    enable_compress_response_body=False,
    enable_cors_header=None,
    extra_model_paths_config=None,
    fast=set(),
    force_channels_last=False,
    force_fp16=False,
    force_fp32=False,
    force_non_blocking=False,
    force_upcast_attention=False,
    fp16_text_enc=False,
    fp16_unet=False,
    fp16_vae=False,
    fp32_text_enc=False,
    fp32_unet=False,
    fp32_vae=False,
    fp64_unet=False,
    fp8_e4m3fn_text_enc=False,
    fp8_e4m3fn_unet=False,
    fp8_e5m2_text_enc=False,
    fp8_e5m2_unet=False,
    fp8_e8m0fnu_unet=False,
    front_end_root=None,
    front_end_version='comfyanonymous/ComfyUI@latest',
    gpu_only=False,
    highvram=False,
    input_directory=None,
    listen='127.0.0.1',
    log_stdout=False,
    lowvram=False,
    max_upload_size=100,
    mmap_torch_files=False,
    multi_user=False,
    normalvram=False,
    novram=False,
    oneapi_device_selector=None,
    output_directory=None,
    port=8188,
    preview_size=512,
    quick_test_for_ci=False,
    reserve_vram=None,
    supports_fp8_compute=False,
    temp_directory=None,
    tls_certfile=None,
    tls_keyfile=None,
    use_flash_attention=False,
    use_pytorch_cross_attention=False,
    use_quad_cross_attention=False,
    use_sage_attention=False,
    use_split_cross_attention=False,
    user_directory=None,
    verbose='INFO',
    whitelist_custom_nodes=[],
    windows_standalone_build=False,
    preview_method=LatentPreviewMethod.NoPreviews,
    database_url="sqlite:///:memory:",
)


def _bind() -> None:
    """The bound server's settings over ComfyUI's defaults."""
    for key, value in host.HOST.cli.items():
        if key == "preview_method":
            value = LatentPreviewMethod(value) if value in {m.value for m in LatentPreviewMethod} else \
                LatentPreviewMethod.NoPreviews
        setattr(args, key, value)


host.on_configure(_bind)
