"""Shared helpers of the cluster tests: prompts on the built-in model, a sleeping node, polling."""

from __future__ import annotations

import copy
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.server.conftest import SLEEP_PACK, make_config, model_free_prompt, sleep_prompt
from tests.server.conftest import TestSleep as SleepNode

REPO = Path(__file__).resolve().parents[2]
BUILTIN = "chisel-shapes.safetensors"
_TXT2IMG = json.loads((REPO / "workflows" / "api" / "txt2img.json").read_text())

__all__ = ["BUILTIN", "SLEEP_PACK", "SleepNode", "make_config", "model_free_prompt", "sleep_prompt", "txt2img",
           "wait_for", "pixels"]


def txt2img(seed: int, *, ckpt: str = BUILTIN, steps: int = 3, prefix: str = "t") -> dict[str, Any]:
    """The ready txt2img workflow on the built-in model, one 64x64 image, few steps."""
    prompt = copy.deepcopy(_TXT2IMG)
    for node in prompt.values():
        node.pop("_meta", None)
    prompt["4"]["inputs"]["ckpt_name"] = ckpt
    prompt["3"]["inputs"].update(seed=seed, steps=steps)
    prompt["5"]["inputs"]["batch_size"] = 1
    prompt["9"]["inputs"]["filename_prefix"] = prefix
    return prompt


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def pixels(path: Path) -> bytes:
    """The decoded RGB pixels of a saved PNG (metadata ignored)."""
    from PIL import Image

    with Image.open(io.BytesIO(path.read_bytes())) as image:
        return image.convert("RGB").tobytes()
