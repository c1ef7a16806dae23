"""POST /prompt with `partial_execution_targets`: only the named nodes and what they need are validated and run."""

from __future__ import annotations

from server.routes.state import STATE
from tests.server.conftest import queue_prompt, wait_history


def two_branches() -> dict:
    """1 -> 2 -> 3 (saves "left") and 4 -> 5 (saves "right"); 6 is broken but feeds only 7."""
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "left"}},
        "4": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": 255}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "right"}},
        "6": {"class_type": "EmptyImage", "inputs": {"width": -5, "height": 16, "batch_size": 1, "color": 0}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "broken"}},
    }


async def test_only_the_targets_and_what_they_need_run(client):
    worker = client.server.app[STATE].engine.worker
    prompt_id = await queue_prompt(client, two_branches(), partial_execution_targets=["3"])
    entry = await wait_history(client, prompt_id)
    assert entry["status"]["status_str"] == "success"
    assert list(entry["outputs"]) == ["3"]
    assert entry["outputs"]["3"]["images"][0]["filename"].startswith("left")
    assert worker.last_outcome.executed == ("1", "2", "3")
    assert entry["prompt"][4] == ["3"]  # outputs_to_execute, as ComfyUI records it

    # several targets, and a target that is not an output node: it runs with its inputs, nothing else
    prompt_id = await queue_prompt(client, two_branches(), partial_execution_targets=["5", "2"])
    entry = await wait_history(client, prompt_id)
    assert list(entry["outputs"]) == ["5"]
    assert set(worker.last_outcome.executed) == {"4", "5"}  # 1 and 2 come from the cache
    assert set(worker.last_outcome.cached) == {"1", "2"}


async def test_without_targets_the_broken_branch_rejects_the_prompt(client):
    response = await client.post("/prompt", json={"prompt": two_branches()})
    body = await response.json()
    assert response.status == 400
    assert body["error"]["type"] == "prompt_outputs_failed_validation" and list(body["node_errors"]) == ["6"]


async def test_unknown_target_is_a_400_in_comfyui_error_shape(client):
    response = await client.post("/prompt", json={"prompt": two_branches(), "partial_execution_targets": ["3", "99"]})
    body = await response.json()
    assert response.status == 400
    assert set(body) == {"error", "node_errors"} and body["node_errors"] == {}
    assert set(body["error"]) == {"type", "message", "details", "extra_info"}
    assert body["error"]["type"] == "invalid_prompt" and "99" in body["error"]["details"]


def test_chisel_run_takes_targets_too(tmp_path):
    import io
    import json

    from server.cli import run_workflow
    from tests.server.conftest import make_config

    config = make_config(tmp_path)
    workflow = tmp_path / "prompt.json"
    workflow.write_text(json.dumps(two_branches()))
    seen = []
    out, err = io.StringIO(), io.StringIO()
    assert run_workflow(config, workflow, [], out=out, err=err, progress=False) == 2  # the broken branch
    code = run_workflow(config, workflow, [], out=out, err=err, progress=False, on_runtime=seen.append,
                        targets=["3"])
    assert code == 0, err.getvalue()
    assert seen[0].executor.cache.stats().entries == 3  # 1, 2 and 3 ran; 4 and 5 did not
    from server.cli import _parser

    assert _parser().parse_args(["run", "w.json", "--target", "3", "--target", "5"]).target == ["3", "5"]
