"""What the built-in model is and how it is trained: one frozen record, saved beside each run.

The architecture is SD1.x's (LDM UNet with 1x1 proj_in/proj_out, KL autoencoder with 8x downsampling and 4 latent
channels, CLIP text tower in the Hugging Face layout on the real CLIP tokenizer), only narrower, so the exported file
loads as an SD1 checkpoint whose sizes are read from its tensor shapes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from diffusion.text_encoders import TextEncoderConfig, default_heads
from diffusion.unet import UNetConfig
from diffusion.vae import VAEConfig

LATENT_SCALE = 0.18215
"""SD1's latent scale factor: samplers multiply raw VAE latents by it. The exported VAE is normalised so that the
scaled latents of the training images have zero mean and unit variance per channel."""


@dataclass(frozen=True)
class Architecture:
    """Widths and depths of the three networks (measured on two CPU cores before choosing; see the model card).

    Every GroupNorm of the SD classes has 32 groups. With one or two channels per group a flat region normalises to
    zero or to a sign pattern, so a flat background colour cannot pass the last norm of the decoder (or the UNet):
    a width-32/64 autoencoder reconstructed shapes but painted every background the same grey after 400 steps. So
    the full-resolution levels are 96 wide (3 channels per group), which on two cores is affordable at 64x64 pixels
    (8x8 latents), not at 128x128.
    """

    image_size: int = 64
    text_width: int = 64
    text_layers: int = 2
    text_intermediate: int = 256
    unet_channels: int = 96
    unet_mult: tuple[int, ...] = (1, 1)
    unet_res_blocks: int = 1
    unet_transformer_depth: tuple[int, ...] = (1, 1)
    unet_transformer_depth_output: tuple[int, ...] = (1, 1)
    vae_channels: int = 96
    vae_mult: tuple[int, ...] = (1, 1, 1, 1)
    vae_res_blocks: int = 1

    def unet(self) -> UNetConfig:
        return UNetConfig(
            model_channels=self.unet_channels,
            channel_mult=self.unet_mult,
            num_res_blocks=self.unet_res_blocks,
            transformer_depth=self.unet_transformer_depth,
            transformer_depth_output=self.unet_transformer_depth_output,
            transformer_depth_middle=1,
            context_dim=self.text_width,
            num_heads=8,  # SD1's rule; the loader assumes it because heads cannot be read from shapes
            use_linear_in_transformer=False,
        )

    def vae(self) -> VAEConfig:
        return VAEConfig(ch=self.vae_channels, ch_mult=self.vae_mult, num_res_blocks=self.vae_res_blocks)

    def text(self) -> TextEncoderConfig:
        return TextEncoderConfig(
            "clip_l_hf",
            width=self.text_width,
            layers=self.text_layers,
            heads=default_heads(self.text_width),  # the loader's rule: 64-wide heads
            intermediate=self.text_intermediate,
        )

    @property
    def latent_size(self) -> int:
        return self.image_size // self.vae().downscale


@dataclass(frozen=True)
class VAESchedule:
    steps: int = 2000
    batch: int = 8
    crop: int = 32
    """Most steps train on random crops of this side (the same pixel scale, a quarter of the cost)..."""
    full_size_fraction: float = 0.2
    """...and the last fraction of the steps on whole images (so GroupNorm statistics match inference)..."""
    full_size_batch: int = 4
    """...in batches of this size (as many pixels as a crop batch)."""
    logvar_init: float = -6.0
    """Initial posterior log-variance (quant_conv bias): near-deterministic from the start, so the decoder does not
    first learn to ignore a latent drowned in unit noise."""
    lr: float = 1e-3
    warmup: int = 100
    refine: tuple[tuple[int, float], ...] = ((1500, 5e-4), (1500, 2.5e-4))
    """After `steps`, phases of (steps, peak lr), each a short warm-up and a cosine (warm restarts, Loshchilov &
    Hutter 2017): whole images with outline pixels weighted. The checker's shape accuracy on reconstructions of
    held-out scenes was 0.51 after the main phase and 0.84 after the first refinement phase (small stars lose their
    points), hence the second."""
    refine_batch: int = 4
    edge_weight: float = 6.0
    kl_weight: float = 1e-6
    """Weight of the KL term per latent element against the per-pixel reconstruction loss (SD's is smaller still)."""
    checkpoint_every: int = 400


@dataclass(frozen=True)
class DiffusionSchedule:
    steps: int = 6500
    batch: int = 64
    lr: float = 1e-3
    warmup: int = 200
    weight_decay: float = 0.01
    caption_dropout: float = 0.1
    """Probability that a caption is replaced by "" so the model also learns the unconditional branch for CFG."""
    omit_part: float = 0.15
    """Probability, per optional caption part (size, position, background), that it is left out."""
    min_snr_gamma: float = 5.0
    """Min-SNR loss weighting (Hang et al. 2023): eps-loss weight min(SNR, gamma) / SNR."""
    ema_decay: float = 0.999
    pool_size: int = 20000
    """Scenes rendered and encoded once; the UNet trains on their latents."""
    checkpoint_every: int = 500
    eval_every: int = 1000
    """Steps between quick adherence checks of the EMA weights (0: none)."""
    eval_prompts: int = 48


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    arch: Architecture = field(default_factory=Architecture)
    vae: VAESchedule = field(default_factory=VAESchedule)
    diffusion: DiffusionSchedule = field(default_factory=DiffusionSchedule)
    threads: int = 2

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        raw = json.loads(text)

        def build(kind, values):
            kwargs = {}
            for f in fields(kind):
                if f.name in values:
                    v = values[f.name]
                    kwargs[f.name] = _tuples(v)
            return kind(**kwargs)

        return cls(
            seed=raw["seed"],
            arch=build(Architecture, raw["arch"]),
            vae=build(VAESchedule, raw["vae"]),
            diffusion=build(DiffusionSchedule, raw["diffusion"]),
            threads=raw.get("threads", 2),
        )


def _tuples(value):
    """JSON lists back to (nested) tuples, as the frozen dataclasses hold them."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def load_or_create(run_dir: Path, config: RunConfig) -> RunConfig:
    """The run's saved config if it has one (a resumed run keeps its settings), else `config`, saved there."""
    path = run_dir / "config.json"
    if path.exists():
        saved = RunConfig.from_json(path.read_text())
        return saved
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(config.to_json())
    return config
