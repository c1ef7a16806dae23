"""A GPU out-of-memory error in a node fails only its prompt, with a hint, after idle models are moved off the GPU;
the next prompt runs normally. (torch raises the same exception type on a CPU-only build, so this runs here.)"""

from __future__ import annotations

import torch

from nodes.catalog import core_nodes
from diffusion.memory import ModelManager, is_out_of_memory
from nodes.inputs import Boolean, Link
from nodes.registry import Node, Output
from server.app import create_app
from tests.server.conftest import model_free_prompt, queue_prompt, wait_history


class AllocateHuge(Node):
    """Raises CUDA's out-of-memory error when asked to (test helper)."""

    image = Link("IMAGE")
    fail = Boolean(True)
    outputs = (Output("IMAGE"),)

    @classmethod
    def run(cls, ctx, image, fail):
        if fail:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return (image,)


class CountingManager(ModelManager):
    """The real model manager, counting how often the server asked it to free the GPU."""

    offloads = 0

    def offload_all(self) -> None:
        self.offloads += 1
        super().offload_all()


def oom_prompt(fail: bool) -> dict:
    prompt = model_free_prompt("oom")
    prompt["2"] = {"class_type": "AllocateHuge", "inputs": {"image": ["1", 0], "fail": fail}}
    prompt["3"]["inputs"]["images"] = ["2", 0]
    return prompt


def test_accelerator_oom_errors_are_recognised_and_others_are_not():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 9 GB)"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(MemoryError())


async def test_out_of_memory_fails_the_prompt_with_a_hint_frees_models_and_the_queue_goes_on(aiohttp_client, config):
    models = CountingManager(torch.device("cpu"))
    client = await aiohttp_client(create_app(config, nodes=[*core_nodes(), AllocateHuge], models=models))
    failed = await queue_prompt(client, oom_prompt(True))
    after = await queue_prompt(client, oom_prompt(False))
    entry = await wait_history(client, failed)
    assert entry["status"]["status_str"] == "error"
    error = dict(entry["status"]["messages"])["execution_error"]
    assert error["node_id"] == "2" and error["exception_type"] == "torch.OutOfMemoryError"
    assert "CUDA out of memory" in error["exception_message"]
    assert "ran out of memory" in error["exception_message"] and "Idle models were moved off the GPU" in \
        error["exception_message"]
    assert models.offloads == 1
    assert (await wait_history(client, after))["status"]["status_str"] == "success"
    assert models.offloads == 1
