"""The node declaration -> NodeSpec -> /object_info derivation, and literal validation."""

import pytest

from nodes.inputs import Boolean, Combo, Files, Float, InputError, Int, Link, String, SEED_MAX
from nodes.registry import DuplicateNode, Node, Output, Registry, Result, spec_of


class Sampler(Node):
    """Samples things."""

    category = "sampling"
    display_name = "My Sampler"
    model = Link("MODEL", tooltip="the model")
    seed = Int(0, min=0, max=SEED_MAX, control_after_generate=True)
    cfg = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    sampler_name = Combo(["euler", "heun"])
    text = String("hi", multiline=True, dynamic_prompts=True)
    flag = Boolean(True, optional=True)
    outputs = (Output("LATENT"),)

    @classmethod
    def run(cls, ctx, model, seed, cfg, sampler_name, text, flag=True):
        return (seed + cfg,)


class Loader(Node):
    ckpt_name = Combo(Files("checkpoints"))
    outputs = (Output("MODEL"), Output("CLIP"))

    @classmethod
    def run(cls, ctx, ckpt_name):
        return Result(values=(ckpt_name, None), ui={"text": [ckpt_name]})


def test_object_info_entry_has_comfyui_shape_and_declaration_order():
    info = Registry().add(Sampler).info(lambda i: None)
    required = info["input"]["required"]
    assert list(required) == ["model", "seed", "cfg", "sampler_name", "text"]
    assert required["model"] == ["MODEL", {"tooltip": "the model"}]
    assert required["seed"] == ["INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True}]
    assert required["cfg"][1]["round"] == 0.01
    assert required["sampler_name"] == [["euler", "heun"]]
    assert required["text"] == ["STRING", {"default": "hi", "multiline": True, "dynamicPrompts": True}]
    assert info["input"]["optional"] == {"flag": ["BOOLEAN", {"default": True}]}
    assert info["input_order"] == {"required": list(required), "optional": ["flag"]}
    assert (info["name"], info["display_name"], info["category"]) == ("Sampler", "My Sampler", "sampling")
    assert info["description"] == "Samples things."
    assert info["output"] == ["LATENT"] and info["output_is_list"] == [False] and info["output_name"] == ["LATENT"]
    assert info["output_node"] is False


class Primitive(Node):
    """Developer notes, not the description."""

    description = ""
    v3_schema = True
    number = Int(None, min=-5, max=5)
    ratio = Float(None, min=0.0, max=1.0, step=0.1)
    text = String(None, multiline=False)
    flag = Boolean(None)
    mode = Combo(["a", "b"], default="b", tooltip="which")
    outputs = (Output("INT"), Output("FLOAT", tooltip="the ratio"))

    @classmethod
    def run(cls, ctx, number, ratio, text, flag, mode):
        return (number, ratio)


def test_only_declared_options_are_listed():
    required = Registry().add(Primitive).info(lambda i: None)["input"]["required"]
    # No default, no step unless declared (ComfyUI omits "step" on most INTs; the editor steps them by 1).
    assert required["number"] == ["INT", {"min": -5, "max": 5}]
    assert required["ratio"] == ["FLOAT", {"min": 0.0, "max": 1.0, "step": 0.1}]
    assert required["text"] == ["STRING", {"multiline": False}]
    assert required["flag"] == ["BOOLEAN"]
    # A missing value still reads as ComfyUI's editor starts the widget (saved workflows keep converting).
    assert (Primitive.number.default, Primitive.ratio.default, Primitive.text.default, Primitive.flag.default) == (
        0, 0.0, "", False)
    plain = Registry().add(Sampler).info(lambda i: None)["input"]["required"]
    assert "step" not in plain["seed"][1] and plain["cfg"][1]["step"] == 0.1


def test_v3_entries_use_comfyuis_v3_encoding():
    info = Registry().add(Primitive).info(lambda i: None)
    assert info["input"]["required"]["mode"] == ["COMBO", {"default": "b", "tooltip": "which", "multiselect": False,
                                                           "options": ["a", "b"]}]
    assert info["display_name"] is None  # none declared: ComfyUI's V3 entries show null
    assert info["description"] == ""  # declared empty: the docstring is not used
    assert info["output_tooltips"] == [None, "the ratio"]
    assert (info["output_matchtypes"], info["deprecated"], info["experimental"], info["api_node"]) == (
        None, False, False, False)
    assert list(info)[:7] == ["input", "input_order", "is_input_list", "output", "output_is_list", "output_name",
                              "output_tooltips"]
    v1 = Registry().add(Sampler).info(lambda i: None)
    assert "output_tooltips" not in v1 and "deprecated" not in v1 and v1["display_name"] == "My Sampler"


def test_output_tooltips_can_be_listed_as_comfyui_lists_them():
    class OneOutput(Node):
        outputs = (Output("MODEL", tooltip="the model"),)
        output_tooltips = ("the model", "the clip")

        @classmethod
        def run(cls, ctx):
            return (None,)

    assert Registry().add(OneOutput).info(lambda i: None)["output_tooltips"] == ["the model", "the clip"]


def test_file_combos_are_listed_through_the_registry_file_lister():
    registry = Registry(list_files=lambda files: [f"{files.folder}/a.safetensors"])
    registry.add(Loader)
    assert registry.object_info()["Loader"]["input"]["required"]["ckpt_name"] == [["checkpoints/a.safetensors"]]
    assert registry.object_info("Nope") == {}


def test_call_wraps_tuples_and_passes_results_through():
    registry = Registry()
    assert registry.add(Sampler).call(None, {"model": 1, "seed": 2, "cfg": 0.5, "sampler_name": "euler",
                                             "text": ""}).values == (2.5,)
    assert registry.add(Loader).call(None, {"ckpt_name": "x"}).ui == {"text": ["x"]}


def test_duplicate_names_are_refused_unless_replacing():
    registry = Registry()
    registry.add(Sampler)
    with pytest.raises(DuplicateNode):
        registry.add(Sampler, source="pack")
    registry.add(Sampler, source="pack", replace=True)
    assert registry.source("Sampler") == "pack"


def test_nodes_hold_no_state_and_cannot_be_instantiated():
    with pytest.raises(TypeError):
        Sampler()


@pytest.mark.parametrize("value, expected", [(3, 3), (3.0, 3), ("7", 7), (" 8 ", 8)])
def test_int_casts_whole_numbers(value, expected):
    assert spec_of(Sampler).input("seed").coerce(value) == expected


@pytest.mark.parametrize("value, kind", [(-1, "value_smaller_than_min"), (SEED_MAX + 1, "value_bigger_than_max"),
                                         (1.5, "invalid_input_type"), ("x", "invalid_input_type"),
                                         (True, "invalid_input_type"), (None, "invalid_input_type"),
                                         (float("nan"), "invalid_input_type"), ([1], "invalid_input_type")])
def test_int_rejects_bad_values_with_comfyui_error_kinds(value, kind):
    with pytest.raises(InputError) as err:
        spec_of(Sampler).input("seed").coerce(value)
    assert err.value.kind == kind and "seed" in err.value.details + err.value.message


def test_float_boolean_string_and_combo_coercion():
    spec = spec_of(Sampler)
    assert spec.input("cfg").coerce("2.5") == 2.5
    with pytest.raises(InputError):
        spec.input("cfg").coerce(float("inf"))
    assert spec.input("flag").coerce("false") is False and spec.input("flag").coerce(1) is True
    with pytest.raises(InputError):
        spec.input("flag").coerce("maybe")
    assert spec.input("text").coerce(12) == "12"
    with pytest.raises(InputError):
        spec.input("text").coerce({"a": 1})
    with pytest.raises(InputError) as err:
        spec.input("sampler_name").coerce("dpm")
    assert err.value.kind == "value_not_in_list"


def test_links_accept_matching_and_wildcard_types_only():
    model = spec_of(Sampler).input("model")
    assert model.accepts_type("MODEL") and model.accepts_type("*")
    assert not model.accepts_type("CLIP")
    with pytest.raises(InputError):
        model.coerce(5)
