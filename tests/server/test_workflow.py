"""UI workflow -> API prompt conversion on realistic workflow files (tests/fixtures/workflows/).

The core SD nodes are declared here as stubs with ComfyUI's exact inputs (order, types, defaults), so the converter
is tested against the same schemas the real frontend sees in /object_info.
"""

import copy
import json
import random
from pathlib import Path

import pytest

from nodes.image import ImageInvert, ImageScale, LoadImage, LoadImageMask, PreviewImage, SaveImage
from nodes.inputs import SEED_MAX, Combo, Files, Float, Int, Link, String
from nodes.primitives import NODES as PRIMITIVES
from nodes.registry import Node, Output, Registry
from server.workflow import WorkflowError, api_to_workflow, convert_workflow, detect_format, to_api_prompt

FIXTURES = Path(__file__).parent.parent / "fixtures" / "workflows"
POSITIVE = "beautiful scenery nature glass bottle landscape, , purple galaxy bottle,"
NEGATIVE = "text, watermark"


class CheckpointLoaderSimple(Node):
    display_name = "Load Checkpoint"
    ckpt_name = Combo(Files("checkpoints"))
    outputs = (Output("MODEL"), Output("CLIP"), Output("VAE"))


class CLIPTextEncode(Node):
    display_name = "CLIP Text Encode (Prompt)"
    text = String("", multiline=True, dynamic_prompts=True)
    clip = Link("CLIP")
    outputs = (Output("CONDITIONING"),)


class EmptyLatentImage(Node):
    display_name = "Empty Latent Image"
    width = Int(512, min=16, max=16384, step=8)
    height = Int(512, min=16, max=16384, step=8)
    batch_size = Int(1, min=1, max=4096)
    outputs = (Output("LATENT"),)


class KSampler(Node):
    model = Link("MODEL")
    seed = Int(0, min=0, max=SEED_MAX, control_after_generate=True)
    steps = Int(20, min=1, max=10000)
    cfg = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    sampler_name = Combo(["euler", "euler_ancestral", "dpmpp_2m"])
    scheduler = Combo(["simple", "normal", "karras"])
    positive = Link("CONDITIONING")
    negative = Link("CONDITIONING")
    latent_image = Link("LATENT")
    denoise = Float(1.0, min=0.0, max=1.0, step=0.01)
    outputs = (Output("LATENT"),)


class VAEDecode(Node):
    display_name = "VAE Decode"
    samples = Link("LATENT")
    vae = Link("VAE")
    outputs = (Output("IMAGE"),)


class LoraLoader(Node):
    display_name = "Load LoRA"
    model = Link("MODEL")
    clip = Link("CLIP")
    lora_name = Combo(Files("loras"))
    strength_model = Float(1.0, min=-100.0, max=100.0)
    strength_clip = Float(1.0, min=-100.0, max=100.0)
    outputs = (Output("MODEL"), Output("CLIP"))


@pytest.fixture
def registry():
    files = {"checkpoints": ["v1-5-pruned-emaonly-fp16.safetensors"], "loras": ["detail.safetensors"],
             "input": ["example.png"]}
    reg = Registry(list_files=lambda source: files.get(source.folder, []))
    reg.add_all([CheckpointLoaderSimple, CLIPTextEncode, EmptyLatentImage, KSampler, VAEDecode, LoraLoader,
                 SaveImage, PreviewImage, LoadImage, ImageScale, ImageInvert, *PRIMITIVES])
    return reg


def load(name):
    return json.loads((FIXTURES / f"{name}.json").read_text())


def default_prompt(ckpt="v1-5-pruned-emaonly-fp16.safetensors"):
    return {
        "3": {"inputs": {"seed": 156680208700286, "steps": 20, "cfg": 8, "sampler_name": "euler",
                         "scheduler": "normal", "denoise": 1, "model": ["4", 0], "positive": ["6", 0],
                         "negative": ["7", 0], "latent_image": ["5", 0]},
              "class_type": "KSampler", "_meta": {"title": "KSampler"}},
        "4": {"inputs": {"ckpt_name": ckpt}, "class_type": "CheckpointLoaderSimple",
              "_meta": {"title": "Load Checkpoint"}},
        "5": {"inputs": {"width": 512, "height": 512, "batch_size": 1}, "class_type": "EmptyLatentImage",
              "_meta": {"title": "Empty Latent Image"}},
        "6": {"inputs": {"text": POSITIVE, "clip": ["4", 1]}, "class_type": "CLIPTextEncode",
              "_meta": {"title": "CLIP Text Encode (Prompt)"}},
        "7": {"inputs": {"text": NEGATIVE, "clip": ["4", 1]}, "class_type": "CLIPTextEncode",
              "_meta": {"title": "CLIP Text Encode (Prompt)"}},
        "8": {"inputs": {"samples": ["3", 0], "vae": ["4", 2]}, "class_type": "VAEDecode",
              "_meta": {"title": "VAE Decode"}},
        "9": {"inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}, "class_type": "SaveImage",
              "_meta": {"title": "Save Image"}},
    }


def test_classic_2023_graph_with_true_control_value_converts_to_the_default_prompt(registry):
    prompt = convert_workflow(load("default_graph_2023"), registry)
    assert prompt == default_prompt("v1-5-pruned-emaonly.safetensors")


def test_sampler_entry_matches_the_real_frontend_byte_for_byte(registry):
    # Reference: graphToPrompt output of frontend 1.58.1 for the classic graph (reference/comfyui-frontend-and-
    # editor.md section 4.3): widget values first in widget order, then the links in input order.
    expected = ('{"inputs": {"seed": 156680208700286, "steps": 20, "cfg": 8, "sampler_name": "euler", '
                '"scheduler": "normal", "denoise": 1, "model": ["4", 0], "positive": ["6", 0], '
                '"negative": ["7", 0], "latent_image": ["5", 0]}, "class_type": "KSampler", '
                '"_meta": {"title": "KSampler"}}')
    assert json.dumps(convert_workflow(load("default_graph_2023"), registry)["3"]) == expected


def test_modern_file_with_widget_inputs_and_randomize_control_converts_the_same(registry):
    assert convert_workflow(load("default_graph"), registry) == default_prompt()


def test_schema_version_1_with_link_objects_converts_the_same(registry):
    workflow = load("default_graph_schema1")
    assert workflow["version"] == 1 and isinstance(workflow["links"][0], dict)
    assert convert_workflow(workflow, registry) == default_prompt()


def test_bypassed_nodes_pass_inputs_through_by_type_and_muted_nodes_disappear(registry):
    prompt = convert_workflow(load("bypass_and_mute"), registry)
    expected = default_prompt()
    # bypassed LoraLoader: MODEL and CLIP come straight from the checkpoint; bypassed ImageInvert: Save reads Decode
    assert prompt["3"] == expected["3"] and prompt["6"] == expected["6"] and prompt["7"] == expected["7"]
    assert prompt["9"]["inputs"]["images"] == ["8", 0]
    # the muted ImageScale and SaveImage are gone, and the preview lost its only input; notes are not nodes
    assert "12" not in prompt and "14" not in prompt and "10" not in prompt and "11" not in prompt
    assert prompt["13"] == {"inputs": {}, "class_type": "PreviewImage", "_meta": {"title": "Preview Image"}}
    assert "15" not in prompt and "16" not in prompt
    assert set(prompt) == {"3", "4", "5", "6", "7", "8", "9", "13"}


def test_bypass_with_two_outputs_prefers_the_same_slot_index(registry):
    workflow = load("bypass_and_mute")
    lora = next(n for n in workflow["nodes"] if n["id"] == 10)
    lora["inputs"][0]["type"] = "*"  # a wildcard first input: CLIP (slot 1) must still come from slot 1
    prompt = convert_workflow(workflow, registry)
    assert prompt["6"]["inputs"]["clip"] == ["4", 1]
    assert prompt["3"]["inputs"]["model"] == ["4", 0]


def test_reroute_nodes_and_native_reroutes_resolve_to_the_real_source(registry):
    assert convert_workflow(load("reroutes"), registry) == default_prompt()


def test_primitive_nodes_push_their_values_through_reroutes_and_titles_are_kept(registry):
    prompt = convert_workflow(load("primitive_seed"), registry)
    expected = default_prompt()
    expected["3"]["inputs"]["seed"] = 42
    expected["3"]["_meta"]["title"] = "Sampler (fixed seed)"
    expected["6"]["inputs"]["text"] = expected["7"]["inputs"]["text"] = "a red circle on a blue background"
    assert prompt == expected
    assert list(prompt["3"]["inputs"])[0] == "seed"  # the value replaces the widget in place


def test_subgraph_instances_expand_to_outer_colon_inner_ids(registry):
    prompt = convert_workflow(load("subgraph"), registry)
    expected = default_prompt()
    renamed = {"3": "40:3", "6": "40:6", "7": "40:7"}

    def rename(value):
        return [renamed.get(value[0], value[0]), value[1]] if isinstance(value, list) else value

    expected = {renamed.get(k, k): {**v, "inputs": {n: rename(x) for n, x in v["inputs"].items()}}
                for k, v in expected.items()}
    assert prompt == expected


def test_upload_widget_value_is_skipped_and_unknown_nodes_keep_their_widgets(registry):
    prompt = convert_workflow(load("load_image"), registry)
    assert prompt["1"] == {"inputs": {"image": "example.png"}, "class_type": "LoadImage",
                           "_meta": {"title": "Load Image"}}
    assert prompt["2"]["inputs"] == {"upscale_method": "lanczos", "width": 768, "height": 0, "crop": "disabled",
                                     "image": ["1", 0]}
    assert prompt["4"] == {"inputs": {"strength": 0.5, "label": {"__value__": ["a", "b"]}, "image": ["1", 0]},
                           "class_type": "SomeCustomNode", "_meta": {"title": "SomeCustomNode"}}


def test_named_widget_values_win_over_positional_ones(registry):
    workflow = load("default_graph")
    sampler = next(n for n in workflow["nodes"] if n["id"] == 3)
    sampler["widgets_values_named"] = {"seed": 7, "control_after_generate": "fixed", "steps": 8, "cfg": 2.5,
                                       "sampler_name": "dpmpp_2m", "scheduler": "karras", "denoise": 0.5}
    sampler["widgets_values"] = ["garbage"]
    inputs = convert_workflow(workflow, registry)["3"]["inputs"]
    assert (inputs["seed"], inputs["steps"], inputs["cfg"], inputs["scheduler"], inputs["denoise"]) == \
        (7, 8, 2.5, "karras", 0.5)

    sampler.pop("widgets_values_named")
    sampler["widgets_values"] = {"seed": 9, "steps": 3, "cfg": 1, "sampler_name": "euler", "scheduler": "simple",
                                 "denoise": 1}
    assert convert_workflow(workflow, registry)["3"]["inputs"]["seed"] == 9


def test_widgets_missing_from_an_old_file_take_their_declared_defaults(registry):
    workflow = load("default_graph")
    sampler = next(n for n in workflow["nodes"] if n["id"] == 3)
    sampler["widgets_values"] = [5, "fixed", 30, 6.5, "euler", "normal"]  # saved before `denoise` existed
    inputs = convert_workflow(workflow, registry)["3"]["inputs"]
    assert (inputs["seed"], inputs["steps"], inputs["cfg"], inputs["denoise"]) == (5, 30, 6.5, 1.0)


def test_input_linked_from_a_missing_node_is_dropped(registry):
    workflow = load("default_graph")
    workflow["nodes"] = [n for n in workflow["nodes"] if n["id"] != 5]  # the latent source was deleted
    prompt = convert_workflow(workflow, registry)
    assert "latent_image" not in prompt["3"]["inputs"] and prompt["3"]["inputs"]["model"] == ["4", 0]


def test_widget_input_linked_to_a_muted_node_is_removed_not_left_at_its_widget_value(registry):
    workflow = load("default_graph")
    workflow["nodes"].append({"id": 50, "type": "PrimitiveInt", "mode": 2, "inputs": [],
                              "outputs": [{"name": "INT", "type": "INT", "links": [50]}], "widgets_values": [3]})
    workflow["links"].append([50, 50, 0, 3, 4, "INT"])
    next(s for s in workflow["nodes"][4]["inputs"] if s["name"] == "seed")["link"] = 50
    assert "seed" not in convert_workflow(workflow, registry)["3"]["inputs"]


def test_malformed_workflows_raise_typed_errors_with_node_details(registry):
    workflow = load("default_graph")
    workflow["nodes"][0]["type"] = None
    workflow["nodes"][1]["widgets_values"] = 12
    with pytest.raises(WorkflowError) as err:
        convert_workflow(workflow, registry)
    body = err.value.to_response()
    assert body["error"]["type"] == "invalid_workflow"
    assert set(body["node_errors"]) == {"4", "5"}
    assert body["node_errors"]["5"]["class_type"] == "EmptyLatentImage"
    assert body["node_errors"]["5"]["errors"][0]["type"] == "invalid_widgets_values"
    assert "no type" in body["node_errors"]["4"]["errors"][0]["details"]

    with pytest.raises(WorkflowError) as err:
        convert_workflow({"nodes": [], "links": [[1, 2]]}, registry)
    assert "malformed link" in str(err.value)
    with pytest.raises(WorkflowError):
        convert_workflow([1, 2], registry)


def test_reroute_cycles_are_reported_not_followed_forever(registry):
    workflow = {"nodes": [
        {"id": 1, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": 2}], "outputs": []},
        {"id": 2, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": 1}], "outputs": []},
        {"id": 3, "type": "PreviewImage", "inputs": [{"name": "images", "type": "IMAGE", "link": 3}]}],
        "links": [[1, 1, 0, 2, 0, "*"], [2, 2, 0, 1, 0, "*"], [3, 2, 0, 3, 0, "IMAGE"]], "version": 0.4}
    with pytest.raises(WorkflowError) as err:
        convert_workflow(workflow, registry)
    assert err.value.problems[0].kind == "link_cycle" and err.value.problems[0].node_id == "3"


def test_formats_are_detected_and_api_prompts_are_not_converted_twice(registry):
    prompt = default_prompt()
    assert detect_format(prompt) == "api" and detect_format(load("default_graph")) == "ui"
    with pytest.raises(WorkflowError) as err:
        convert_workflow(prompt, registry)
    assert err.value.kind == "api_format"
    assert to_api_prompt(prompt, registry) == prompt
    assert to_api_prompt(load("default_graph"), registry) == prompt
    with pytest.raises(WorkflowError):
        detect_format({"a": 1})


def test_api_prompt_becomes_a_laid_out_workflow_that_converts_back_unchanged(registry):
    prompt = default_prompt()
    prompt["3"]["_meta"]["title"] = "My sampler"
    prompt["12"] = {"inputs": {"value": 3}, "class_type": "PrimitiveInt", "_meta": {"title": "Int"}}
    prompt["5"]["inputs"]["batch_size"] = ["12", 0]
    prompt["13"] = {"inputs": {"images": ["8", 0], "tags": {"__value__": ["x", "y"]}, "level": 2},
                    "class_type": "UnknownPackNode", "_meta": {"title": "UnknownPackNode"}}
    workflow = api_to_workflow(prompt, registry)
    assert workflow["version"] == 0.4 and len(workflow["nodes"]) == 9
    sampler = next(n for n in workflow["nodes"] if n["id"] == 3)
    assert sampler["widgets_values"] == [156680208700286, "fixed", 20, 8, "euler", "normal", 1]
    assert sampler["title"] == "My sampler"
    positions = {n["id"]: n["pos"] for n in workflow["nodes"]}
    assert positions[4][0] < positions[6][0] < positions[3][0] < positions[8][0] < positions[9][0]
    assert len({tuple(p) for p in positions.values()}) == len(positions)  # no two nodes on top of each other
    assert convert_workflow(json.loads(json.dumps(workflow)), registry) == prompt


def test_conversion_does_not_modify_the_workflow(registry):
    workflow = load("primitive_seed")
    before = copy.deepcopy(workflow)
    convert_workflow(workflow, registry)
    assert workflow == before


class MaskTool(Node):
    """An upload combo followed by an optional widget: the upload value sits between them."""

    image = Combo(Files("input", images_only=True), image_upload=True)
    feather = Int(0, optional=True)
    outputs = (Output("MASK"),)


def test_the_upload_value_follows_the_last_required_widget(registry):
    registry.add(LoadImageMask)
    registry.add(MaskTool)
    workflow = {"nodes": [{"id": 1, "type": "LoadImageMask", "mode": 0, "widgets_values": ["m.png", "red", "image"]},
                          {"id": 2, "type": "MaskTool", "mode": 0, "widgets_values": ["a.png", "image", 6]}],
                "links": [], "version": 0.4}
    prompt = convert_workflow(workflow, registry)
    assert prompt["1"]["inputs"] == {"image": "m.png", "channel": "red"}
    assert prompt["2"]["inputs"] == {"image": "a.png", "feather": 6}
    back = api_to_workflow(prompt, registry)
    assert [n["widgets_values"] for n in back["nodes"]] == [["m.png", "red", "image"], ["a.png", "image", 6]]


def test_extension_virtual_nodes_set_get_links_and_labels_are_resolved(registry):
    workflow = load("default_graph")
    nodes = {n["id"]: n for n in workflow["nodes"]}
    # the checkpoint's MODEL goes into SetNode "model"; the sampler reads it from a GetNode
    workflow["nodes"] += [
        {"id": 60, "type": "SetNode", "mode": 0, "title": "Set_model", "widgets_values": ["model"],
         "inputs": [{"name": "MODEL", "type": "MODEL", "link": 60}],
         "outputs": [{"name": "*", "type": "*", "links": None}]},
        {"id": 61, "type": "GetNode", "mode": 0, "title": "Get_model", "widgets_values": ["model"], "inputs": [],
         "outputs": [{"name": "MODEL", "type": "MODEL", "links": [61]}]},
        {"id": 62, "type": "Label (rgthree)", "mode": 0, "widgets_values": [], "properties": {"fontSize": 20}},
    ]
    workflow["links"] = [link for link in workflow["links"] if link[0] != 1]
    workflow["links"] += [[60, 4, 0, 60, 0, "MODEL"], [61, 61, 0, 3, 0, "MODEL"]]
    nodes[3]["inputs"][0]["link"] = 61
    assert convert_workflow(workflow, registry) == default_prompt()

    class GetNode(Node):  # a server-side node of that name wins: it is then a real node
        name = String("")
        outputs = (Output("MODEL"),)

    registry.add(GetNode)
    assert convert_workflow(workflow, registry)["3"]["inputs"]["model"] == ["61", 0]


def test_damaged_workflows_give_workflow_errors_or_prompts_never_crashes(registry):
    junk = [None, 0, -1, 1.5, "x", "", [], {}, [1, 2], {"a": 1}, True, [None], "-10", 10 ** 30, float("nan")]

    def damage(value, rng):
        if isinstance(value, (dict, list)) and value:
            key = rng.choice(list(value)) if isinstance(value, dict) else rng.randrange(len(value))
            roll = rng.random()
            if roll < 0.2:
                del value[key]
            elif roll < 0.5:
                value[key] = rng.choice(junk)
            else:
                damage(value[key], rng)

    rng = random.Random(1234)  # fixed seed: the same damaged files on every run
    for path in sorted(FIXTURES.glob("*.json")):
        original = json.loads(path.read_text())
        for _ in range(60):
            workflow = copy.deepcopy(original)
            for _ in range(rng.randint(1, 4)):
                damage(workflow, rng)
            try:
                prompt = convert_workflow(workflow, registry)
            except WorkflowError:
                continue
            assert isinstance(prompt, dict)
            if prompt:
                api_to_workflow(prompt, registry)


def test_legacy_group_nodes_are_refused_with_a_clear_reason(registry):
    workflow = load("default_graph")
    workflow["nodes"].append({"id": 70, "type": "workflow>Upscale", "mode": 0, "inputs": [], "outputs": []})
    workflow["extra"]["groupNodes"] = {"Upscale": {"nodes": [], "links": []}}
    with pytest.raises(WorkflowError) as err:
        convert_workflow(workflow, registry)
    assert err.value.to_response()["node_errors"]["70"]["errors"][0]["type"] == "unsupported_group_node"


def test_a_widget_promoted_onto_a_subgraph_instance_feeds_its_inner_input(registry):
    workflow = load("subgraph")
    definition = workflow["definitions"]["subgraphs"][0]
    definition["inputs"].append({"id": "a4", "name": "seed", "type": "INT", "linkIds": [105]})
    definition["links"].append({"id": 105, "origin_id": -10, "origin_slot": 3, "target_id": 3, "target_slot": 4,
                                "type": "INT"})
    sampler = next(n for n in definition["nodes"] if n["id"] == 3)
    next(s for s in sampler["inputs"] if s["name"] == "seed")["link"] = 105
    instance = next(n for n in workflow["nodes"] if n["id"] == 40)
    instance["inputs"].append({"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": None})
    instance["widgets_values"] = [777]
    prompt = convert_workflow(workflow, registry)
    assert prompt["40:3"]["inputs"]["seed"] == 777
    assert set(prompt) == {"4", "5", "40:3", "40:6", "40:7", "8", "9"}
    instance["widgets_values"] = []  # no promoted value stored: the inner widget keeps its own
    assert convert_workflow(workflow, registry)["40:3"]["inputs"]["seed"] == 156680208700286
