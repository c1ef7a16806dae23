"""Time to load an SD1.5-layout single-file checkpoint to CPU fp32 modules: Chisel's loader against the naive path.

    python -m bench.checkpoint_load [--dtype fp16|fp32] [--repeat N] [--dir DIR] [--tiny]
                                    [--save bench/results/checkpoint_load-cpu.txt]

Writes a checkpoint with the released SD1.5 file's key names and shapes (UNet, VAE, CLIP-L text encoder, the DDPM
schedule buffers and EMA counters a real file carries) and random values: fp16 gives the 2.1 GB of the common
"fp16 pruned" files, fp32 the 4.3 GB of v1-5-pruned-emaonly. The file lives in a temporary folder that is deleted
afterwards. Then, each in a fresh process so peak memory is its own, in the same run:

- read:    the file's bytes read sequentially and thrown away (the disk / page-cache floor);
- naive:   `safetensors.torch.load_file` of the whole file, the three modules built with their default random
           initialisation, `load_state_dict` (what a straightforward loader does);
- Chisel:  `diffusion.checkpoint.load_checkpoint(path, device="cpu")`: detection from the header, modules
           built on the meta device, each tensor read once (memory-mapped), converted and assigned.

Cold rows drop the file from the page cache first (fsync + posix_fadvise DONTNEED, only this file); warm rows read
it once before. Peak RSS is the worker's whole-process VmHWM, which counts memory-mapped file pages it touched; the
sampled peaks tell the process's private (anonymous) memory from file pages the kernel can drop again.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from bench.common import (
    Spread,
    WorkerError,
    RssSampler,
    current_rss,
    machine_description,
    peak_rss,
    phase_end,
    phase_start,
    ratio,
    run_inline,
    run_worker,
    save_report,
    seconds,
    size,
    table,
    worker_main,
)
from diffusion.checkpoint import DDPM_BUFFERS, UNET_PREFIX, VAE_PREFIX
from diffusion.families import SD1
from diffusion.text_encoders import (
    CLIP_L,
    TextEncoderConfig,
    build_text_encoder,
    checkpoint_state_dict,
    default_heads,
)
from diffusion.unet import UNetConfig, UNetModel
from diffusion.vae import AutoencoderKL, VAEConfig

Preset = Literal["sd15", "tiny"]
Method = Literal["read", "naive", "chisel"]
Cache = Literal["cold", "warm"]
DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
READ_CHUNK = 64 * 1024 * 1024

PRESETS: dict[Preset, tuple[UNetConfig, VAEConfig, TextEncoderConfig]] = {
    "sd15": (UNetConfig(), VAEConfig(), CLIP_L),
    "tiny": (
        UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, transformer_depth=(1, 1),
                   transformer_depth_middle=1, transformer_depth_output=(1, 1), context_dim=32, num_heads=8),
        VAEConfig(ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1),
        TextEncoderConfig("clip_l_hf", width=32, layers=2, heads=default_heads(32), intermediate=128),
    ),
}


# ---------------------------------------------------------------------------------------------------------------
# The file


def checkpoint_layout(preset: Preset, dtype: torch.dtype) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Key -> (shape, dtype) of an SD1-layout single file, read from our modules built on the meta device.

    For "sd15" this is the released v1-5-pruned-emaonly key set (1,145 keys) with floats in `dtype`."""
    unet_cfg, vae_cfg, text_cfg = PRESETS[preset]
    with torch.device("meta"):
        unet, vae = UNetModel(unet_cfg), AutoencoderKL(vae_cfg)
    text = build_text_encoder(text_cfg, device="meta")
    tensors = {UNET_PREFIX + k: v for k, v in unet.state_dict().items()}
    tensors.update({VAE_PREFIX + k: v for k, v in vae.state_dict().items()})
    tensors.update(checkpoint_state_dict(text, SD1.text_encoders[0].prefix, text_cfg))
    layout = {k: (tuple(v.shape), dtype if v.is_floating_point() else v.dtype) for k, v in tensors.items()}
    # What LatentDiffusion saved beside the modules: the training schedule and the EMA counters (loaders skip them).
    layout.update({name: ((1000,), torch.float32) for name in sorted(DDPM_BUFFERS)})
    layout["model_ema.decay"] = ((), torch.float32)
    layout["model_ema.num_updates"] = ((), torch.int32)
    return layout


def write_checkpoint(path: Path, preset: Preset, dtype: torch.dtype, seed: int = 0) -> int:
    """Write the random checkpoint, flush it to disk, and return its size in bytes."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for name, (shape, tensor_dtype) in checkpoint_layout(preset, dtype).items():
        if tensor_dtype.is_floating_point:
            # Values in the range of trained weights; their distribution does not matter to loading.
            tensors[name] = torch.empty(shape, dtype=tensor_dtype).uniform_(-0.05, 0.05, generator=generator)
        else:  # position ids [1, 77] and the EMA update counter
            tensors[name] = torch.arange(max(1, int(torch.Size(shape).numel())), dtype=tensor_dtype).reshape(shape)
    save_file(tensors, str(path), metadata={"written_by": "bench.checkpoint_load (random weights)"})
    del tensors
    with open(path, "rb") as f:
        os.fsync(f.fileno())
    return path.stat().st_size


def drop_from_page_cache(path: Path) -> bool:
    """Ask the kernel to drop this file's cached pages (clean ones: fsync first). False where unsupported."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True


def read_through(path: Path) -> int:
    """Read the whole file sequentially (fills the page cache); bytes read."""
    total = 0
    buffer = bytearray(READ_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(view):
            total += n
    return total


# ---------------------------------------------------------------------------------------------------------------
# Workers


def _naive_load(path: Path) -> dict[str, torch.nn.Module]:
    from safetensors.torch import load_file

    from diffusion.checkpoint import detect_layout
    from diffusion.safetensors_io import read_header
    from diffusion.text_encoders import text_encoder_state_dict

    layout = detect_layout(read_header(path).shapes, path=path)  # the same configurations ours reads
    tensors = load_file(str(path))  # every tensor, in the file's dtype
    unet = UNetModel(layout.unet_config)
    unet.load_state_dict({k[len(UNET_PREFIX):]: v for k, v in tensors.items() if k.startswith(UNET_PREFIX)})
    assert layout.vae_config is not None
    vae = AutoencoderKL(layout.vae_config)
    vae.load_state_dict({k[len(VAE_PREFIX):]: v for k, v in tensors.items() if k.startswith(VAE_PREFIX)})
    te = layout.text_encoders[0]
    text = build_text_encoder(te.config)
    text.load_state_dict(text_encoder_state_dict(tensors, te.slot.prefix, te.config))
    del tensors
    return {"unet": unet.eval().requires_grad_(False), "vae": vae.eval().requires_grad_(False),
            "text": text.eval().requires_grad_(False)}


def _chisel_load(path: Path) -> dict[str, torch.nn.Module]:
    from diffusion.checkpoint import load_checkpoint

    loaded = load_checkpoint(path, device="cpu")
    assert loaded.vae is not None
    return {"unet": loaded.unet, "vae": loaded.vae, "text": loaded.text_encoders["clip_l"].module}


def measure_load(spec: dict[str, Any]) -> dict[str, Any]:
    """One load of the file by one method; seconds, memory, and a checksum of the loaded weights."""
    path = Path(spec["path"])
    method: Method = spec["method"]
    phase = phase_start()
    modules: dict[str, torch.nn.Module] = {}
    with RssSampler() as sampled:
        started = time.perf_counter()
        if method == "read":
            read_through(path)
        else:
            modules = (_naive_load if method == "naive" else _chisel_load)(path)
        elapsed = time.perf_counter() - started
    mark = phase_end(phase, whole_process=spec["isolation"] == "subprocess")
    rss_after = current_rss()
    params = [p for m in modules.values() for p in m.parameters()]
    return {
        "seconds": elapsed,
        "rss_start": mark.start,
        "peak": mark.peak,
        "rss_after": rss_after,
        "process_peak": peak_rss() if spec["isolation"] == "subprocess" else None,
        "peak_anon": sampled.peak_anon,
        "peak_file": sampled.peak_file,
        "dtypes": sorted({str(p.dtype) for p in params}),
        # Both loaders must end with the same fp32 weights: compare sums (float64) of every parameter.
        "checksum": sum(p.sum(dtype=torch.float64).item() for p in params) if params else None,
        "parameters": sum(p.numel() for p in params),
    }


# ---------------------------------------------------------------------------------------------------------------
# Driver


@dataclass(frozen=True)
class Measured:
    method: Method
    cache: Cache
    runs: list[dict[str, Any]]


def run_all(path: Path, args: argparse.Namespace) -> list[Measured]:
    measured: list[Measured] = []
    for cache in ("cold", "warm"):
        for method in ("read", "naive", "chisel"):
            runs = []
            for _ in range(args.repeat):
                if cache == "cold":
                    if not drop_from_page_cache(path):
                        break
                else:
                    read_through(path)
                spec = {"name": f"{method}/{cache}", "path": str(path), "method": method,
                        "isolation": args.isolation}
                print(f"  {cache} {method} ...", file=sys.stderr, flush=True)
                runs.append(run_worker("bench.checkpoint_load", spec) if args.isolation == "subprocess"
                            else run_inline(measure_load, spec))
            if runs:
                measured.append(Measured(method, cache, runs))  # type: ignore[arg-type]
    return measured


LABELS: dict[Method, str] = {
    "read": "read the bytes (floor)",
    "naive": "naive: load_file + build + load_state_dict",
    "chisel": "Chisel load_checkpoint",
}


def report(measured: list[Measured], file_bytes: int, args: argparse.Namespace) -> str:
    isolated = args.isolation == "subprocess"
    headers = ["page cache", "method", "time", "Chisel/naive", "GB/s", "peak RSS" if isolated else "peak RSS added",
               "peak anonymous / file-backed RSS (sampled)", "RSS after" if isolated else "RSS kept"]
    rows = []
    naive = {m.cache: Spread.of([r["seconds"] for r in m.runs]).median for m in measured if m.method == "naive"}
    for m in measured:
        spread = Spread.of([r["seconds"] for r in m.runs])
        last = m.runs[-1]
        peak = last["process_peak"] if isolated else (
            last["peak"] - last["rss_start"] if last["peak"] is not None and last["rss_start"] is not None else None)
        after = last["rss_after"] if isolated else (
            last["rss_after"] - last["rss_start"] if last["rss_after"] is not None and last["rss_start"] else None)
        rows.append([
            m.cache, LABELS[m.method], spread.show(),
            ratio(spread.median, naive[m.cache]) if m.method == "chisel" and m.cache in naive else "-",
            f"{file_bytes / spread.median / 1e9:.2f}", size(peak),
            f"{size(last['peak_anon'])} / {size(last['peak_file'])}", size(after),
        ])
    notes = []
    sums = {(m.method, m.cache): m.runs[-1]["checksum"] for m in measured if m.method != "read"}
    if sums:
        values = [v for v in sums.values() if v is not None]
        same = bool(values) and max(values) - min(values) <= 1e-6 * max(1.0, max(abs(v) for v in values))
        loaded = next(m.runs[-1] for m in measured if m.method != "read")
        notes.append(f"both loaders end with the same weights: {'yes' if same else 'NO'} (float64 sum of all "
                     f"{loaded['parameters']:,} parameters, {', '.join(loaded['dtypes'])})")
    if not any(m.cache == "cold" for m in measured):
        notes.append("no cold rows: posix_fadvise is not available here")
    title = (f"Load of a {size(file_bytes)} ({file_bytes / 1e9:.2f} GB) {args.preset} single-file checkpoint "
             f"({args.dtype} tensors, random values) to CPU fp32 modules (UNet, VAE, text encoder); "
             f"median of {args.repeat} run(s), each in {'a fresh process' if isolated else 'this process'}")
    return "\n".join([title, "", table(headers, rows), "", *notes])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16",
                        help="tensor dtype in the file: fp16 (2.1 GB, default) or fp32 (4.3 GB)")
    parser.add_argument("--tiny", action="store_true", help="a few-MB checkpoint with tiny widths (smoke test)")
    parser.add_argument("--repeat", type=int, default=1, help="loads per row (the median is shown)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the temporary file (default: TMPDIR)")
    parser.add_argument("--isolation", choices=["subprocess", "inline"], default="subprocess",
                        help="a fresh process per load (default) or this one (quick; memory figures are increases)")
    parser.add_argument("--save", type=Path, default=None, help="also write the report (with a machine header) here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.preset = "tiny" if args.tiny else "sd15"
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        return worker_main(measure_load, args.worker)
    header = machine_description(["diffusion/checkpoint.py", "diffusion/safetensors_io.py"])
    folder = Path(tempfile.mkdtemp(prefix="chisel-load-bench-", dir=args.dir))
    try:
        path = folder / f"{args.preset}-{args.dtype}-random.safetensors"
        print(f"  writing {path} ...", file=sys.stderr, flush=True)
        file_bytes = write_checkpoint(path, args.preset, DTYPES[args.dtype])
        measured = run_all(path, args)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    text = report(measured, file_bytes, args)
    print(text)
    if args.save is not None:
        save_report(args.save, text, header=header, module="bench.checkpoint_load", argv=argv)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except WorkerError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
