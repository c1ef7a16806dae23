"""Time to the first image through a real `chisel serve` subprocess, measured from outside as a client sees it.

    python -m bench.first_prompt [--tiny] [--weight-dtype auto|fp32|bf16] [--save bench/results/first_prompt-cpu.txt]

`--tiny` writes a few-MB checkpoint with the same keys at tiny widths instead of the 4.3 GB one (a smoke test).

Cases, in one server process:
  server start       process spawn -> the "Chisel is running at" line (the port is open)
  built-in model     POST workflows/api/txt2img.json (4 images of 64x64, 20 euler steps, CFG 2) -> done: the first
                     prompt loads chisel-shapes.safetensors; then the same graph with another seed (model loaded)
  SD1.5 layout       a 4.3 GB fp32 single-file checkpoint (the released v1-5-pruned-emaonly keys and shapes, random
                     values: bench.checkpoint_load writes it), 256x256, 2 euler steps, CFG 8, VAE decode,
                     SaveImage: the first prompt loads the file (dropped from the page cache before), then the same
                     graph with another seed (model loaded: text encode, sampling and decode only); then a new server
                     process gives the first-prompt time with the file in the page cache (A5 does not say which
                     state its figure had)
"Done" is the prompt's final `executing {node: null}` on the websocket; each prompt's history must say success.

The baseline is ComfyUI 0.8.0's figure for the SD1.5 case (A5: "SD1.5-layout, 256², 2 steps + VAE decode, first
prompt incl. loading a 4 GB file: 12 s"), measured in another session on the same kind of machine (2 cores, 24 GB, no
GPU), so the ratio is an estimate; absolute times on a shared 2-core machine vary up to 2x.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import torch

from bench.api_latency import REPO, Client, start_server
from bench.checkpoint_load import drop_from_page_cache, write_checkpoint
from bench.common import machine_description, save_report, size, table

COMFYUI_SD15_FIRST_PROMPT_S = 12.0  # A5
SD15_FILE = "bench-sd15-fp32-random.safetensors"


def sd15_graph(seed: int, ckpt_name: str, side: int) -> dict[str, Any]:
    """The A5 case: checkpoint -> two prompts -> empty latent -> KSampler (2 euler steps, CFG 8) -> decode -> save."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo of a cat", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": side, "height": side, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                                                   "latent_image": ["5", 0], "seed": seed, "steps": 2, "cfg": 8.0,
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "bench"}},
    }


def builtin_graph(seed: int) -> dict[str, Any]:
    prompt = json.loads((REPO / "workflows" / "api" / "txt2img.json").read_text())
    sampler = next(node for node in prompt.values() if node["class_type"] == "KSampler")
    sampler["inputs"]["seed"] = seed
    return prompt


async def timed_prompt(client: Client, prompt: dict[str, Any]) -> float:
    """Seconds from POST /prompt to the prompt's last executing message; raises if it did not succeed."""
    prompt_id, seconds = await client.run(prompt, timeout=1800)
    history = await (await client.session.get(f"{client.url}/history/{prompt_id}")).json()
    status = history.get(prompt_id, {}).get("status", {})
    if status.get("status_str") != "success":
        raise RuntimeError(f"the prompt failed: {json.dumps(status)[:2000]}")
    return seconds


async def run_prompts(url: str, prompts: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, float]]:
    """Each prompt in turn through one websocket client: (label, seconds from POST to done)."""
    rows: list[tuple[str, float]] = []
    async with aiohttp.ClientSession() as session:
        client = Client(session, url)
        await client.connect()
        for label, prompt in prompts:
            rows.append((label, await timed_prompt(client, prompt)))
        client.reader.cancel()
        await client.ws.close()
    return rows


def report(start_s: float, rows: list[tuple[str, float]], file_bytes: int, weight_dtype: str) -> str:
    lines = []
    for case, seconds in [("server start (spawn -> listening)", start_s), *rows]:
        baseline = ratio = "-"
        if case.startswith("SD1.5 layout") and "first prompt" in case:
            baseline = f"{COMFYUI_SD15_FIRST_PROMPT_S:g} s"
            ratio = f"{seconds / COMFYUI_SD15_FIRST_PROMPT_S:.2f}x"
        lines.append([case, f"{seconds:.2f} s", baseline, ratio])
    notes = [f"server flags: --weight-dtype {weight_dtype}, --preview-method none; torch "
             f"{torch.__version__}"]
    notes.append(f"checkpoint file: {size(file_bytes)} ({file_bytes / 1e9:.2f} GB), random weights in the released "
                 "SD1.5 key layout (the image is noise; the work is the same)")
    return "\n".join([table(["case", "Chisel", "ComfyUI 0.8.0 (A5)", "Chisel / ComfyUI"], lines), "", *notes])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny-width checkpoint instead of the 4.3 GB one")
    parser.add_argument("--side", type=int, default=None, help="image side of the checkpoint case (default 256, as "
                                                               "A5; 64 with --tiny)")
    parser.add_argument("--weight-dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    parser.add_argument("--save", type=Path, default=None, help="also write the report (with a machine header) here")
    args = parser.parse_args(argv)
    header = machine_description(["server", "diffusion"])
    preset = "tiny" if args.tiny else "sd15"
    side = args.side or (64 if args.tiny else 256)
    with tempfile.TemporaryDirectory(prefix="chisel-first-prompt-") as tmp:
        base = Path(tmp)
        path = base / "models" / "checkpoints" / SD15_FILE
        path.parent.mkdir(parents=True)
        print(f"  writing {path} ...", file=sys.stderr, flush=True)
        file_bytes = write_checkpoint(path, preset, torch.float32)
        drop_from_page_cache(path)
        file_label = f"{'SD1.5' if preset == 'sd15' else 'tiny'} layout, {size(file_bytes)} fp32 file"
        first = f"{side}x{side}, 2 steps + VAE decode, first prompt incl. load"
        prompts = [
            ("built-in model, txt2img workflow (4 x 64x64, 20 steps), first prompt incl. load", builtin_graph(1)),
            ("built-in model, same graph, another seed (model loaded)", builtin_graph(2)),
            (f"{file_label}, {first} (cold page cache)", sd15_graph(1, SD15_FILE, side)),
            (f"{file_label}, same graph, another seed (model loaded)", sd15_graph(2, SD15_FILE, side)),
        ]
        started = time.perf_counter()
        server = start_server(base, extra_args=["--weight-dtype", args.weight_dtype])
        start_s = time.perf_counter() - started
        try:
            rows = asyncio.run(run_prompts(server.url, prompts))
        finally:
            server.stop()
        # A new server process: the same first prompt with the file now in the page cache.
        server = start_server(base, extra_args=["--weight-dtype", args.weight_dtype])
        try:
            rows += asyncio.run(run_prompts(server.url, [(f"{file_label}, {first} (warm page cache, a new server "
                                                          "process)", sd15_graph(3, SD15_FILE, side))]))
        finally:
            server.stop()
    text = report(start_s, rows, file_bytes, args.weight_dtype)
    print(text)
    if args.save is not None:
        save_report(args.save, text, header=header, module="bench.first_prompt", argv=argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
