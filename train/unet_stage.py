"""Stage 3: train the UNet and the CLIP text tower together on the encoded pool (eps-prediction, SD1's table).

Each step: a batch of pool latents (a fresh posterior draw), captions with optional parts left out and 10 % dropped
to "" (the unconditional branch classifier-free guidance needs), uniform timesteps, Min-SNR-weighted eps loss.
EMA weights are kept and are what gets evaluated and exported.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from safefiles import atomic_path
from tqdm import tqdm

from diffusion.model_sampling import DiscreteSampling
from diffusion.tokenizer import ClipTokenizer
from diffusion.unet import UNetModel
from diffusion.vae import AutoencoderKL
from train.config import RunConfig
from train.diffusion import add_noise, alphas_cumprod, min_snr_weight
from train.loop import LossLog, lr_at, step_generator, step_rng
from train.quick_eval import adherence, contact_sheet, eval_combos, generate
from train.scenes import Combo, all_combos, split_combos
from train.shape_classifier import load_classifier
from train.state import load_state, optimizer_tensors, prefixed, restore_optimizer, save_state, unprefixed
from train.text import CaptionTokens, SparseVocabText

STAGE = 3
QUICK_EVAL_CFGS = (1.0, 1.5, 2.0, 3.0)


def caption_vocab(tokens: CaptionTokens) -> set[int]:
    """Every token id a caption of the grammar (or the empty caption) can produce."""
    captions = [c.caption() for c in all_combos()] + [""]
    return set(tokens(captions).unique().tolist())


def training_caption(combo: Combo, rng: np.random.Generator, dropout: float, omit: float) -> str:
    if rng.random() < dropout:
        return ""
    keep = rng.random(3) >= omit
    return combo.caption(with_size=bool(keep[0]), with_position=bool(keep[1]), with_background=bool(keep[2]))


class Networks:
    """The trained pair (UNet, text tower), built the same way for training, EMA and evaluation copies."""

    def __init__(self, config: RunConfig, vocab: set[int]) -> None:
        self.unet = UNetModel(config.arch.unet())
        self.text = SparseVocabText(config.arch.text(), vocab)

    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in list(self.unet.parameters()) + list(self.text.parameters()) if p.requires_grad]

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        return {**prefixed(prefix + "unet.", self.unet), **prefixed(prefix + "text.", self.text)}

    def load(self, prefix: str, tensors: dict[str, torch.Tensor]) -> None:
        self.unet.load_state_dict(unprefixed(prefix + "unet.", tensors))
        self.text.load_state_dict(unprefixed(prefix + "text.", tensors))

    def eval(self) -> Networks:
        self.unet.eval()
        self.text.eval()
        return self


def ema_update(ema: list[torch.Tensor], params: list[torch.Tensor], decay: float) -> None:
    """ema <- decay·ema + (1 - decay)·param, in place on the EMA copies (Polyak averaging)."""
    with torch.no_grad():
        torch._foreach_mul_(ema, decay)
        torch._foreach_add_(ema, params, alpha=1.0 - decay)


def quick_eval(
    nets: Networks, vae: AutoencoderKL, tokens: CaptionTokens, config: RunConfig, out_dir: Path, step: int
) -> dict[float, dict[str, float]]:
    """Adherence of held-out captions at a few CFG scales; appends to eval.csv and saves a contact sheet."""
    combos = eval_combos(config.diffusion.eval_prompts)
    captions = [c.caption() for c in combos]
    seeds = list(range(len(combos)))
    classifier = load_classifier()

    def encode_text(texts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            return nets.text(tokens(texts))

    results = {}
    for cfg in QUICK_EVAL_CFGS:
        images = generate(nets.unet, encode_text, vae, captions, seeds, latent_size=config.arch.latent_size, cfg=cfg)
        results[cfg] = adherence(images, combos, classifier)
        if cfg == 1.5:
            contact_sheet(images[:32]).save(out_dir / f"samples_{step:06d}.png")
    path = out_dir / "eval.csv"
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["step", "cfg", "background", "foreground", "shape", "position", "size"])
        for cfg, acc in results.items():
            writer.writerow([step, cfg, *(f"{acc[k]:.3f}" for k in ("background", "foreground", "shape", "position", "size"))])
    summary = "  ".join(
        f"cfg {cfg}: bg {a['background']:.2f} fg {a['foreground']:.2f} shape {a['shape']:.2f} pos {a['position']:.2f}"
        for cfg, a in results.items()
    )
    tqdm.write(f"eval step {step}: {summary}")
    return results


def train_unet(run_dir: Path, config: RunConfig, vae: AutoencoderKL, pool: dict[str, torch.Tensor], *,
               stop_at: int | None = None) -> Networks | None:
    """Train (or resume, or just load) the UNet + text tower; returns the EMA networks in eval mode.

    stop_at: end this call after that step with a checkpoint (returns None); the next call continues from it.
    """
    out_dir = run_dir / "unet"
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / "final_ema.safetensors"
    tokens = CaptionTokens(ClipTokenizer())
    vocab = caption_vocab(tokens)
    torch.manual_seed(config.seed + STAGE)
    nets = Networks(config, vocab)
    ema = Networks(config, vocab)
    ema.load("", nets.tensors(""))
    if final.exists():
        ema.load("", load_file(str(final)))
        return ema.eval()

    sched = config.diffusion
    params = nets.trainable()
    ema_params = ema.trainable()
    opt = torch.optim.AdamW(params, lr=sched.lr, betas=(0.9, 0.99), weight_decay=sched.weight_decay)
    start, elapsed0, cpu0 = 0, 0.0, 0.0
    saved = load_state(out_dir / "state")
    if saved is not None:
        tensors, meta = saved
        nets.load("model.", tensors)
        ema.load("ema.", tensors)
        restore_optimizer("opt.", opt, tensors, meta["optimizer"])
        start, elapsed0, cpu0 = meta["step"], meta["seconds"], meta.get("cpu_seconds", 0.0)
    log = LossLog(out_dir / "loss.csv", ["loss", "mse", "lr", "seconds", "cpu_seconds"], resume_step=start)

    abar = alphas_cumprod(DiscreteSampling.linear())
    combos = split_combos("train")
    latents_mean, latents_std, combo_index = pool["mean"], pool["std"], pool["combo"]
    n = len(combo_index)
    clock, cpu_clock = time.perf_counter(), time.process_time()
    nets.unet.train()
    nets.text.train()
    bar = tqdm(range(start, sched.steps), initial=start, total=sched.steps, desc="unet", mininterval=15, ascii=True)
    for step in bar:
        lr = lr_at(step, base=sched.lr, warmup=sched.warmup, total=sched.steps)
        for group in opt.param_groups:
            group["lr"] = lr
        rng = step_rng(config.seed, STAGE, step)
        gen = step_generator(config.seed, STAGE, step)
        idx = torch.from_numpy(rng.integers(0, n, size=sched.batch))
        captions = [
            training_caption(combos[int(combo_index[i])], rng, sched.caption_dropout, sched.omit_part) for i in idx
        ]
        t = torch.from_numpy(rng.integers(0, len(abar), size=sched.batch))
        x0 = latents_mean[idx] + latents_std[idx] * torch.randn(latents_mean[idx].shape, generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        x_t = add_noise(x0, noise, t, abar)

        context = nets.text(tokens(captions))  # (B, 77, W)
        eps = nets.unet(x_t, t.float(), context)
        per_sample = (eps - noise).pow(2).mean(dim=(1, 2, 3))  # (B,)
        loss = (min_snr_weight(t, abar, sched.min_snr_gamma) * per_sample).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema_update(ema_params, params, min(sched.ema_decay, (1 + step) / (10 + step)))

        seconds = elapsed0 + time.perf_counter() - clock
        if step % 10 == 0:
            cpu = cpu0 + time.process_time() - cpu_clock
            log.write(step, {"loss": float(loss.detach()), "mse": float(per_sample.detach().mean()), "lr": lr, "seconds": seconds, "cpu_seconds": cpu})
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        done = step + 1
        stopping = done == stop_at
        if done % sched.checkpoint_every == 0 or done == sched.steps or stopping:
            tensors, opt_meta = optimizer_tensors("opt.", opt)
            save_state(out_dir / "state", {**nets.tensors("model."), **ema.tensors("ema."), **tensors},
                       {"step": done, "seconds": seconds, "cpu_seconds": cpu0 + time.process_time() - cpu_clock,
                        "optimizer": opt_meta})
        if sched.eval_every > 0 and (done % sched.eval_every == 0 or done == sched.steps):
            quick_eval(ema.eval(), vae, tokens, config, out_dir, done)
        if stopping:
            return None
    ema.eval()
    with atomic_path(final) as temp:
        save_file({k: v.contiguous() for k, v in ema.tensors("").items()}, str(temp))
    return ema
