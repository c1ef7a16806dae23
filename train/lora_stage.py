"""Optional stage 5: a LoRA that teaches the exported model a style it lacks ("huge" shapes, train/lora_style.py).

Low-rank adapters (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") on every Linear layer of
the UNet's transformer blocks and of the text encoder, trained against the exported checkpoint exactly as users load
it (the VAE and base weights stay frozen). Half of the pool is huge scenes captioned with the word "huge", half
plain scenes with plain captions, so the base behaviour is kept when the word is absent.

The file uses the LDM key layout ComfyUI's LoraLoader reads: `model.diffusion_model.<module>.lora_down.weight`,
`.lora_up.weight`, `.alpha`, and `cond_stage_model.transformer.<module>...` for the text encoder.

    .venv/bin/python -m train.lora_stage --run train/runs/lora-huge
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see train/run.py: shared cores

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from safefiles import atomic_path  # noqa: E402
from torch import nn  # noqa: E402
from tqdm import tqdm  # noqa: E402

from diffusion.checkpoint import load_checkpoint  # noqa: E402
from diffusion.model_sampling import DiscreteSampling  # noqa: E402
from diffusion.safetensors_io import read_header  # noqa: E402
from diffusion.tokenizer import ClipTokenizer  # noqa: E402
from train.config import LATENT_SCALE  # noqa: E402
from train.diffusion import add_noise, alphas_cumprod, min_snr_weight  # noqa: E402
from train.loop import LossLog, images_to_tensor, lr_at, step_generator, step_rng  # noqa: E402
from train.scenes import render, sample_scene, split_combos  # noqa: E402
from train.state import load_state, optimizer_tensors, restore_optimizer, save_state  # noqa: E402
from train.lora_style import style_caption, style_scene  # noqa: E402
from train.text import CaptionTokens  # noqa: E402

STAGE = 5
UNET_PREFIX = "model.diffusion_model."
TEXT_PREFIX = "cond_stage_model.transformer."
DEFAULT_CHECKPOINT = Path("models/checkpoints/chisel-shapes.safetensors")
DEFAULT_OUT = Path("models/loras/chisel-huge.safetensors")


@dataclass(frozen=True)
class LoraSchedule:
    rank: int = 8
    steps: int = 1000
    batch: int = 32
    lr: float = 1e-3
    warmup: int = 50
    pool_size: int = 4000
    """Scenes encoded once; even indices huge, odd plain."""
    caption_dropout: float = 0.1
    checkpoint_every: int = 250
    seed: int = 0


class LoraAdapters(nn.Module):
    """down [rank, in] and up [out, rank] factors for named Linear layers, added by forward hooks while attached."""

    def __init__(self, targets: dict[str, nn.Linear], rank: int, generator: torch.Generator) -> None:
        super().__init__()
        self.rank = rank
        self.names = sorted(targets)
        self.targets = targets
        self.down = nn.ParameterList()
        self.up = nn.ParameterList()
        for name in self.names:
            layer = targets[name]
            bound = 1.0 / math.sqrt(layer.in_features)
            down = (torch.rand(rank, layer.in_features, generator=generator) * 2 - 1) * bound
            self.down.append(nn.Parameter(down))
            self.up.append(nn.Parameter(torch.zeros(layer.out_features, rank)))  # zero: starts as the base model
        self._hooks: list = []

    def attach(self) -> None:
        for i, name in enumerate(self.names):
            def hook(module, inputs, output, i=i):
                # output + up · down · x (alpha = rank, so the scale is 1)
                return output + F.linear(F.linear(inputs[0], self.down[i]), self.up[i])
            self._hooks.append(self.targets[name].register_forward_hook(hook))

    def detach_hooks(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def file_tensors(self, prefix_of: dict[str, str]) -> dict[str, torch.Tensor]:
        """The LDM-layout LoRA tensors; prefix_of maps each target name to its checkpoint prefix."""
        out = {}
        for i, name in enumerate(self.names):
            base = prefix_of[name] + name.split(":", 1)[1]
            out[base + ".lora_down.weight"] = self.down[i].detach().contiguous()
            out[base + ".lora_up.weight"] = self.up[i].detach().contiguous()
            out[base + ".alpha"] = torch.tensor(float(self.rank))
        return out


def _linear_targets(unet: nn.Module, text: nn.Module) -> tuple[dict[str, nn.Linear], dict[str, str]]:
    """Every Linear of the UNet's transformer blocks and of the text encoder's layers, as "unet:<name>" /
    "text:<name>", with the checkpoint prefix of each."""
    targets: dict[str, nn.Linear] = {}
    prefix_of: dict[str, str] = {}
    for name, module in unet.named_modules():
        if isinstance(module, nn.Linear) and ".transformer_blocks." in name:
            targets["unet:" + name] = module
            prefix_of["unet:" + name] = UNET_PREFIX
    for name, module in text.named_modules():
        if isinstance(module, nn.Linear) and ".encoder.layers." in name:
            targets["text:" + name] = module
            prefix_of["text:" + name] = TEXT_PREFIX
    return targets, prefix_of


def encode_lora_pool(checkpoint_vae: nn.Module, schedule: LoraSchedule, size: int, path: Path) -> dict[str, torch.Tensor]:
    """Scaled latents of `pool_size` scenes (even indices huge) and their combo indices; cached at `path`."""
    if path.exists():
        return load_file(str(path))
    rng = np.random.default_rng([schedule.seed, STAGE])
    combos = split_combos("train")
    index = {c: i for i, c in enumerate(combos)}
    scenes = [sample_scene(rng, combos) for _ in range(schedule.pool_size)]
    scenes = [style_scene(rng, s.combo) if i % 2 == 0 else s for i, s in enumerate(scenes)]
    latents = []
    with torch.no_grad():
        for start in tqdm(range(0, len(scenes), 64), desc="encode lora pool", mininterval=10, ascii=True):
            part = range(start, min(start + 64, len(scenes)))
            images = [render(scenes[i], size) for i in part]
            latents.append(checkpoint_vae.encode(images_to_tensor(images))[0] * LATENT_SCALE)
    pool = {"latent": torch.cat(latents).contiguous(),
            "combo": torch.tensor([index[s.combo] for s in scenes], dtype=torch.int64)}
    with atomic_path(path) as temp:
        save_file(pool, str(temp))
    return pool


def trained_image_size(checkpoint: Path) -> int:
    """The image side the model was trained at, from the training record in the file's metadata."""
    record = read_header(checkpoint).metadata.get("chisel.training")
    if record is None:
        raise ValueError(f"{checkpoint} has no chisel.training metadata (not exported by train/export.py)")
    return int(json.loads(record)["config"]["arch"]["image_size"])


def train_lora(run_dir: Path, checkpoint: Path, out: Path, schedule: LoraSchedule) -> Path:
    """Train (or resume) the LoRA and write it to `out`; returns `out`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    loaded = load_checkpoint(checkpoint)
    unet, vae = loaded.unet, loaded.vae
    text = loaded.text_encoders["clip_l"].module
    for module in (unet, vae, text):
        module.requires_grad_(False)
    size = trained_image_size(checkpoint)
    pool = encode_lora_pool(vae, schedule, size, run_dir / "pool.safetensors")
    latents, combo_index = pool["latent"], pool["combo"]
    combos = split_combos("train")

    targets, prefix_of = _linear_targets(unet, text)
    adapters = LoraAdapters(targets, schedule.rank, torch.Generator().manual_seed(schedule.seed))
    opt = torch.optim.AdamW(adapters.parameters(), lr=schedule.lr, betas=(0.9, 0.99), weight_decay=0.0)
    start = 0
    saved = load_state(run_dir / "state")
    if saved is not None:
        tensors, meta = saved
        adapters.load_state_dict({k[len("lora."):]: v for k, v in tensors.items() if k.startswith("lora.")})
        restore_optimizer("opt.", opt, tensors, meta["optimizer"])
        start = meta["step"]
    log = LossLog(run_dir / "loss.csv", ["loss", "lr", "seconds"], resume_step=start)
    tokens = CaptionTokens(ClipTokenizer())
    abar = alphas_cumprod(DiscreteSampling.linear())
    adapters.attach()
    clock = time.perf_counter()
    try:
        bar = tqdm(range(start, schedule.steps), initial=start, total=schedule.steps, desc="lora", mininterval=15,
                   ascii=True)
        for step in bar:
            lr = lr_at(step, base=schedule.lr, warmup=schedule.warmup, total=schedule.steps)
            for group in opt.param_groups:
                group["lr"] = lr
            rng = step_rng(schedule.seed, STAGE, step)
            gen = step_generator(schedule.seed, STAGE, step)
            idx = rng.integers(0, len(combo_index), size=schedule.batch)
            captions = []
            for i in idx:
                combo = combos[int(combo_index[i])]
                if rng.random() < schedule.caption_dropout:
                    captions.append("")
                else:
                    captions.append(style_caption(combo) if i % 2 == 0 else combo.caption())
            x0 = latents[torch.from_numpy(idx)]
            t = torch.from_numpy(rng.integers(0, len(abar), size=schedule.batch))
            noise = torch.randn(x0.shape, generator=gen)
            context = text.encode(tokens(captions)).hidden
            eps = unet(add_noise(x0, noise, t, abar), t.float(), context)
            per_sample = (eps - noise).pow(2).mean(dim=(1, 2, 3))
            loss = (min_snr_weight(t, abar, 5.0) * per_sample).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % 10 == 0:
                log.write(step, {"loss": float(loss.detach()), "lr": lr, "seconds": time.perf_counter() - clock})
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
            done = step + 1
            if done % schedule.checkpoint_every == 0 or done == schedule.steps:
                opt_tensors, opt_meta = optimizer_tensors("opt.", opt)
                save_state(run_dir / "state", {**{"lora." + k: v for k, v in adapters.state_dict().items()},
                                                **opt_tensors}, {"step": done, "optimizer": opt_meta})
    finally:
        adapters.detach_hooks()
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"chisel.lora": f"'huge' shapes for {checkpoint.name}, rank {schedule.rank}, {schedule.steps} steps"}
    with atomic_path(out) as temp:
        save_file(adapters.file_tensors(prefix_of), str(temp), metadata=metadata)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the optional 'huge' LoRA (see train/lora_stage.py).")
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--steps", type=int, default=LoraSchedule.steps)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    out = train_lora(args.run, args.checkpoint, args.out, LoraSchedule(steps=args.steps))
    print(f"saved {out}", flush=True)


if __name__ == "__main__":
    main()
