"""Train Chisel's built-in model end to end; one command, resumable (run it again to continue where it stopped).

    .venv/bin/python -m train.run --run train/runs/base            # all stages, then export + evaluation

Stages, each skipped when its output exists in the run folder:
  1. vae/      the autoencoder on rendered scenes                    (vae/loss.csv)
  2. pool      normalise the latent space, encode the training pool (pool.safetensors)
  3. unet/     UNet + CLIP text tower, EMA, quick evaluations        (unet/loss.csv, unet/eval.csv, samples_*.png)
  4. export    the SD1-layout .safetensors (--out)

The run's settings are saved to <run>/config.json on the first call and reused on later ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

# Why: with OpenMP's default busy-wait, two torch threads on two shared cores slow down 5-10x whenever another
# process runs (measured: 0.75 s/step passive vs 5-12 s/step active under load). Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from train.config import RunConfig, load_or_create  # noqa: E402
from train.latents import encode_pool  # noqa: E402
from train.unet_stage import train_unet  # noqa: E402
from train.vae_stage import train_vae  # noqa: E402

DEFAULT_OUT = Path("models/checkpoints/chisel-shapes.safetensors")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the built-in shapes model (see train/run.py).")
    parser.add_argument("--run", type=Path, required=True, help="run folder (created; reused to resume)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the exported checkpoint goes")
    parser.add_argument("--unet-steps", type=int, default=None, help="override the UNet step count (new runs only)")
    parser.add_argument("--vae-steps", type=int, default=None, help="override the VAE step count (new runs only)")
    parser.add_argument("--no-export", action="store_true", help="stop after training")
    args = parser.parse_args(argv)

    config = RunConfig(seed=args.seed)
    if args.unet_steps is not None:
        config = dataclasses.replace(config, diffusion=dataclasses.replace(config.diffusion, steps=args.unet_steps))
    if args.vae_steps is not None:
        config = dataclasses.replace(config, vae=dataclasses.replace(config.vae, steps=args.vae_steps))
    config = load_or_create(args.run, config)
    run(args.run, config, out=None if args.no_export else args.out)


def run(run_dir: Path, config: RunConfig, *, out: Path | None) -> None:
    """All stages in order (each resumes or is skipped when done)."""
    torch.set_num_threads(config.threads)
    clock = time.perf_counter()
    vae = train_vae(run_dir, config)
    assert vae is not None  # only a stop_at call returns None
    vae, pool = encode_pool(run_dir, config, vae)
    nets = train_unet(run_dir, config, vae, pool)
    assert nets is not None
    print(f"training stages done in {(time.perf_counter() - clock) / 60:.1f} min (this invocation)", flush=True)
    if out is not None:
        from train.export import export_checkpoint

        export_checkpoint(out, config, vae=vae, nets=nets, run_dir=run_dir)


if __name__ == "__main__":
    main()
