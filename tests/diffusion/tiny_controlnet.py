"""Tiny random-weight ControlNets in the real key layouts, for tests (not a test module).

    net = random_controlnet(tiny_controlnet_config(), seed=1)
    write_controlnet(tmp_path / "cn.safetensors", net)            # lllyasviel layout, `control_model.` prefix
"""

from __future__ import annotations

from pathlib import Path

import torch

from diffusion.controlnet import ControlNetConfig, ControlNetModel
from diffusion.safetensors_io import save_atomic
from diffusion.unet import UNetConfig
from tests.diffusion.tiny_checkpoint import tiny_configs


def tiny_controlnet_config(unet: UNetConfig | None = None, *, hint_channels: int = 3,
                           union_types: int | None = None) -> ControlNetConfig:
    """A ControlNet for the tiny SD1 UNet of tests/diffusion/tiny_checkpoint.py (or for `unet`)."""
    return ControlNetConfig(unet=unet if unet is not None else tiny_configs()[0], hint_channels=hint_channels,
                            union_types=union_types)


def random_controlnet(config: ControlNetConfig, seed: int, *, scale: float = 1.0) -> ControlNetModel:
    """The module with torch's default initialisation drawn from `seed` (zero convs included, so it acts);
    `scale` multiplies every zero convolution (their output is what reaches the UNet)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ControlNetModel(config)
        if net.task_embedding is not None:
            torch.nn.init.normal_(net.task_embedding, std=0.5)
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.startswith(("zero_convs.", "middle_block_out.")):
                param.mul_(scale)
    return net.eval().requires_grad_(False)


def write_controlnet(path: Path, net: ControlNetModel, *, prefix: str = "control_model.",
                     extra: dict[str, torch.Tensor] | None = None) -> Path:
    """Save `net` in the lllyasviel layout (module names under `prefix`)."""
    tensors = {prefix + k: v.detach().clone() for k, v in net.state_dict().items()}
    save_atomic(path, {**tensors, **(extra or {})})
    return path
