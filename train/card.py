"""Write the built-in model's card (models/checkpoints/chisel-shapes.md) from a finished run and its evaluation.

    .venv/bin/python -m train.card --run train/runs/base --eval train/runs/base/eval.json [--lora-eval ...]

Every number in the card is read from the run folder (config, loss logs, timings), the evaluation JSON written by
`python -m train.eval --json`, and the checkpoint file itself; the prose around them is fixed here.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
from pathlib import Path

from diffusion.checkpoint import detect_checkpoint
from diffusion.safetensors_io import read_header
from train.config import RunConfig
from train.eval import ATTRIBUTES, TARGETS
from train.scenes import COLOURS, HELD_OUT_MODULUS, POSITIONS, SHAPES, SIZES, all_combos, split_combos

DEFAULT_CARD = Path("models/checkpoints/chisel-shapes.md")
LORA_PROSE = """
## Optional LoRA: "huge" (`models/loras/chisel-huge.safetensors`)

Trained by `python -m train.lora_stage` against this file (LDM key layout, rank 8, UNet transformer blocks and text
encoder layers). Use with LoraLoader and a prompt like "a huge red star on a blue background". The issue's example
style, striped fills, was not possible: the autoencoder (trained on flat fills of eight colours) reconstructs
stripes, outlines and unseen colours as smeared blobs, and a LoRA does not change the decoder (see
`train/lora_style.py`). "huge" = the shape spans more than 62 % of the image.

"""


def _last_row(path: Path) -> dict[str, str]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return rows[-1]


def _mean_tail(path: Path, column: str, rows: int = 20) -> float:
    with path.open(newline="") as f:
        values = [float(r[column]) for r in csv.DictReader(f)]
    tail = values[-rows:]
    return sum(tail) / len(tail)


def _params(shapes: dict[str, tuple[int, ...]], prefix: str) -> int:
    total = 0
    for key, shape in shapes.items():
        if key.startswith(prefix) and not key.endswith("position_ids"):
            n = 1
            for d in shape:
                n *= d
            total += n
    return total


def _log_facts(log: Path) -> dict[str, str]:
    """Facts only the progress log holds: the pool-encoding time and the last reconstruction check of the VAE."""
    text = log.read_text(errors="replace").replace("\r", "\n") if log.exists() else ""
    facts = {}
    pools = re.findall(r"encode pool: 100%.*?\[(\d+):(\d+)<", text)
    if pools:
        minutes, seconds = pools[-1]
        facts["pool_minutes"] = f"{int(minutes) + int(seconds) / 60:.1f}"
    checks = re.findall(r"vae step (\d+): probe PSNR ([\d.]+) dB, checker on reconstructions (shape [\d.]+ fg [\d.]+ bg [\d.]+)",
                        text)
    if checks:
        step, db, acc = checks[-1]
        facts["vae_check"] = f"after step {step}: PSNR {db} dB, checker {acc}"
    return facts


def _pct(v: float) -> str:
    return f"{100 * v:.0f} %"


def adherence_table(results: list[dict]) -> str:
    lines = ["| sampler / scheduler, steps, CFG | " + " | ".join(ATTRIBUTES) + " | s / image |",
             "|---|" + "---|" * (len(ATTRIBUTES) + 1)]
    for r in results:
        s = r["settings"]
        name = f"{s['sampler']} / {s['scheduler']}, {s['steps']}, {s['cfg']:g}"
        lines.append(f"| {name} | " + " | ".join(_pct(r["accuracy"][a]) for a in ATTRIBUTES)
                     + f" | {r['seconds_per_image']:.2f} |")
    lines.append("| target | " + " | ".join(f">= {_pct(TARGETS[a])}" if a in TARGETS else "-" for a in ATTRIBUTES)
                 + " | |")
    return "\n".join(lines)


def quick_eval_table(path: Path) -> str:
    if not path.exists():
        return "(none recorded)"
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    lines = ["| step | CFG | background | foreground | shape | position | size |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['step']} | {r['cfg']} | " + " | ".join(_pct(float(r[a])) for a in ATTRIBUTES) + " |")
    return "\n".join(lines)


def write_card(run_dir: Path, checkpoint: Path, eval_json: Path, out: Path, recommended: dict,
               lora_json: Path | None = None) -> str:
    config = RunConfig.from_json((run_dir / "config.json").read_text())
    vae_state = json.loads((run_dir / "vae" / "state.json").read_text())
    unet_state = json.loads((run_dir / "unet" / "state.json").read_text())
    evaluation = json.loads(eval_json.read_text())
    header = read_header(checkpoint)
    shapes = header.shapes
    layout = detect_checkpoint(checkpoint)
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    size = checkpoint.stat().st_size
    a = config.arch
    unet_p = _params(shapes, "model.diffusion_model.")
    vae_p = _params(shapes, "first_stage_model.")
    text_p = _params(shapes, "cond_stage_model.")
    vae_last = _last_row(run_dir / "vae" / "loss.csv")
    unet_loss = _mean_tail(run_dir / "unet" / "loss.csv", "loss")
    unet_mse = _mean_tail(run_dir / "unet" / "loss.csv", "mse")
    facts = _log_facts(run_dir / "log.txt")
    pool_minutes = float(facts.get("pool_minutes", "0"))
    wall = (vae_state["seconds"] + unet_state["seconds"]) / 60 + pool_minutes
    cpu = (vae_state.get("cpu_seconds", 0) + unet_state.get("cpu_seconds", 0)) / 60
    u, v, t = layout.unet_config, layout.vae_config, layout.text_encoders[0].config
    vs = config.vae
    ds = config.diffusion
    refine = ", ".join(f"{n} steps at peak lr {lr:g}" for n, lr in vs.refine)
    n_held = len(split_combos("held_out"))
    rec = recommended

    lora_section = ""
    if lora_json is not None and lora_json.exists():
        lora = json.loads(lora_json.read_text()).get("lora", {})
        if lora:
            rows = ["| images | background | foreground | shape | huge |", "|---|---|---|---|---|"]
            for name, acc in lora.items():
                rows.append(f"| {name} | {_pct(acc['background'])} | {_pct(acc['foreground'])} | "
                            f"{_pct(acc['shape'])} | {_pct(acc['huge'])} |")
            lora_section = LORA_PROSE + "\n".join(rows) + "\n"

    card = f"""# chisel-shapes: Chisel's built-in text-to-image model

A small latent diffusion model in the **Stable Diffusion 1.x single-file layout**, trained from scratch on this
project's CPU in about {wall:.0f} minutes. It draws one simple shape in a named colour, size and position on a
coloured background, {a.image_size}x{a.image_size} pixels, and exists so that a fresh machine with no GPU and no
network can run a real text-to-image workflow. It is not a general image model: it knows only the words below.

- File: `{checkpoint.name}`, {size:,} bytes (fp16), sha256 `{digest}`
- Loads with `CheckpointLoaderSimple` like any SD1.x checkpoint: every size is read from the tensor shapes
  (detected family: `{layout.family.name}`, eps-prediction, SD's scaled-linear 1000-step schedule).
- Recommended: **{rec['sampler']} / {rec['scheduler']}, {rec['steps']} steps, CFG {rec['cfg']:g},
  {rec['size']}x{rec['size']}, negative prompt empty ("")**. Other words in the negative prompt are unknown to
  the model and act as noise.
- Licence: MIT, like the project. Training data is generated by `train/scenes.py`; no external data or weights.

## Prompts it understands

`a <size> <colour> <shape> <position> on a <colour> background`, e.g.
"a small red star in the top left on a blue background". Size, position and background may be left out.

- colours: {", ".join(COLOURS)}
- shapes: {", ".join(SHAPES)}
- sizes: {", ".join(SIZES)}
- positions: {", ".join(POSITIONS)} ("in the top left", "at the top", "on the left", "in the center", ...)

## Data

Scenes are rendered on the fly (antialiased, size jittered by ±7 %, position by ±2 % of the side). Of the
{len(all_combos()):,} combinations of size x colour x shape x position x background (colour != background),
{n_held} (one in {HELD_OUT_MODULUS}, chosen by a hash of the caption) are **held out of training**; the evaluation
below asks only for those, so every prompt it scores is a combination the model never saw.

Captions: the full caption, each optional part left out with probability {ds.omit_part}, and the whole caption
replaced by "" with probability {ds.caption_dropout} (the unconditional branch classifier-free guidance needs).

## Architecture (SD1.x classes, narrower)

| part | configuration | parameters |
|---|---|---|
| UNet (`model.diffusion_model.`) | model_channels {u.model_channels}, channel_mult {u.channel_mult}, {u.num_res_blocks} ResBlock per level, transformer depth {u.transformer_depth} / middle {u.transformer_depth_middle} / output {u.transformer_depth_output}, 8 heads, context {u.context_dim}, 1x1 conv proj_in/out | {unet_p:,} |
| VAE (`first_stage_model.`) | ch {v.ch}, ch_mult {v.ch_mult}, {v.num_res_blocks} ResnetBlock per level, 8x down, 4 latent channels | {vae_p:,} |
| text encoder (`cond_stage_model.transformer.text_model.`) | CLIP (HF layout), width {t.width}, {t.layers} layers, {t.heads} head, MLP {t.intermediate}, quick-GELU, 77 positions, real CLIP vocabulary (49,408 tokens, pad 49407); SD1's final-layer-norm output | {text_p:,} |

The token table ({t.vocab_size:,} x {t.width}) is most of the text encoder; only the rows of the caption words were
trained, the rest keep their initial values. Every GroupNorm of these classes has 32 groups: with one or two
channels per group a flat colour normalises away, so the full-resolution levels are 96 wide (3 per group), which is
what fixed the image size at 64x64 on this CPU budget (a 32/64-wide autoencoder painted every background grey).

The VAE's latent space is normalised for SD1's scale factor: a per-channel affine map is folded into `quant_conv`
and its inverse into `post_quant_conv`, so that raw latents x 0.18215 of the training images have zero mean and unit
variance per channel; reconstructions are unchanged (checked when folding). The file also carries a
`chisel.latent_rgb` preview map fitted on training images.

## Training (one command, seeded, resumable)

```
.venv/bin/python -m train.run --run train/runs/base     # stages 1-3, then export to {checkpoint.as_posix()}
.venv/bin/python -m train.eval --cfg 2.0 1.0 1.5 3.0 5.0 8.0 \\
    --variants dpmpp_2m/karras/20 euler/normal/10 euler_ancestral/normal/20 ddim/ddim_uniform/20 \\
    --json train/runs/base/eval.json
.venv/bin/python -m train.lora_stage --run train/runs/lora-huge   # optional LoRA -> models/loras/
.venv/bin/python -m train.eval --cfg 2.0 --lora models/loras/chisel-huge.safetensors --json train/runs/lora-huge/eval.json
.venv/bin/python -m train.card --run train/runs/base --eval train/runs/base/eval.json \\
    --lora-eval train/runs/lora-huge/eval.json
```

Running the first command again continues from the last checkpoint (every few minutes); each step's batch, noise and
timesteps are functions of (seed, step), so a resumed run draws the same data. Logs: `train/runs/base/log.txt`
(progress bars), `vae/loss.csv`, `unet/loss.csv`, `unet/eval.csv`.

| stage | what | steps | wall / CPU time |
|---|---|---|---|
| 1 VAE | L1 + L2 + {vs.kl_weight:g} KL; {vs.steps} steps of batch {vs.batch} ({vs.crop}px crops, last {vs.full_size_fraction:.0%} whole images), then {refine} on whole images with edge pixels weighted x{1 + vs.edge_weight:g}; AdamW | {vs.steps + sum(n for n, _ in vs.refine)} | {vae_state['seconds'] / 60:.1f} / {vae_state.get('cpu_seconds', 0) / 60:.1f} min |
| 2 pool | render and encode {ds.pool_size:,} training scenes, normalise the latent space | - | {pool_minutes:.1f} min wall |
| 3 UNet + text | eps-prediction on the SD table, Min-SNR-{ds.min_snr_gamma:g} weighting, batch {ds.batch}, AdamW lr {ds.lr:g} ({ds.warmup} warm-up, cosine), EMA {ds.ema_decay} (exported) | {unet_state['step']} | {unet_state['seconds'] / 60:.1f} / {unet_state.get('cpu_seconds', 0) / 60:.1f} min |

Total: {wall:.0f} min wall ({cpu:.0f} CPU-minutes in stages 1 and 3; the two cores were shared with other work).
Autoencoder quality on held-out scenes, {facts.get("vae_check", "not logged")} (the checker's accuracy on
plain reconstructions: a ceiling for generated images).
Final losses: VAE L1 {float(vae_last['l1']):.4f} (last logged step), UNet weighted loss {unet_loss:.4f}, eps MSE
{unet_mse:.4f} (mean of the last 20 logged steps).

## Prompt adherence (held-out captions)

{evaluation['prompts']} held-out captions x {len(evaluation['seeds'])} seeds ({", ".join(map(str, evaluation['seeds']))}),
through the library exactly as the default workflow runs (CheckpointLoaderSimple, CLIPTextEncode with an empty
negative, EmptyLatentImage {rec['size']}x{rec['size']}, KSampler, VAEDecode), judged by `train/checker.py`:
background = palette colour nearest the median of the border pixels; foreground = palette colour of the largest
region far from the background; shape = a small CNN trained on generated masks (`train/shape_classifier.py`,
100 % on clean renders); position / size = that region's box on the 3x3 grid / nearest nominal size.

{adherence_table(evaluation['results'])}

### Along the training (EMA weights, 48 held-out captions, Euler 20 steps)

{quick_eval_table(run_dir / 'unet' / 'eval.csv')}
{lora_section}
## Limitations

- Only the vocabulary above; unknown words get untrained embeddings. One shape per image.
- Small stars and crosses lose their points through the 8x-down autoencoder (the checker's shape accuracy on plain
  VAE reconstructions of held-out scenes is the ceiling for generated images; see the VAE log lines in
  `train/runs/base/log.txt`).
- Position words are mostly ignored: 25-31 % of held-out prompts land in the named cell of the 3x3 grid (one in
  nine by chance). The model learned colour, shape and size from the caption but not where to draw.
- Classifier-free guidance barely matters here (the table); at ComfyUI's default CFG 8 size adherence starts to drop.
"""
    out.write_text(card)
    return card


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the built-in model's card (see train/card.py).")
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--eval", type=Path, required=True, help="JSON written by python -m train.eval --json")
    parser.add_argument("--checkpoint", type=Path, default=Path("models/checkpoints/chisel-shapes.safetensors"))
    parser.add_argument("--lora-eval", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=DEFAULT_CARD)
    args = parser.parse_args(argv)
    from train.eval import RECOMMENDED

    write_card(args.run, args.checkpoint, args.eval, args.out, RECOMMENDED.__dict__, args.lora_eval)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
