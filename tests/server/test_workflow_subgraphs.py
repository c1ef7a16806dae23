"""Subgraphs flattened as ComfyUI's frontend flattens them: each fixture in tests/fixtures/subgraphs/ is a workflow that
the real frontend (1.58.1) built and saved, with the API prompt it queued for it (tests/compat/make_subgraph_fixtures.py
made them); our converter must give the same prompt, ids included. Then the cases a saved file can hold that the
frontend's own UI does not make: inputs saved in another order or not at all, plain widgets_values, muted instances,
missing and self-containing definitions, and every subgraph template ComfyUI ships.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from server.compose import build_registry
from server.config import ServerConfig
from server.paths import ServerFolders
from server.workflow import WorkflowError, api_to_workflow, convert_workflow

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "subgraphs"
NAMES = sorted(p.stem for p in FIXTURES.glob("*.json"))


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    config = ServerConfig(base_dir=tmp_path_factory.mktemp("registry"), load_custom_nodes=False)
    return build_registry(config, ServerFolders.from_config(config))[0]


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def definition(workflow: dict[str, Any], index: int = 0) -> dict[str, Any]:
    return workflow["definitions"]["subgraphs"][index]


def instances(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    ids = {d["id"] for d in workflow["definitions"]["subgraphs"]}
    return [n for n in workflow["nodes"] if n["type"] in ids]


def test_the_fixtures_cover_the_cases():
    assert {"clip_and_sampler", "repeated_definition", "nested", "nested_promoted", "unused_input", "pass_through",
            "bypassed_inner", "bypassed_instance", "reroute", "legacy_proxy_widgets"} <= set(NAMES)


@pytest.mark.parametrize("name", [n for n in NAMES if load(n)["prompt"] is not None])
def test_we_flatten_each_subgraph_workflow_into_the_prompt_comfyuis_frontend_queues(name, registry):
    fixture = load(name)
    assert convert_workflow(fixture["workflow"], registry) == fixture["prompt"], fixture["about"]


def test_each_instance_of_a_definition_keeps_its_own_promoted_values(registry):
    prompt = convert_workflow(load("repeated_definition")["workflow"], registry)
    assert (prompt["10:3"]["inputs"]["seed"], prompt["10:3"]["inputs"]["steps"]) == (11, 2)
    assert (prompt["11:3"]["inputs"]["seed"], prompt["11:3"]["inputs"]["steps"]) == (22, 3)
    consumers = [k for k, v in prompt.items() if ["10:3", 0] in v["inputs"].values()]
    assert len(consumers) == 2, "the first instance's output feeds two nodes"


def test_promoted_values_stored_as_a_plain_list_are_read_in_the_order_of_the_promoted_inputs(registry):
    fixture = load("repeated_definition")
    workflow = copy.deepcopy(fixture["workflow"])
    for node in instances(workflow):
        node.pop("widgets_values_named", None)  # the list alone: one value per promoted input, definition order
    assert convert_workflow(workflow, registry) == fixture["prompt"]


def test_inputs_are_matched_by_name_never_by_position(registry):
    fixture = load("unused_input")
    workflow = copy.deepcopy(fixture["workflow"])
    instance = instances(workflow)[0]
    instance["inputs"].reverse()  # saved in another order
    assert convert_workflow(workflow, registry) == fixture["prompt"]
    # a declared input the instance did not save at all stays unconnected; the one at its position is not used
    instance["inputs"] = [i for i in instance["inputs"] if i["name"] != "model"]
    prompt = convert_workflow(workflow, registry)
    assert "model" not in prompt["10:3"]["inputs"]
    assert prompt["10:3"]["inputs"]["latent_image"] == ["5", 0] and prompt["10:3"]["inputs"]["seed"] == 42


def test_a_pass_through_link_gives_the_outer_source_where_the_frontend_gives_up(registry):
    fixture = load("pass_through")
    assert fixture["prompt"] is None and "No output node found" in fixture["frontend_error"]
    prompt = convert_workflow(fixture["workflow"], registry)
    second = next(k for k, v in prompt.items() if v["class_type"] == "KSampler" and ":" not in k)
    assert prompt[second]["inputs"]["model"] == ["4", 0]  # input 'model' -> output 'model_out' -> the loader
    assert prompt[second]["inputs"]["latent_image"] == ["10:3", 0]
    assert prompt["10:3"]["inputs"]["model"] == ["4", 0]


def test_an_unconnected_pass_through_leaves_the_consumer_without_that_input(registry):
    workflow = copy.deepcopy(load("pass_through")["workflow"])
    instance = instances(workflow)[0]
    for slot in instance["inputs"]:
        if slot["name"] == "model":
            slot["link"] = None
    prompt = convert_workflow(workflow, registry)
    assert all("model" not in v["inputs"] for k, v in prompt.items() if v["class_type"] == "KSampler")


def test_a_muted_instance_drops_its_inner_nodes_and_what_they_fed(registry):
    workflow = copy.deepcopy(load("clip_and_sampler")["workflow"])
    instances(workflow)[0]["mode"] = 2
    prompt = convert_workflow(workflow, registry)
    assert not any(":" in k for k in prompt)
    assert "samples" not in prompt["8"]["inputs"]


def test_the_inner_nodes_of_each_level_get_colon_joined_ids(registry):
    prompt = convert_workflow(load("nested_promoted")["workflow"], registry)
    assert prompt["12:11:10:3"]["inputs"]["seed"] == 4242  # promoted from the innermost to the outermost instance
    assert prompt["12:11:10:3"]["inputs"]["latent_image"] == ["12:5", 0]
    assert prompt["9"]["inputs"]["images"] == ["12:11:8", 0]


def test_definitions_nested_inside_definitions_are_found(registry):
    fixture = load("nested")
    workflow = copy.deepcopy(fixture["workflow"])
    outer = next(d for d in workflow["definitions"]["subgraphs"] if d["id"] == instances(workflow)[0]["type"])
    inner = [d for d in workflow["definitions"]["subgraphs"] if d is not outer]
    workflow["definitions"]["subgraphs"] = [outer]
    outer["definitions"] = {"subgraphs": inner}  # as older frontends nested them
    assert convert_workflow(workflow, registry) == fixture["prompt"]


def test_a_missing_definition_is_a_clear_error(registry):
    workflow = copy.deepcopy(load("clip_and_sampler")["workflow"])
    missing = definition(workflow)["id"]
    workflow["definitions"]["subgraphs"] = []
    with pytest.raises(WorkflowError) as err:
        convert_workflow(workflow, registry)
    error = err.value.to_response()["node_errors"]["10"]["errors"][0]
    assert error["type"] == "invalid_subgraph" and missing in error["details"]


def test_a_definition_that_contains_itself_is_a_clear_error(registry):
    workflow = copy.deepcopy(load("nested")["workflow"])
    outer = next(d for d in workflow["definitions"]["subgraphs"] if d["id"] == instances(workflow)[0]["type"])
    inner_instance = next(n for n in outer["nodes"] if len(n["type"]) == 36)
    inner_instance["type"] = outer["id"]  # B now holds an instance of B
    with pytest.raises(WorkflowError) as err:
        convert_workflow(workflow, registry)
    assert "contains itself" in str(err.value) and err.value.problems[0].kind == "invalid_subgraph"


def test_api_to_ui_still_round_trips_a_flattened_prompt(registry):
    prompt = load("nested")["prompt"]
    back = convert_workflow(api_to_workflow(prompt, registry), registry)
    assert sorted(v["class_type"] for v in back.values()) == sorted(v["class_type"] for v in prompt.values())
    literal = [sorted((k, json.dumps(x)) for k, x in v["inputs"].items() if not isinstance(x, list))
               for v in prompt.values()]
    assert sorted(map(str, literal)) == sorted(
        str(sorted((k, json.dumps(x)) for k, x in v["inputs"].items() if not isinstance(x, list)))
        for v in back.values())


def test_every_subgraph_template_comfyui_ships_converts_with_links_only_to_nodes_in_the_prompt(registry):
    from bench.template_coverage import template_files

    count = 0
    for path in template_files():
        workflow = json.loads(path.read_text())
        if not isinstance(workflow, dict) or not (workflow.get("definitions") or {}).get("subgraphs"):
            continue
        count += 1
        prompt = convert_workflow(workflow, registry)
        assert prompt, path.name
        for node_id, node in prompt.items():
            for name, value in node["inputs"].items():
                if isinstance(value, list):
                    assert value[0] in prompt, f"{path.name}: {node_id}.{name} links to missing {value[0]}"
    assert count >= 200  # a third of ComfyUI's templates


@pytest.mark.slow
def test_a_workflow_with_two_instances_of_one_subgraph_runs_end_to_end(tmp_path, capsys):
    """`chisel run` on the frontend-saved repeated_definition workflow, tiny random SD1 checkpoint, 64x64, 2-3 steps:
    a SaveImage per instance, and a PreviewImage of the first instance's latent upscaled 1.5x."""
    from PIL import Image

    from server.cli import main as chisel
    from tests.e2e.conftest import make_base_dir

    base = make_base_dir(tmp_path / "base")
    path = tmp_path / "repeated.json"
    path.write_text(json.dumps(load("repeated_definition")["workflow"]))
    code = chisel(["run", str(path), "--base-dir", str(base)])
    assert code == 0, capsys.readouterr().err
    sizes = {folder: sorted(Image.open(p).size for p in (base / folder).rglob("*.png"))
             for folder in ("output", "temp")}
    assert sizes == {"output": [(64, 64), (64, 64)], "temp": [(96, 96)]}
