"""Seconds per sampling step of the flow-matching transformers at full width: Flux.1 dev and SD3.5 medium.

    python -m bench.flow_models [--model flux|sd35|both] [--size PX] [--dtype bf16|fp32|fp8] [--device cpu|cuda]
                                [--repeats N] [--save bench/results/flow_models-cpu.txt]

The released models do not fit this machine's memory in bf16 (Flux dev: 11.9 G parameters = 23.8 GB), so each is
built at its real width with only a few blocks of each kind, and each block is timed on its own (forward hooks,
perf_counter; CUDA events on a GPU). One step is then extrapolated from the measured blocks and the parts outside
them (embedders, final layer, patchify): Flux dev = 19 double + 38 single blocks, one call (guidance-distilled,
cfg 1); SD3.5 medium = 13 MMDiT-X blocks + 10 plain joint blocks + 1 pre-only block, batch 2 (the prompt and the
negative of CFG). The tokens are those of a size×size image: (size/16)² image tokens plus 512 T5 tokens (Flux) or
77 + 77 (SD3). Weights are random (the arithmetic does not depend on them). "fp8" stores the Linear weights in
float8_e4m3fn and computes in bf16 (UNETLoader's weight_dtype fp8_e4m3fn).

Two clocks: wall time, and the process's CPU time divided by torch's intra-op threads, which is what the wall time
would be on an idle machine (shared, loaded cores stretch the wall time but not the CPU time a step needs).

Memory: the peak RSS (peak allocated on CUDA) of the reduced model's run, and the full model's weight bytes in the
chosen dtype, which is what loading it takes on top.

    python -m bench.flow_models --streaming [--model ...] [--size PX] [--device cpu|cuda] [--save ...]

Streaming (low-VRAM mode, diffusion/streaming.py) instead: one forward of reduced-depth models at full width (Flux:
1 double + 2 single blocks; SD3.5 medium: 3 joint blocks) through the model manager, normally and with a device
budget of half the model and of nothing (one block at a time), for bf16 and fp8 storage, computing in bf16 and in
fp32 (what the manager picks on a CPU); each row's ratio is against the normal bf16-compute run of the same storage.
"peak on device" is the most weight bytes on the compute device at once (CUDA: peak allocated, activations
included); on a CPU the streamed copies go from CPU memory to CPU memory, so the time is an upper bound of the
copying cost and the RSS column shows what the process held.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from bench.common import machine_description, peak_rss, reset_peak_rss, save_report, seconds, size, table
from diffusion.dit_layers import storage_dtypes
from diffusion.flux import Flux, FluxConfig
from diffusion.memory import ModelManager, module_bytes
from diffusion.mmdit import MMDiT, MMDiTConfig

FLUX_PARAMS = 11_901_408_320
SD35_MEDIUM_PARAMS = 2_553_483_619 - 83_819_683  # the file's elements less its VAE


@dataclass(frozen=True)
class BlockTimes:
    """Wall seconds, and the process's CPU seconds divided by torch's intra-op threads (what the wall time would
    be on an otherwise idle machine when the threads keep busy: the figure that shared, loaded cores do not skew)."""

    blocks: dict[str, list[float]]
    whole: float
    cpu_blocks: dict[str, list[float]]
    cpu_whole: float


def _timed_blocks(model: nn.Module, groups: dict[str, list[nn.Module]], run: Callable[[], None],
                  device: torch.device) -> BlockTimes:
    times: dict[str, list[float]] = {name: [] for name in groups}
    cpu_times: dict[str, list[float]] = {name: [] for name in groups}
    starts: dict[int, tuple[float, float]] = {}
    threads = torch.get_num_threads()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    handles = []
    for name, modules in groups.items():
        for module in modules:
            def pre(mod: nn.Module, args: object) -> None:
                sync()
                starts[id(mod)] = (time.perf_counter(), time.process_time())

            def post(mod: nn.Module, args: object, out: object, name: str = name) -> None:
                sync()
                wall, cpu = starts.pop(id(mod))
                times[name].append(time.perf_counter() - wall)
                cpu_times[name].append((time.process_time() - cpu) / threads)

            handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    sync()
    start, cpu_start = time.perf_counter(), time.process_time()
    run()
    sync()
    whole, cpu_whole = time.perf_counter() - start, (time.process_time() - cpu_start) / threads
    for handle in handles:
        handle.remove()
    return BlockTimes(times, whole, cpu_times, cpu_whole)


def _cast(model: nn.Module, dtype: str, device: torch.device) -> nn.Module:
    compute = torch.float32 if dtype == "fp32" else torch.bfloat16
    storage = torch.float8_e4m3fn if dtype == "fp8" else None
    dtypes = storage_dtypes(model, compute, storage)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            tensor.data = tensor.data.to(device=device, dtype=dtypes.get(name, compute))
    return model.eval().requires_grad_(False)


def bench_flux(size_px: int, dtype: str, device: torch.device, repeats: int) -> dict[str, object]:
    torch.manual_seed(0)
    model = _cast(Flux(FluxConfig(depth=1, depth_single_blocks=1)), dtype, device)
    side = size_px // 8
    x = torch.randn(1, 16, side, side, device=device)
    ctx, y = torch.randn(1, 512, 4096, device=device), torch.randn(1, 768, device=device)
    groups = {"double": list(model.double_blocks), "single": list(model.single_blocks)}

    def run() -> None:
        with torch.inference_mode():
            model(x, torch.tensor([0.7], device=device), ctx, y=y, guidance=torch.tensor([3.5], device=device))

    run()  # warm-up
    results = [_timed_blocks(model, groups, run, device) for _ in range(repeats)]
    best = min(results, key=lambda r: r.whole)

    def extrapolate(blocks: dict[str, list[float]], whole: float) -> tuple[dict[str, float], float]:
        double, single = blocks["double"][0], blocks["single"][0]
        outside = whole - double - single
        return ({"double block": double, "single block": single, "outside blocks": outside},
                outside + 19 * double + 38 * single)

    parts, step = extrapolate(best.blocks, best.whole)
    cpu_parts, cpu_step = extrapolate(best.cpu_blocks, best.cpu_whole)
    return {"model": "Flux.1 dev", "tokens": (side // 2) ** 2 + 512, "batch": 1, "parts": parts, "step": step,
            "cpu_parts": cpu_parts, "cpu_step": cpu_step,
        "weights": FLUX_PARAMS * (1 if dtype == "fp8" else 4 if dtype == "fp32" else 2)}


def bench_sd35(size_px: int, dtype: str, device: torch.device, repeats: int) -> dict[str, object]:
    torch.manual_seed(0)
    model = _cast(MMDiT(MMDiTConfig(depth=3, x_block_self_attn_layers=(0,))), dtype, device)
    side = size_px // 8
    x = torch.randn(2, 16, side, side, device=device)
    ctx, y = torch.randn(2, 154, 4096, device=device), torch.randn(2, 2048, device=device)
    blocks = list(model.joint_blocks)
    groups = {"MMDiT-X block": blocks[:1], "joint block": blocks[1:2], "pre-only block": blocks[2:]}

    def run() -> None:
        with torch.inference_mode():
            model(x, torch.tensor([700.0, 700.0], device=device), context=ctx, y=y)

    run()
    results = [_timed_blocks(model, groups, run, device) for _ in range(repeats)]
    best = min(results, key=lambda r: r.whole)

    def extrapolate(blocks: dict[str, list[float]], whole: float) -> tuple[dict[str, float], float]:
        parts = {name: times[0] for name, times in blocks.items()}
        outside = whole - sum(parts.values())
        step = outside + 13 * parts["MMDiT-X block"] + 10 * parts["joint block"] + parts["pre-only block"]
        return {**parts, "outside blocks": outside}, step

    parts, step = extrapolate(best.blocks, best.whole)
    cpu_parts, cpu_step = extrapolate(best.cpu_blocks, best.cpu_whole)
    return {"model": "SD3.5 medium", "tokens": (side // 2) ** 2 + 154, "batch": 2, "parts": parts, "step": step,
            "cpu_parts": cpu_parts, "cpu_step": cpu_step,
            "weights": SD35_MEDIUM_PARAMS * (1 if dtype == "fp8" else 4 if dtype == "fp32" else 2)}


# ---------------------------------------------------------------------------------------------------------------
# Streaming


def _stored(model: nn.Module, storage: str, compute: torch.dtype) -> nn.Module:
    """Weights on the CPU as loading a `storage` file for `compute` gives them (fp8 Linear weights stay fp8; a bf16
    file computing in fp32 is upcast at load, as the manager does)."""
    dtypes = storage_dtypes(model, compute, torch.float8_e4m3fn if storage == "fp8" else None)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            tensor.data = tensor.data.to(dtype=dtypes.get(name, compute))
    return model.eval().requires_grad_(False)


def _streaming_case(name: str, size_px: int, device: torch.device) -> tuple[Callable[[], nn.Module],
                                                                           Callable[[nn.Module], None]]:
    side = size_px // 8
    if name == "flux":
        def build() -> nn.Module:
            return Flux(FluxConfig(depth=1, depth_single_blocks=2))

        def run(model: nn.Module) -> None:
            x = torch.randn(1, 16, side, side, device=device)
            model(x, torch.tensor([0.7], device=device), torch.randn(1, 512, 4096, device=device),
                  y=torch.randn(1, 768, device=device), guidance=torch.tensor([3.5], device=device))
        return build, run

    def build_sd35() -> nn.Module:
        return MMDiT(MMDiTConfig(depth=3, x_block_self_attn_layers=(0,)))

    def run_sd35(model: nn.Module) -> None:
        x = torch.randn(2, 16, side, side, device=device)
        model(x, torch.tensor([700.0, 700.0], device=device), context=torch.randn(2, 154, 4096, device=device),
              y=torch.randn(2, 2048, device=device))
    return build_sd35, run_sd35


def bench_streaming(model_names: list[str], size_px: int, device: torch.device) -> str:
    rows = []
    for name in model_names:
        build, run = _streaming_case(name, size_px, device)
        torch.manual_seed(0)
        base = build().to(torch.bfloat16)  # random weights: each row converts its copy
        for storage in ("bf16", "fp8"):
            baseline: tuple[float, float] | None = None
            for compute, budget_share in ((torch.bfloat16, None), (torch.bfloat16, 0.5), (torch.bfloat16, 0.0),
                                          (torch.float32, None), (torch.float32, 0.0)):
                model = _stored(copy.deepcopy(base), storage, compute)
                total = module_bytes(model)
                budget = None if budget_share is None else int(total * budget_share)
                models = ModelManager(device, budget_bytes=budget)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(device)
                reset_peak_rss()
                times = []
                for _ in range(2):  # warm-up, then the timed run
                    with torch.inference_mode(), models.on_device(model):
                        if device.type == "cuda":
                            torch.cuda.synchronize(device)
                        wall, cpu = time.perf_counter(), time.process_time()
                        run(model)
                        if device.type == "cuda":
                            torch.cuda.synchronize(device)
                        threads = torch.get_num_threads()
                        times.append((time.perf_counter() - wall, (time.process_time() - cpu) / threads))
                wall_s, cpu_s = times[-1]
                plan = models.last_stream
                if device.type == "cuda":
                    on_device = torch.cuda.max_memory_allocated(device)
                else:
                    on_device = plan.peak_bytes if plan is not None else total
                if baseline is None:
                    baseline = (wall_s, cpu_s)
                mode = "normal" if plan is None else (
                    f"streamed, budget {size(budget)}: {len(plan.resident)} units resident, "
                    f"{len(plan.streamed)} streamed")
                dtype_name = "bf16" if compute == torch.bfloat16 else "fp32"
                rows.append([name, f"{storage} → {dtype_name}", mode, size(total),
                             size(on_device), size(peak_rss()) if device.type == "cpu" else "-", seconds(wall_s),
                             f"{wall_s / baseline[0]:.2f}x", seconds(cpu_s), f"{cpu_s / baseline[1]:.2f}x"])
                del model, models
        del base
    text = table(["model", "weights → compute", "mode", "weights", "peak on device", "RSS peak", "forward (wall)",
                  "vs normal bf16", "forward (CPU/threads)", "vs normal bf16"], rows)
    from diffusion.model_files import flow_compute_dtype

    picked = ModelManager(device).dtype
    flow = {code: str(flow_compute_dtype([code], device, picked, auto_dtype=True)).removeprefix("torch.")
            for code in ("BF16", "F8_E4M3", "F16", "F32")}
    return text + (f"\nthe server's model manager computes Flux / SD3 on {device} by default in: bf16 files "
                   f"{flow['BF16']}, fp8 {flow['F8_E4M3']}, fp16 {flow['F16']}, fp32 {flow['F32']} (bf16 on a CPU "
                   "only with native bf16: AVX512-BF16 / AMX); an explicit weight dtype wins")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flow_models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("flux", "sd35", "both"), default="both")
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels (latent = size/8)")
    parser.add_argument("--dtype", choices=("bf16", "fp32", "fp8"), default="bf16")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs after one warm-up (the fastest is kept)")
    parser.add_argument("--save", default=None, help="also write the report to this file")
    parser.add_argument("--streaming", action="store_true",
                        help="time reduced-depth models normally and streamed under device budgets (see above)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.streaming:
        names = [n for n in ("flux", "sd35") if args.model in (n, "both")]
        text = bench_streaming(names, args.size, device)
        print(text)
        if args.save:
            save_report(args.save, text, header=machine_description(), module="bench.flow_models", argv=argv)
        return 0
    rows = []
    for name, bench in (("flux", bench_flux), ("sd35", bench_sd35)):
        if args.model not in (name, "both"):
            continue
        result = bench(args.size, args.dtype, device, args.repeats)
        for kind, parts_key, step_key in (("wall", "parts", "step"), ("CPU/threads", "cpu_parts", "cpu_step")):
            parts = ", ".join(f"{k} {seconds(v)}" for k, v in result[parts_key].items())  # type: ignore[union-attr]
            rows.append([str(result["model"]), f"{args.size}²", str(result["tokens"]), str(result["batch"]), kind,
                         parts, seconds(float(result[step_key])),  # type: ignore[arg-type]
                         size(int(result["weights"]))])  # type: ignore[arg-type]
    memory = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else peak_rss()
    text = table(["model", "image", "tokens", "batch", "clock", "measured (one of each)", "step (extrapolated)",
                  f"full weights ({args.dtype})"], rows)
    text += f"\npeak memory of the reduced models' runs: {size(memory)}"
    print(text)
    if args.save:
        save_report(args.save, text, header=machine_description(), module="bench.flow_models", argv=argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
