"""The model manager's weight dtype: fp32 on the CPU by default (ComfyUI's numbers), bf16 when asked for."""

import pytest
import torch

from diffusion.checkpoint import load_checkpoint
from diffusion.memory import ModelManager
from tests.diffusion.tiny_checkpoint import write_tiny_sd1_checkpoint


@pytest.mark.parametrize("choice, expected", [("auto", torch.float32), ("fp32", torch.float32),
                                              ("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_checkpoints_load_in_the_chosen_dtype_on_the_cpu(tmp_path, choice, expected):
    path = tmp_path / "tiny.safetensors"
    write_tiny_sd1_checkpoint(path)
    manager = ModelManager(torch.device("cpu"), weight_dtype=choice)
    loaded = manager.load(path, "checkpoint", lambda p, device, dtype: load_checkpoint(p, device=device, dtype=dtype))
    assert loaded.unet.dtype == expected
    assert next(loaded.vae.parameters()).dtype == expected
    assert manager.load(path, "checkpoint", lambda *a, **k: pytest.fail("loaded twice")) is loaded
