"""Stage 1: train the autoencoder (SD's AutoencoderKL layout, narrower) on freshly rendered scenes.

Loss: L1 + squared error per pixel plus a small KL term per latent element (Kingma & Welling 2014); no adversarial
or perceptual term, which flat-coloured shapes do not need. A refinement phase weights the pixels at colour edges.
"""

from __future__ import annotations

import bisect
import itertools
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from safefiles import atomic_path
from tqdm import tqdm

from diffusion.vae import AutoencoderKL
from train.config import RunConfig
from train.checker import accuracy, judge_batch
from train.loop import LossLog, images_to_tensor, lr_at, step_generator, step_rng, tensor_to_images
from train.shape_classifier import load_classifier
from train.scenes import render, sample_scene, split_combos
from train.state import load_state, optimizer_tensors, prefixed, restore_optimizer, save_state, unprefixed

STAGE = 1
PROBE_STAGE = 101


def vae_batch(config: RunConfig, rng: np.random.Generator, batch: int, crop: int | None = None) -> torch.Tensor:
    """A batch of images rendered from training combos, [B, 3, crop, crop] in [-1, 1] (random crops if crop is set)."""
    combos = split_combos("train")
    size = config.arch.image_size
    images = []
    for _ in range(batch):
        image = render(sample_scene(rng, combos), size)
        if crop is not None and crop < size:
            top, left = rng.integers(0, size - crop + 1, size=2)
            image = image[top : top + crop, left : left + crop]
        images.append(image)
    return images_to_tensor(images)


def edge_weights(x: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-pixel loss weights [B, 1, H, W]: 1 + weight within a pixel of a colour edge of x ([B, 3, H, W]).

    Why: flat background is most of every image and is easy; weighting the outline pixels spends the autoencoder's
    capacity on the shapes' corners and points, which the shape checker judges."""
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().amax(dim=1, keepdim=True)  # (B, 1, H, W-1)
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().amax(dim=1, keepdim=True)  # (B, 1, H-1, W)
    edge = ((F.pad(dx, (0, 1)) + F.pad(dy, (0, 0, 0, 1))) > 0.05).float()
    edge = F.max_pool2d(edge, 3, stride=1, padding=1)  # dilate by one pixel
    return 1.0 + weight * edge


def vae_loss(vae: AutoencoderKL, x: torch.Tensor, generator: torch.Generator, kl_weight: float,
             edge_weight: float = 0.0) -> dict[str, torch.Tensor]:
    mean, logvar = vae.encode(x)
    z = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=generator)  # reparameterised posterior draw
    recon = vae.decode(z)
    w = edge_weights(x, edge_weight) if edge_weight > 0 else torch.ones_like(x[:, :1])
    w = w / w.mean()  # keeps the loss scale of the unweighted phase
    l1 = (w * (recon - x).abs()).mean()
    l2 = (w * (recon - x).pow(2)).mean()
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
    return {"loss": l1 + l2 + kl_weight * kl, "l1": l1, "l2": l2, "kl": kl}


def psnr(vae: AutoencoderKL, x: torch.Tensor) -> float:
    """Reconstruction PSNR (posterior mean) in dB for images in [-1, 1] (peak-to-peak 2)."""
    with torch.no_grad():
        recon = vae.decode(vae.encode(x)[0]).clamp(-1, 1)
    mse = float((recon - x).pow(2).mean())
    return 10 * torch.log10(torch.tensor(4.0 / mse)).item()


def reconstruction_adherence(vae: AutoencoderKL, config: RunConfig, count: int = 96) -> str:
    """The checker's shape / foreground accuracy on reconstructions of held-out scenes: a ceiling for the UNet."""
    rng = step_rng(config.seed, PROBE_STAGE, 1)
    combos = split_combos("held_out")
    scenes = [sample_scene(rng, combos) for _ in range(count)]
    x = images_to_tensor([render(s, config.arch.image_size) for s in scenes])
    with torch.no_grad():
        recon = tensor_to_images(vae.decode(vae.encode(x)[0]))
    acc = accuracy(judge_batch(recon, load_classifier()), [s.combo for s in scenes])
    return f"shape {acc['shape']:.2f} fg {acc['foreground']:.2f} bg {acc['background']:.2f}"


def train_vae(run_dir: Path, config: RunConfig, *, stop_at: int | None = None) -> AutoencoderKL | None:
    """Train (or resume, or just load) the run's autoencoder; returns it in eval mode.

    stop_at: end this call after that step with a checkpoint (returns None); the next call continues from it.
    """
    out_dir = run_dir / "vae"
    final = out_dir / "final.safetensors"
    torch.manual_seed(config.seed)
    vae = AutoencoderKL(config.arch.vae())
    with torch.no_grad():
        vae.quant_conv.bias[vae.config.embed_dim :] = config.vae.logvar_init  # rows [C:2C] are the log-variance
    if final.exists():
        vae.load_state_dict(load_file(str(final)))
        return vae.eval()

    sched = config.vae
    opt = torch.optim.AdamW(vae.parameters(), lr=sched.lr, betas=(0.9, 0.99), weight_decay=0.0)
    start = 0
    saved = load_state(out_dir / "state")
    if saved is not None:
        tensors, meta = saved
        vae.load_state_dict(unprefixed("model.", tensors))
        restore_optimizer("opt.", opt, tensors, meta["optimizer"])
        start = meta["step"]
    log = LossLog(out_dir / "loss.csv", ["loss", "l1", "l2", "kl", "lr", "seconds", "cpu_seconds"], resume_step=start)
    probe = vae_batch(config, step_rng(config.seed, PROBE_STAGE, 0), 32)  # a fixed set for PSNR along the way
    clock, cpu_clock = time.perf_counter(), time.process_time()
    elapsed0 = saved[1]["seconds"] if saved is not None else 0.0
    cpu0 = saved[1].get("cpu_seconds", 0.0) if saved is not None else 0.0

    phase_ends = list(itertools.accumulate([sched.steps] + [n for n, _ in sched.refine]))
    total = phase_ends[-1]
    bar = tqdm(range(start, total), initial=start, total=total, desc="vae", mininterval=10, ascii=True)
    for step in bar:
        rng = step_rng(config.seed, STAGE, step)
        if step < sched.steps:  # main phase: crops, then whole images
            lr = lr_at(step, base=sched.lr, warmup=sched.warmup, total=sched.steps)
            whole = step >= sched.steps * (1 - sched.full_size_fraction)
            x = vae_batch(config, rng, sched.full_size_batch) if whole else vae_batch(config, rng, sched.batch, sched.crop)
            edge = 0.0
        else:  # refinement: whole images, outline pixels weighted, one cosine per phase
            phase = bisect.bisect_right(phase_ends, step) - 1  # index into sched.refine
            length, peak = sched.refine[phase]
            lr = lr_at(step - phase_ends[phase], base=peak, warmup=sched.warmup // 2, total=length)
            x = vae_batch(config, rng, sched.refine_batch)
            edge = sched.edge_weight
        for group in opt.param_groups:
            group["lr"] = lr
        parts = vae_loss(vae, x, step_generator(config.seed, STAGE, step), sched.kl_weight, edge)
        opt.zero_grad(set_to_none=True)
        parts["loss"].backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        seconds = elapsed0 + time.perf_counter() - clock
        if step % 10 == 0:
            values = {k: float(v.detach()) for k, v in parts.items()}
            log.write(step, {**values, "lr": lr, "seconds": seconds, "cpu_seconds": cpu0 + time.process_time() - cpu_clock})
            bar.set_postfix(loss=f"{values['loss']:.4f}")
        done = step + 1
        stopping = done == stop_at
        if done % sched.checkpoint_every == 0 or done == total or stopping:
            tensors, opt_meta = optimizer_tensors("opt.", opt)
            save_state(out_dir / "state", {**prefixed("model.", vae), **tensors},
                       {"step": done, "seconds": seconds, "cpu_seconds": cpu0 + time.process_time() - cpu_clock,
                        "optimizer": opt_meta})
            tqdm.write(f"vae step {done}: probe PSNR {psnr(vae.eval(), probe):.2f} dB, "
                       f"checker on reconstructions {reconstruction_adherence(vae, config)}, {seconds / 60:.1f} min")
            vae.train()
        if stopping:
            return None
    vae.eval()
    with atomic_path(final) as temp:
        save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(temp))
    return vae
