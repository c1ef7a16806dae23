"""Seconds per sampling step of Chisel's UNet against diffusers' UNet2DConditionModel, same config, same weights.

    python -m bench.unet_speed [--family sd15|sdxl|tiny ...] [--size PX] [--warmup N] [--steps N]
                               [--device cpu|cuda] [--dtype fp32|fp16|bf16] [--baseline auto|diffusers|none]
                               [--save bench/results/unet_speed-cpu.txt]

One step is what a CFG sampler does per step: one UNet call on a batch of 2 (the prompt and the negative prompt
share the latent; 77 context tokens each), the CFG mix (scale 7.5) and an Euler update. Both models get the same
inputs and the same random weights: ours is built from a seed, and diffusers' model is built on the meta device and
given our tensors through the diffusers <-> LDM name map (`diffusion.lora_keys.unet_diffusers_to_ldm`), so the
comparison is the same arithmetic; the report shows the largest output difference to prove it.

Timing: both models live in one process on the very same weight tensors and take their steps in turns (AB, BA, ...),
so a machine whose load drifts (shared cores) slows both alike and the ratio stays meaningful. Memory: each model is
then built again in its own fresh process and runs one step there, so the peak RSS of one does not hide in the
other's (`--isolation inline` keeps everything in this process, for the smoke test; `--no-memory` skips it). CPU
timings use perf_counter; CUDA timings use CUDA events, with torch.cuda.max_memory_allocated as the memory figure.
diffusers is a benchmark extra (`pip install diffusers`, or the
project's `[bench]` extra), never a runtime dependency: without it the table shows our figures alone.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from bench.common import (
    Isolation,
    Spread,
    WorkerError,
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
from diffusion.unet import UNetConfig, UNetModel

Family = Literal["sd15", "sdxl", "tiny"]
ModelKind = Literal["chisel", "diffusers"]

CFG_SCALE = 7.5
SIGMA, SIGMA_NEXT, TIMESTEP = 5.0, 4.2, 700.0  # one mid-schedule Euler step (values only need to be the same for both)
CONTEXT_TOKENS = 77
SDXL_POOLED = 1280  # width of SDXL's pooled clip_g vector inside the 2816-wide "y"

CONFIGS: dict[Family, UNetConfig] = {
    "sd15": UNetConfig(),  # the defaults are SD1.5's (v1-inference.yaml)
    "sdxl": UNetConfig(
        model_channels=320,
        channel_mult=(1, 2, 4),
        num_res_blocks=2,
        transformer_depth=(0, 2, 10),
        transformer_depth_middle=10,
        transformer_depth_output=(10, 2, 0),
        context_dim=2048,
        num_heads=None,
        num_head_channels=64,
        use_linear_in_transformer=True,
        adm_in_channels=2816,
    ),
    # Small widths for the smoke test: two levels with attention, SD1-style heads and 1x1-conv projections.
    "tiny": UNetConfig(
        model_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=1,
        transformer_depth=(1, 1),
        transformer_depth_middle=1,
        transformer_depth_output=(1, 1),
        context_dim=32,
        num_heads=8,
    ),
}
DEFAULT_SIZE: dict[Family, int] = {"sd15": 512, "sdxl": 1024, "tiny": 64}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

COMFYUI_CPU = "ComfyUI 0.8.0, same kind of 2-core machine, fp32 (A5): 13.6-14.1 s/step; target <= 0.8x"
GPU_REFERENCES = {
    # anchors A1/A2, H100, batch 1 with CFG (one batch-2 UNet call per iteration), fp16
    "sd15": "H100 (A1/A2): 100%-of-peak floor 2.03 ms (492 it/s); vanilla PyTorch 54.5 it/s; best published "
            "(stable-fast) 104.6 it/s",
    "sdxl": "H100 (A1/A2): 100%-of-peak floor 17.1 ms (58 it/s); vanilla PyTorch 14.9 it/s; best published "
            "(stable-fast) 21.6 it/s",
}


# ---------------------------------------------------------------------------------------------------------------
# The diffusers twin of a UNetConfig


def diffusers_unet_config(cfg: UNetConfig) -> dict[str, Any]:
    """UNet2DConditionModel keyword arguments for the same network as `UNetModel(cfg)`.

    Raises ValueError for configurations diffusers' class cannot express (a middle block without attention, a middle
    depth other than the last level's, an adm vector other than SDXL's text+time one).
    """
    widths = tuple(cfg.model_channels * m for m in cfg.channel_mult)
    if cfg.transformer_depth_middle == 0:
        raise ValueError("diffusers' UNet2DConditionModel needs a middle block with cross-attention")
    down_depths = [max(d, 1) for d in cfg.transformer_depth]  # depth is unused by blocks without attention
    if cfg.transformer_depth[-1] == 0:
        down_depths[-1] = cfg.transformer_depth_middle  # diffusers' middle block takes the last level's depth
    elif cfg.transformer_depth[-1] != cfg.transformer_depth_middle:
        raise ValueError("diffusers takes the middle block's depth from the last level's; they differ here")
    up_depths = [max(d, 1) for d in cfg.transformer_depth_output]
    config: dict[str, Any] = {
        "sample_size": 64,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "down_block_types": tuple("CrossAttnDownBlock2D" if d else "DownBlock2D" for d in cfg.transformer_depth),
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "up_block_types": tuple("CrossAttnUpBlock2D" if d else "UpBlock2D" for d in cfg.transformer_depth_output),
        "block_out_channels": widths,
        "layers_per_block": cfg.num_res_blocks,
        "cross_attention_dim": cfg.context_dim,
        # diffusers' historical name: with num_attention_heads unset this is the number of heads per level.
        "attention_head_dim": tuple(cfg.attention_heads(w)[0] for w in widths),
        "transformer_layers_per_block": tuple(down_depths),
        "use_linear_projection": cfg.use_linear_in_transformer,
        "norm_num_groups": 32,
        "flip_sin_to_cos": True,  # [cos | sin], as timestep_embedding
        "freq_shift": 0,
    }
    if up_depths != down_depths[::-1]:
        config["reverse_transformer_layers_per_block"] = tuple(up_depths)
    if cfg.adm_in_channels is not None:
        if cfg.adm_in_channels != 2816:
            raise ValueError(f"only SDXL's adm vector (2816) is mapped to diffusers, got {cfg.adm_in_channels}")
        config.update(addition_embed_type="text_time", addition_time_embed_dim=256,
                      projection_class_embeddings_input_dim=cfg.adm_in_channels)
    return config


def diffusers_state_dict(ours: dict[str, torch.Tensor], cfg: UNetConfig) -> dict[str, torch.Tensor]:
    """Our UNet state dict under diffusers' names (the same tensors, not copies)."""
    from diffusion.lora_keys import unet_diffusers_to_ldm

    out: dict[str, torch.Tensor] = {}
    for diffusers_name, ldm_name in unet_diffusers_to_ldm(cfg).items():
        for kind in ("weight", "bias"):
            if (tensor := ours.get(f"{ldm_name}.{kind}")) is not None:
                out[f"{diffusers_name}.{kind}"] = tensor
    return out


def build_chisel(cfg: UNetConfig, device: torch.device, dtype: torch.dtype, seed: int) -> UNetModel:
    """Our UNet with seeded default-initialised weights (identical for a given seed and device)."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        with torch.device(device):
            model = UNetModel(cfg)
    return model.to(dtype).eval().requires_grad_(False)


def build_diffusers(cfg: UNetConfig, device: torch.device, dtype: torch.dtype, seed: int) -> torch.nn.Module:
    """diffusers' UNet2DConditionModel holding the very tensors of `build_chisel(cfg, device, dtype, seed)`."""
    from diffusers import UNet2DConditionModel

    ours = build_chisel(cfg, device, dtype, seed)
    with torch.device("meta"):
        model = UNet2DConditionModel(**diffusers_unet_config(cfg))
    model.load_state_dict(diffusers_state_dict(ours.state_dict(), cfg), strict=True, assign=True)
    del ours  # its tensors now belong to the diffusers model alone
    return model.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------------------------
# One CFG Euler step


@dataclass(frozen=True)
class StepInputs:
    latent: torch.Tensor  # (1, C, H/8, W/8), noisy at SIGMA
    context: torch.Tensor  # (2, 77, context_dim): prompt, negative prompt
    pooled: torch.Tensor | None  # (2, 1280) SDXL only
    pixels: int


def make_inputs(cfg: UNetConfig, pixels: int, device: torch.device, dtype: torch.dtype, seed: int) -> StepInputs:
    generator = torch.Generator().manual_seed(seed + 1)
    side = pixels // 8
    latent = torch.randn(1, cfg.in_channels, side, side, generator=generator) * SIGMA
    context = torch.randn(2, CONTEXT_TOKENS, cfg.context_dim, generator=generator)
    pooled = torch.randn(2, SDXL_POOLED, generator=generator) if cfg.adm_in_channels is not None else None
    move = {"device": device, "dtype": dtype}
    return StepInputs(latent.to(**move), context.to(**move), None if pooled is None else pooled.to(**move), pixels)


UNetCall = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x batch 2, timesteps [2]) -> model output


def chisel_call(model: UNetModel, inputs: StepInputs) -> UNetCall:
    y = None
    if inputs.pooled is not None:
        from diffusion.families import sdxl_adm

        y = sdxl_adm(inputs.pooled, height=inputs.pixels, width=inputs.pixels).to(inputs.pooled.dtype)
    return lambda x, t: model(x, t, inputs.context, y)


def diffusers_call(model: torch.nn.Module, inputs: StepInputs) -> UNetCall:
    added: dict[str, torch.Tensor] | None = None
    if inputs.pooled is not None:
        p = float(inputs.pixels)
        time_ids = torch.tensor([[p, p, 0.0, 0.0, p, p]] * 2, device=inputs.pooled.device, dtype=inputs.pooled.dtype)
        added = {"text_embeds": inputs.pooled, "time_ids": time_ids}
    return lambda x, t: model(x, t, encoder_hidden_states=inputs.context, added_cond_kwargs=added,
                              return_dict=False)[0]


def cfg_euler_step(call: UNetCall, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One Euler step of an eps model with classifier-free guidance (Karras et al. 2022, alg. 1; Ho & Salimans 2022).

    Returns (next latent, the raw UNet output of the batch-2 call)."""
    c_in = 1.0 / (SIGMA**2 + 1.0) ** 0.5
    x_in = torch.cat([x, x]) * c_in  # (2, C, h, w): prompt and negative prompt share the latent
    t = torch.full((2,), TIMESTEP, device=x.device, dtype=x.dtype)
    out = call(x_in, t)  # (2, C, h, w) eps
    eps_cond, eps_uncond = out.chunk(2)
    eps = eps_uncond + CFG_SCALE * (eps_cond - eps_uncond)
    return x + eps * (SIGMA_NEXT - SIGMA), out  # d = (x - denoised) / sigma = eps


# ---------------------------------------------------------------------------------------------------------------
# Workers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_step(call: UNetCall, latent: torch.Tensor) -> tuple[float, torch.Tensor]:
    """(seconds, raw UNet output) of one CFG step; CUDA events on a GPU, perf_counter on the CPU."""
    if latent.device.type == "cuda":
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        _, out = cfg_euler_step(call, latent)
        end.record()
        torch.cuda.synchronize(latent.device)
        return begin.elapsed_time(end) / 1e3, out
    started = time.perf_counter()
    _, out = cfg_euler_step(call, latent)
    return time.perf_counter() - started, out


def _load() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def measure_speed(spec: dict[str, Any]) -> dict[str, Any]:
    """Time the models of `spec["kinds"]` in one process, alternating their steps, on the very same weight tensors.

    Why alternate: on a shared machine the load drifts over minutes; taking the models' steps in turns (AB, BA, AB,
    ...) exposes both to the same conditions, so the ratio stays meaningful even when the absolute times are noisy.
    The first step of each model is a warm-up whose raw UNet output is kept to compare the two models.
    """
    family: Family = spec["family"]
    device, dtype = torch.device(spec["device"]), DTYPES[spec["dtype"]]
    cfg = CONFIGS[family]
    load_before = _load()
    started = time.perf_counter()
    ours = build_chisel(cfg, device, dtype, spec["seed"])
    _sync(device)
    build_s = time.perf_counter() - started
    inputs = make_inputs(cfg, spec["pixels"], device, dtype, spec["seed"])
    calls: dict[str, UNetCall] = {"chisel": chisel_call(ours, inputs)}
    if "diffusers" in spec["kinds"]:
        from diffusers import UNet2DConditionModel

        with torch.device("meta"):
            twin = UNet2DConditionModel(**diffusers_unet_config(cfg))
        # assign=True: the diffusers modules hold our tensors themselves (no copy, one set of weights in memory).
        twin.load_state_dict(diffusers_state_dict(ours.state_dict(), cfg), strict=True, assign=True)
        calls["diffusers"] = diffusers_call(twin.eval().requires_grad_(False), inputs)
    kinds = list(calls)
    times: dict[str, list[float]] = {k: [] for k in kinds}
    outputs: dict[str, torch.Tensor] = {}
    warmup = max(1, spec["warmup"])
    with torch.inference_mode():
        for round_index in range(warmup + spec["steps"]):
            order = kinds if round_index % 2 == 0 else kinds[::-1]
            for kind in order:
                elapsed, out = _timed_step(calls[kind], inputs.latent)
                if round_index == 0:
                    outputs[kind] = out.float().cpu()
                if round_index >= warmup:
                    times[kind].append(elapsed)
    result: dict[str, Any] = {
        "times": times,
        "build_s": build_s,
        "parameters": sum(p.numel() for p in ours.parameters()),
        "threads": torch.get_num_threads(),
        "load_before": load_before,
        "load_after": _load(),
        "max_abs_diff": None,
        "max_abs_out": None,
    }
    if "diffusers" in outputs:
        result["max_abs_diff"] = (outputs["chisel"] - outputs["diffusers"]).abs().max().item()
        result["max_abs_out"] = outputs["diffusers"].abs().max().item()
    return result


def measure_memory(spec: dict[str, Any]) -> dict[str, Any]:
    """Build one model and run one CFG step; RSS after the build, peak RSS, and CUDA's peak allocation."""
    device, dtype = torch.device(spec["device"]), DTYPES[spec["dtype"]]
    cfg = CONFIGS[spec["family"]]
    whole_process = spec["isolation"] == "subprocess"
    build_phase = phase_start()
    started = time.perf_counter()
    model = (build_chisel if spec["kind"] == "chisel" else build_diffusers)(cfg, device, dtype, spec["seed"])
    _sync(device)
    build_s = time.perf_counter() - started
    built = phase_end(build_phase, whole_process=whole_process)
    inputs = make_inputs(cfg, spec["pixels"], device, dtype, spec["seed"])
    call = chisel_call(model, inputs) if isinstance(model, UNetModel) else diffusers_call(model, inputs)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_phase = phase_start()
    with torch.inference_mode():
        _timed_step(call, inputs.latent)
    stepped = phase_end(step_phase, whole_process=False)
    return {
        "build_s": build_s,
        "rss_start": built.start,
        "rss_built": stepped.start,
        "peak_build": built.peak,
        "peak_step": stepped.peak,
        "peak_process": peak_rss() if whole_process else None,
        "cuda_max_allocated": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
    }


# ---------------------------------------------------------------------------------------------------------------
# Driver


@dataclass(frozen=True)
class FamilyResult:
    family: Family
    pixels: int
    speed: dict[str, Any]
    memory: dict[str, dict[str, Any]]


def diffusers_available() -> bool:
    return importlib.util.find_spec("diffusers") is not None


def _run(function: Callable[[dict[str, Any]], dict[str, Any]], spec: dict[str, Any], isolation: Isolation,
         worker: str) -> dict[str, Any]:
    if isolation == "subprocess":
        return run_worker("bench.unet_speed", {**spec, "worker": worker})
    return run_inline(function, spec)


def run_family(family: Family, pixels: int, args: argparse.Namespace) -> FamilyResult:
    kinds: list[ModelKind] = ["chisel"] + (["diffusers"] if args.with_baseline else [])
    base = {"family": family, "pixels": pixels, "device": args.device, "dtype": args.dtype, "seed": args.seed,
            "isolation": args.isolation}
    print(f"  {family} {pixels}px: timing {' and '.join(kinds)} in turns ...", file=sys.stderr, flush=True)
    speed = _run(measure_speed, {**base, "name": f"{family}/speed", "kinds": kinds, "warmup": args.warmup,
                                 "steps": args.steps}, args.isolation, "speed")
    memory: dict[str, dict[str, Any]] = {}
    if args.memory:
        for kind in kinds:
            print(f"  {family} {pixels}px: memory of {kind} ...", file=sys.stderr, flush=True)
            memory[kind] = _run(measure_memory, {**base, "name": f"{family}/memory/{kind}", "kind": kind},
                                args.isolation, "memory")
    return FamilyResult(family, pixels, speed, memory)


def _increase(peak: int | None, start: int | None) -> int | None:
    return peak - start if peak is not None and start is not None else None


def report(results: list[FamilyResult], args: argparse.Namespace) -> str:
    cuda = args.device == "cuda"
    isolated = args.isolation == "subprocess"
    headers = ["model", "step (CFG, batch 2)", "it/s", "ours/diffusers", "RSS after build" if isolated else
               "RSS added by build", "peak RSS" if isolated else "peak RSS added", "step working RSS"]
    if cuda:
        headers.append("CUDA max allocated")
    rows: list[list[str]] = []
    notes: list[str] = []
    for fr in results:
        label = f"{fr.family} {fr.pixels}x{fr.pixels}"
        times = fr.speed["times"]
        base_median = Spread.of(times["diffusers"]).median if "diffusers" in times else None
        for kind, kind_times in times.items():
            spread = Spread.of(kind_times)
            mem = fr.memory.get(kind, {})
            if isolated:
                after_build, peak = mem.get("rss_built"), mem.get("peak_process")
            else:
                after_build = _increase(mem.get("rss_built"), mem.get("rss_start"))
                highest = max(mem.get("peak_build") or 0, mem.get("peak_step") or 0) or None
                peak = _increase(highest, mem.get("rss_start"))
            row = [
                f"{label} {'Chisel' if kind == 'chisel' else 'diffusers'}",
                spread.show(),
                f"{1 / spread.median:.2f}",
                ratio(spread.median, base_median) if (kind == "chisel" and base_median) else "-",
                size(after_build),
                size(peak),
                size(_increase(mem.get("peak_step"), mem.get("rss_built"))),
            ]
            if cuda:
                row.append(size(mem.get("cuda_max_allocated")))
            rows.append(row)
        speed = fr.speed
        notes.append(f"{label}: {speed['parameters']:,} parameters, built in {seconds(speed['build_s'])}; "
                     f"{speed['threads']} torch threads; 1-min load average {speed['load_before']:.1f} before, "
                     f"{speed['load_after']:.1f} after" if speed["load_before"] is not None else f"{label}")
        if speed["max_abs_diff"] is not None and speed["max_abs_out"]:
            notes.append(f"{label}: same weights and inputs -> max |Chisel - diffusers| = {speed['max_abs_diff']:.3g}"
                         f" (max |output| {speed['max_abs_out']:.3g}, relative "
                         f"{speed['max_abs_diff'] / speed['max_abs_out']:.2g})")
        if not cuda and fr.family == "sd15" and fr.pixels == 512:
            notes.append(COMFYUI_CPU)
        if cuda and fr.family in GPU_REFERENCES:
            notes.append(f"{label}: {GPU_REFERENCES[fr.family]}")
    if not args.with_baseline:
        notes.append("no baseline: diffusers is not installed (pip install diffusers, or the project's [bench] "
                     "extra) or --baseline none was given")
    title = (f"UNet CFG Euler step (batch 2: prompt + negative, {CONTEXT_TOKENS} context tokens), {args.device} "
             f"{args.dtype}, torch.inference_mode; {max(1, args.warmup)} warm-up + {args.steps} timed steps per "
             "model, the models' steps taken in turns in one process on shared weights; memory: "
             + ("not measured (--no-memory)" if not args.memory else "each model in its own fresh process, one step"
                if isolated else "this process (increases), one step"))
    return "\n".join([title, "", table(headers, rows), "", *notes])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", nargs="+", choices=sorted(CONFIGS), default=None,
                        help="UNet configurations to time (default: sd15 on the CPU, sd15 and sdxl on CUDA)")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (default 512 sd15, 1024 sdxl)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (at least 1)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default fp32 on cpu, fp16 on cuda")
    parser.add_argument("--baseline", choices=["auto", "diffusers", "none"], default="auto")
    parser.add_argument("--isolation", choices=["subprocess", "inline"], default="subprocess",
                        help="a fresh process per model (default) or this one (quick; memory figures are increases)")
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure each model's memory in its own process (one more build and step each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", type=Path, default=None, help="also write the report (with a machine header) here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is None:
        if args.device == "cuda" and not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device is available")
        args.family = args.family or (["sd15", "sdxl"] if args.device == "cuda" else ["sd15"])
        args.dtype = args.dtype or ("fp16" if args.device == "cuda" else "fp32")
        if args.baseline == "diffusers" and not diffusers_available():
            parser.error("--baseline diffusers: diffusers is not installed (pip install diffusers)")
        args.with_baseline = args.baseline != "none" and diffusers_available()
        if args.steps < 1:
            parser.error("--steps must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        kind = json.loads(args.worker)["worker"]
        return worker_main(measure_speed if kind == "speed" else measure_memory, args.worker)
    header = machine_description(["diffusion/unet.py", "diffusion/attention.py"])
    results = [run_family(family, args.size or DEFAULT_SIZE[family], args) for family in args.family]
    text = report(results, args)
    print(text)
    if args.save is not None:
        save_report(args.save, text, header=header, module="bench.unet_speed", argv=argv)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except WorkerError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
