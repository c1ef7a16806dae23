"""Prompt-adherence evaluation of an exported checkpoint, through the library exactly as the default workflow runs it.

CheckpointLoaderSimple -> CLIPTextEncode (prompt, and "" as the negative) -> EmptyLatentImage -> KSampler ->
VAEDecode, here as the library calls those nodes make (diffusion.*), one image per (caption, seed). Captions
are combinations held out of training; each image is judged by train/checker.py.

    .venv/bin/python -m train.eval                                  # 50 held-out captions x 2 seeds, CFG sweep
    .venv/bin/python -m train.eval --prompts 8 --seeds 1 --cfg 1.5  # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see train/run.py: shared cores

import numpy as np  # noqa: E402
import torch  # noqa: E402

from diffusion.checkpoint import load_checkpoint  # noqa: E402
from diffusion.handles import Clip, Model, Vae, checkpoint_handles  # noqa: E402
from nodes.ksampler import SamplingRequest, sample  # noqa: E402
from diffusion.lora import apply_lora, load_lora_file  # noqa: E402
from diffusion.memory import ModelManager  # noqa: E402
from diffusion.patches import applied_to_clip  # noqa: E402
from diffusion.schedules import sampler_sigmas  # noqa: E402
from diffusion.text_encode import encode_text  # noqa: E402
from diffusion.tokenizer import ClipTokenizer  # noqa: E402
from nodes.vae_ops import decode_images  # noqa: E402
from nodes.types import CondEntry, Conditioning, Latent  # noqa: E402
from train.checker import accuracy, judge_batch  # noqa: E402
from train.quick_eval import contact_sheet, eval_combos  # noqa: E402
from train.scenes import Combo  # noqa: E402
from train.shape_classifier import load_classifier  # noqa: E402
from train.lora_style import is_huge, style_caption  # noqa: E402

DEFAULT_CHECKPOINT = Path("models/checkpoints/chisel-shapes.safetensors")
ATTRIBUTES = ("background", "foreground", "shape", "position", "size")
TARGETS = {"background": 0.90, "foreground": 0.85, "shape": 0.70}


@dataclass(frozen=True)
class Settings:
    """The KSampler / EmptyLatentImage widgets of one evaluation."""

    steps: int = 20
    cfg: float = 2.0
    sampler: str = "euler"
    scheduler: str = "normal"
    size: int = 64
    negative: str = ""


RECOMMENDED = Settings()
"""The settings the model card recommends (chosen by the CFG sweep below) and the CI test uses."""


@dataclass(frozen=True)
class Pipeline:
    model: Model
    clip: Clip
    vae: Vae


def load_pipeline(path: Path) -> Pipeline:
    """What CheckpointLoaderSimple returns for `path` (detection from shapes, fp32 on the CPU)."""
    model, clip, vae = checkpoint_handles(load_checkpoint(path), tokenizer=ClipTokenizer(), latent_rgb=None)
    if clip is None or vae is None:
        raise ValueError(f"{path} lacks a text encoder or a VAE")
    return Pipeline(model, clip, vae)


def with_lora(pipe: Pipeline, path: Path, strength: float = 1.0) -> Pipeline:
    """What LoraLoader returns: the same modules with the LoRA's patches on the MODEL and CLIP handles."""
    model, clip, not_loaded = apply_lora(pipe.model, pipe.clip, load_lora_file(path), strength_model=strength,
                                         strength_clip=strength)
    if not_loaded:
        raise ValueError(f"{path.name}: {len(not_loaded)} tensors adapt nothing in this model: {not_loaded[:3]}")
    assert model is not None and clip is not None
    return Pipeline(model, clip, pipe.vae)


def encode(pipe: Pipeline, text: str) -> Conditioning:
    """CLIPTextEncode (with the CLIP handle's LoRA patches applied while encoding)."""
    with torch.inference_mode(), applied_to_clip(pipe.clip):
        encoded = encode_text(text, encoders=[(e.slot, e.module) for e in pipe.clip.encoders],
                              tokenizer=pipe.clip.tokenizer, stop_at_clip_layer=pipe.clip.stop_at_clip_layer)
    return Conditioning((CondEntry(cross_attn=encoded.cond, pooled=encoded.pooled),))


def txt2img(pipe: Pipeline, positive: Conditioning, negative: Conditioning, seed: int, s: Settings) -> np.ndarray:
    """EmptyLatentImage -> KSampler -> VAEDecode for one image; uint8 [H, W, 3]."""
    latent = Latent(torch.zeros((1, 4, s.size // 8, s.size // 8)))
    sigmas = sampler_sigmas(pipe.model.sampling, s.scheduler, s.steps, sampler_name=s.sampler)
    request = SamplingRequest(seed=seed, cfg=s.cfg, sampler_name=s.sampler, sigmas=sigmas)
    models = ModelManager(torch.device("cpu"))  # the pipeline lives on the CPU: placement is a no-op
    out = sample(models=models, model=pipe.model, latent=latent, positive=positive, negative=negative,
                 request=request, progress=lambda *_: None, previews=False)
    image = decode_images(models, pipe.vae, out.samples)[0]  # (H, W, 3) in [0, 1]
    return (image * 255).round().to(torch.uint8).numpy()


def run_eval(pipe: Pipeline, combos: Sequence[Combo], seeds: Sequence[int], s: Settings,
             caption: Callable[[Combo], str] = Combo.caption) -> tuple[dict[str, float], list[np.ndarray], float]:
    """(accuracy per attribute, images in (combo, seed) order, seconds per image)."""
    negative = encode(pipe, s.negative)
    images, asked = [], []
    clock = time.perf_counter()
    for combo in combos:
        positive = encode(pipe, caption(combo))
        for seed in seeds:
            images.append(txt2img(pipe, positive, negative, seed, s))
            asked.append(combo)
    per_image = (time.perf_counter() - clock) / len(images)
    return accuracy(judge_batch(images, load_classifier()), asked), images, per_image


def lora_report(pipe: Pipeline, lora: Path, combos: Sequence[Combo], seeds: Sequence[int], s: Settings,
                ) -> list[tuple[str, dict[str, float]]]:
    """Adherence and the rate of huge shapes: "huge" captions with and without the LoRA, plain captions with it."""
    patched = with_lora(pipe, lora)
    rows = []
    for name, p, caption in (("base model, \"huge\" captions", pipe, style_caption),
                             ("with LoRA, \"huge\" captions", patched, style_caption),
                             ("with LoRA, plain captions", patched, Combo.caption),
                             ("base model, plain captions", pipe, Combo.caption)):
        acc, images, _ = run_eval(p, combos, seeds, s, caption)
        rows.append((name, {**acc, "huge": float(np.mean([is_huge(im) for im in images]))}))
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[-1][1].items()), flush=True)
    return rows


def markdown_table(rows: Sequence[tuple[str, dict[str, float]]], *, targets: bool = True) -> str:
    columns = [c for c in (*ATTRIBUTES, "huge") if c in rows[0][1]]
    head = "| setting | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns) + "\n"
    body = "".join(f"| {name} | " + " | ".join(f"{100 * acc[a]:.0f} %" for a in columns) + " |\n"
                   for name, acc in rows)
    if not targets:
        return head + body
    target = "| target | " + " | ".join(f">= {100 * TARGETS[a]:.0f} %" if a in TARGETS else "-" for a in columns)
    return head + body + target + " |\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Prompt-adherence evaluation of a checkpoint (see train/eval.py).")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=2, help="seeds 0..N-1 per prompt")
    parser.add_argument("--cfg", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sampler", default="euler")
    parser.add_argument("--scheduler", default="normal")
    parser.add_argument("--size", type=int, default=RECOMMENDED.size, help="image side in pixels")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--sheet", type=Path, default=None, help="save a contact sheet of the first CFG's images")
    parser.add_argument("--lora", type=Path, default=None, help="also report this 'huge' LoRA (first CFG only)")
    parser.add_argument("--variants", nargs="*", default=[], metavar="SAMPLER/SCHEDULER/STEPS",
                        help="other sampler settings, evaluated at the first --cfg value")
    args = parser.parse_args(argv)

    torch.set_num_threads(2)
    pipe = load_pipeline(args.checkpoint)
    combos = eval_combos(args.prompts)
    seeds = list(range(args.seeds))
    rows, results = [], []
    for i, cfg in enumerate(args.cfg):
        s = Settings(steps=args.steps, cfg=cfg, sampler=args.sampler, scheduler=args.scheduler, size=args.size)
        acc, images, per_image = run_eval(pipe, combos, seeds, s)
        name = f"{s.sampler}/{s.scheduler}, {s.steps} steps, CFG {cfg:g}"
        rows.append((name, acc))
        results.append({"settings": s.__dict__, "accuracy": acc, "seconds_per_image": per_image,
                        "images": len(images)})
        print(f"{name}: " + ", ".join(f"{a} {acc[a]:.3f}" for a in ATTRIBUTES) + f" ({per_image:.2f} s/image)",
              flush=True)
        if i == 0 and args.sheet is not None:
            contact_sheet(images[:64], columns=8).save(args.sheet)
    for variant in args.variants:
        sampler, scheduler, steps = variant.split("/")
        s = Settings(steps=int(steps), cfg=args.cfg[0], sampler=sampler, scheduler=scheduler, size=args.size)
        acc, images, per_image = run_eval(pipe, combos, seeds, s)
        name = f"{s.sampler}/{s.scheduler}, {s.steps} steps, CFG {s.cfg:g}"
        rows.append((name, acc))
        results.append({"settings": s.__dict__, "accuracy": acc, "seconds_per_image": per_image,
                        "images": len(images)})
        print(f"{name}: " + ", ".join(f"{a} {acc[a]:.3f}" for a in ATTRIBUTES) + f" ({per_image:.2f} s/image)",
              flush=True)
    print(markdown_table(rows))
    lora_rows = []
    if args.lora is not None:
        s = Settings(steps=args.steps, cfg=args.cfg[0], sampler=args.sampler, scheduler=args.scheduler, size=args.size)
        lora_rows = lora_report(pipe, args.lora, combos, seeds, s)
        print(markdown_table(lora_rows, targets=False))
    if args.json is not None:
        args.json.write_text(json.dumps({"checkpoint": str(args.checkpoint), "prompts": args.prompts,
                                         "seeds": seeds, "results": results,
                                         "lora": {name: acc for name, acc in lora_rows}}, indent=1))


if __name__ == "__main__":
    main()
