"""Memory and time of a 4x ESRGAN upscale of a 1024² image: tiled (ComfyUI's 512-pixel tiles, 32 overlap, what
ImageUpscaleWithModel does) against the whole image in one pass.

    python -m bench.upscale_memory [--size 1024] [--nb 23] [--nf 64] [--save bench/results/upscale_memory-cpu.txt]

The model is a random-weight RRDBNet in the released ESRGAN key layout at real size (nf 64, nb 23: 16.7 M
parameters), loaded through spandrel as UpscaleModelLoader does. Each case runs in its own worker process, so its
peak resident memory (VmHWM: torch allocates outside Python's allocator, so tracemalloc would see nothing) is its
own. The untiled baseline is measured on smaller images (256² and 512², one pass each) and extrapolated to the
full size from its per-pixel growth, since one pass over 1024² needs more memory than this machine should give.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import (
    WorkerError,
    machine_description,
    phase_end,
    phase_start,
    run_worker,
    save_report,
    seconds,
    size,
    table,
    worker_main,
)
from diffusion.safetensors_io import save_atomic

GROWTH = 32  # the dense blocks' growth channels (gc) of every released ESRGAN


def esrgan_state_dict(*, nf: int = 64, nb: int = 23, seed: int = 0) -> dict[str, torch.Tensor]:
    """A 4x RRDBNet (Wang et al. 2018, ESRGAN) state dict in the original release's key layout: model.0 first conv,
    model.1.sub.N.RDBr.convc.0 dense blocks, model.1.sub.nb trunk conv, model.3/6 the 2x upsampling convs, model.8
    HR conv, model.10 last conv. Weights ~ N(0, 1/fan_in) so activations stay O(1); the last conv is scaled down
    with a 0.5 bias so outputs sit inside [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def conv(name: str, out: int, inp: int, std_scale: float = 1.0, bias: float = 0.0) -> None:
        state[f"{name}.weight"] = torch.randn(out, inp, 3, 3, generator=gen) * (std_scale / math.sqrt(inp * 9))
        state[f"{name}.bias"] = torch.full((out,), bias)

    conv("model.0", nf, 3)
    for block in range(nb):
        for rdb in (1, 2, 3):
            for c in range(1, 6):
                conv(f"model.1.sub.{block}.RDB{rdb}.conv{c}.0", GROWTH if c < 5 else nf, nf + (c - 1) * GROWTH)
    conv(f"model.1.sub.{nb}", nf, nf)
    for index in (3, 6, 8):
        conv(f"model.{index}", nf, nf)
    conv("model.10", 3, nf, std_scale=0.3, bias=0.5)
    return state


def write_esrgan(path: Path, *, nf: int = 64, nb: int = 23, seed: int = 0) -> Path:
    save_atomic(path, esrgan_state_dict(nf=nf, nb=nb, seed=seed))
    return path


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Worker: load the model, upscale one size x size image with the given tile, report time and peak RSS."""
    from diffusion.upscale import load_upscale_model, upscale_images

    model = load_upscale_model(spec["path"])
    n = spec["size"]
    coarse = torch.rand(1, 3, max(1, n // 16), max(1, n // 16), generator=torch.Generator().manual_seed(0))
    image = torch.nn.functional.interpolate(coarse, size=(n, n), mode="bilinear").movedim(1, -1).contiguous()
    start = phase_start()
    begin = time.perf_counter()
    out = upscale_images(model, image, device=torch.device("cpu"), tile=spec["tile"], overlap=spec["overlap"])
    elapsed = time.perf_counter() - begin
    mark = phase_end(start, whole_process=True)
    return {"seconds": elapsed, "peak": mark.peak, "start": mark.start, "out_shape": list(out.shape)}


CASES = ("tiled", "untiled")


def run_all(path: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    specs = [{"name": f"tiled {args.size}²", "case": "tiled", "size": args.size, "tile": 512, "overlap": 32}]
    for n in (args.size // 4, args.size // 2):
        specs.append({"name": f"untiled {n}²", "case": "untiled", "size": n, "tile": 1 << 20, "overlap": 32})
    results = []
    for spec in specs:
        print(f"  {spec['name']} ...", file=sys.stderr, flush=True)
        result = run_worker("bench.upscale_memory", {**spec, "path": str(path)})
        results.append({**spec, **result})
        print(f"    {seconds(result['seconds'])}, peak {size(result['peak'])}", file=sys.stderr, flush=True)
    return results


def report(results: list[dict[str, Any]], args: argparse.Namespace, model_bytes: int) -> str:
    rows = []
    for r in results:
        rows.append([r["name"], "x".join(str(d) for d in r["out_shape"][1:3]), seconds(r["seconds"]),
                     size(r["peak"]), size(r["peak"] - r["start"]) if r["start"] else "-"])
    small, half = results[1], results[2]
    # One pass's memory grows with its pixels: fit peak = base + per_pixel · n² through the two untiled runs (the
    # same for the rise above the RSS at start); its time grows the same way.
    def fit(key: str) -> tuple[float, float]:
        slope = (half[key] - small[key]) / (half["size"] ** 2 - small["size"] ** 2)
        return small[key] - slope * small["size"] ** 2, slope

    for r in results:
        r["rise"] = r["peak"] - r["start"]
    base, per_pixel = fit("peak")
    rise_base, rise_per_pixel = fit("rise")
    estimate = base + per_pixel * args.size ** 2
    rows.append([f"untiled {args.size}² (extrapolated)", f"{args.size * 4}x{args.size * 4}",
                 seconds(half["seconds"] * (args.size / half["size"]) ** 2), size(int(estimate)),
                 size(int(rise_base + rise_per_pixel * args.size ** 2))])
    tiled = results[0]
    lines = [
        f"4x ESRGAN (RRDBNet nf {args.nf}, nb {args.nb}, {model_bytes / 1e6:.0f} MB fp32), random weights, CPU fp32",
        table(["case", "output", "time", "peak RSS", "peak - RSS at start"], rows),
        "",
        f"tiled {args.size}² peak: {size(tiled['peak'])}; the untiled pass would need about {size(int(estimate))} "
        f"({estimate / tiled['peak']:.1f}x), extrapolated from {small['size']}² and {half['size']}² "
        f"({size(int(per_pixel * 1e6))} per megapixel of input).",
    ]
    if estimate > 0.8 * (_total_memory() or estimate):
        lines.append(f"That is more than this machine's memory can spare ({size(_total_memory())} total).")
    return "\n".join(lines)


def _total_memory() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.upscale_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="input image side (default 1024)")
    parser.add_argument("--nf", type=int, default=64, help="ESRGAN features (default 64, the released models')")
    parser.add_argument("--nb", type=int, default=23, help="ESRGAN RRDB blocks (default 23)")
    parser.add_argument("--dir", default=None, help="where to write the temporary model file")
    parser.add_argument("--save", default=None, help="also write the report to this file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        return worker_main(measure, args.worker)
    header = machine_description(["diffusion/upscale.py"])
    folder = Path(tempfile.mkdtemp(prefix="chisel-upscale-bench-", dir=args.dir))
    try:
        path = write_esrgan(folder / "4x_esrgan_random.safetensors", nf=args.nf, nb=args.nb)
        results = run_all(path, args)
        model_bytes = path.stat().st_size
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    text = report(results, args, model_bytes)
    print(text)
    if args.save is not None:
        save_report(args.save, text, header=header, module="bench.upscale_memory", argv=argv)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except WorkerError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
