"""ComfyUI-style classes adapted into NodeSpecs: schema, validation, calls, conversions at the boundary."""

import asyncio
import math

import pytest
import torch

from nodes.context import RunContext
from nodes.inputs import InputError
from nodes.legacy import (LegacyNodeError, adapt_legacy_node, from_comfy_conditioning, from_comfy_latent,
                          to_comfy_conditioning, to_comfy_latent)
from nodes.registry import Registry
from nodes.types import Area, CondEntry, Conditioning, Latent


class Blend:
    """A typical V1 node exercising every declaration form."""

    created = 0

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",),
                             "factor": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05,
                                                  "round": False}),
                             "steps": ("INT", {"default": 4, "min": 1, "max": 8}),
                             "mode": (["multiply", "screen"],),
                             "quality": ("COMBO", {"options": ["low", "high"], "default": "high"}),
                             "size": ([256, 512, 1024],),
                             "label": ("STRING", {"default": "x", "multiline": True}),
                             "flip": ("BOOLEAN", {"default": False})},
                "optional": {"mask": ("MASK", {"lazy": True})},
                "hidden": {"prompt": "PROMPT", "unique_id": "UNIQUE_ID", "token": "AUTH_TOKEN_COMFY_ORG"}}

    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "info")
    OUTPUT_IS_LIST = (False, True)
    OUTPUT_TOOLTIPS = ("the blend", "")
    FUNCTION = "blend"
    CATEGORY = "test/blend"
    DESCRIPTION = "Blends."
    OUTPUT_NODE = False

    def __init__(self):
        type(self).created += 1
        self.calls = 0

    def blend(self, image, factor, steps, mode, quality, size, label, flip, mask=None, prompt=None, unique_id=None,
              token=None):
        self.calls += 1  # instance state: must not leak into the next call
        return (image * factor, [f"{mode}:{unique_id}:{self.calls}:{sorted(prompt or {})}:{token}"])

    def check_lazy_status(self, image, factor, mask=None, **kwargs):
        return ["mask"] if factor > 0.5 and mask is None else []

    @classmethod
    def VALIDATE_INPUTS(cls, steps):
        return True if steps != 7 else "seven is not allowed"


def ctx(node_id="5", hidden=None):
    return RunContext(node_id=node_id, prompt_id="p", services=None, hidden=hidden or {})


def blend_inputs(**changes):
    return {"image": torch.ones(1, 2, 2, 3), "factor": 0.5, "steps": 4, "mode": "screen", "quality": "low",
            "size": 512, "label": "", "flip": False, **changes}


def test_object_info_serves_input_types_verbatim_with_the_rest_derived():
    registry = Registry()
    registry.add(adapt_legacy_node("Blend", Blend, display_name="Blend Images", python_module="custom_nodes.x"),
                 source="x")
    info = registry.object_info()["Blend"]
    assert info["input"] == Blend.INPUT_TYPES()
    assert info["input_order"] == {"required": ["image", "factor", "steps", "mode", "quality", "size", "label",
                                                "flip"], "optional": ["mask"],
                                   "hidden": ["prompt", "unique_id", "token"]}
    assert (info["output"], info["output_name"], info["output_is_list"]) == (["IMAGE", "STRING"],
                                                                             ["image", "info"], [False, True])
    assert info["output_tooltips"] == ["the blend", ""]
    assert (info["display_name"], info["category"], info["description"], info["python_module"]) == \
        ("Blend Images", "test/blend", "Blends.", "custom_nodes.x")


def test_declarations_validate_literals_like_comfyui():
    spec = adapt_legacy_node("Blend", Blend)
    registry = Registry()
    assert spec.input("steps").coerce("3") == 3
    with pytest.raises(InputError) as err:
        spec.input("steps").coerce(9)
    assert err.value.kind == "value_bigger_than_max"
    assert spec.input("factor").coerce(0.25) == 0.25
    assert spec.input("image").type_name == "IMAGE" and not spec.input("image").is_widget
    assert spec.input("mask").optional and spec.input("mask").lazy
    assert registry.choices(spec.input("quality")) == ["low", "high"]
    assert spec.input("mode").coerce("screen", registry.choices(spec.input("mode"))) == "screen"
    assert spec.input("size").coerce(512, registry.choices(spec.input("size"))) == 512  # non-string choices
    with pytest.raises(InputError) as err:
        spec.input("size").coerce(True, registry.choices(spec.input("size")))
    assert err.value.kind == "value_not_in_list"
    assert spec.validate({"steps": 7}) == "seven is not allowed"
    assert spec.validate({"steps": 4, "factor": 0.1}) is None  # only the arguments VALIDATE_INPUTS names
    assert spec.hidden == {"prompt": "PROMPT", "unique_id": "UNIQUE_ID"}


def test_each_call_gets_a_fresh_instance_and_the_hidden_inputs():
    spec = adapt_legacy_node("Blend", Blend)
    before = Blend.created
    context = ctx(hidden={"PROMPT": {"5": {}, "2": {}}})
    first = spec.call(context, blend_inputs())
    second = spec.call(context, blend_inputs())
    assert Blend.created == before + 2
    assert torch.equal(first.values[0], torch.full((1, 2, 2, 3), 0.5))
    assert first.values[1] == ["screen:5:1:['2', '5']:None"] == second.values[1]  # no state kept between calls


def test_check_lazy_status_is_called_on_an_instance_with_missing_lazy_inputs_as_none():
    spec = adapt_legacy_node("Blend", Blend)
    assert spec.check_lazy(ctx(), {"image": 1, "factor": 0.9}) == ["mask"]
    assert spec.check_lazy(ctx(), {"image": 1, "factor": 0.9, "mask": torch.zeros(1)}) == []
    assert spec.check_lazy(ctx(), {"image": 1, "factor": 0.1}) == []


class Counter:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"path": ("STRING", {"default": ""})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "count"

    def count(self, path):
        return (len(path),)

    @classmethod
    def IS_CHANGED(cls, path):
        return float("nan") if path == "always" else f"hash-of-{path}"


def test_is_changed_becomes_the_fingerprint_and_nan_means_always_rerun():
    spec = adapt_legacy_node("Counter", Counter)
    assert spec.fingerprint(ctx(), {"path": "a"}) == spec.fingerprint(ctx(), {"path": "a"})
    assert spec.fingerprint(ctx(), {"path": "a"}) != spec.fingerprint(ctx(), {"path": "b"})
    assert math.isnan(spec.fingerprint(ctx(), {"path": "always"}))  # the executor's "always re-run" signal
    assert spec.category == "sd"  # ComfyUI's default category


class Noisy(Counter):
    NOT_IDEMPOTENT = True
    IS_CHANGED = None


def test_not_idempotent_nodes_are_keyed_by_their_node_id():
    spec = adapt_legacy_node("Noisy", Noisy)
    assert spec.fingerprint(ctx("1"), {"path": "a"}) != spec.fingerprint(ctx("2"), {"path": "a"})
    assert spec.fingerprint(ctx("1"), {"path": "a"}) == spec.fingerprint(ctx("1"), {"path": "a"})


class LatentAndCond:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "conditioning": ("CONDITIONING",), "anything": ("*",)}}

    RETURN_TYPES = ("LATENT", "CONDITIONING", "STRING")
    FUNCTION = "go"

    def go(self, samples, conditioning, anything):
        assert isinstance(samples, dict) and isinstance(conditioning, list)
        out = dict(samples)
        out["samples"] = samples["samples"] + 1
        out["batch_index"] = [3, 4]
        changed = []
        for tensor, options in conditioning:
            options = options.copy()
            options["strength"] = 0.5
            options["my_key"] = "kept"
            changed.append([tensor, options])
        return (out, changed, type(anything).__name__)


def test_latent_and_conditioning_cross_the_boundary_in_comfyui_shapes_and_come_back_typed():
    spec = adapt_legacy_node("LatentAndCond", LatentAndCond)
    latent = Latent(samples=torch.zeros(2, 4, 8, 8), noise_mask=torch.ones(1, 1, 64, 64))
    cond = Conditioning((CondEntry(cross_attn=torch.ones(1, 77, 8), pooled=torch.ones(1, 4)),))
    result = spec.call(ctx(), {"samples": latent, "conditioning": cond, "anything": latent})
    out_latent, out_cond, anything_type = result.values
    assert isinstance(out_latent, Latent) and torch.equal(out_latent.samples, torch.ones(2, 4, 8, 8))
    assert out_latent.noise_mask is latent.noise_mask and out_latent.batch_index == (3, 4)
    assert torch.equal(latent.samples, torch.zeros(2, 4, 8, 8))  # the input was not modified
    assert isinstance(out_cond, Conditioning) and out_cond.entries[0].strength == 0.5
    assert out_cond.entries[0].pooled is cond.entries[0].pooled and out_cond.entries[0].extra == {"my_key": "kept"}
    assert anything_type == "dict"  # a wildcard input also receives ComfyUI's shape


def test_conditioning_round_trips_through_comfyui_shape():
    entry = CondEntry(cross_attn=torch.ones(1, 77, 8), pooled=None, area=Area(8, 16, 0, 4), strength=0.7,
                      mask=torch.ones(1, 8, 8), mask_strength=0.3, set_area_to_bounds=True, start_percent=0.2,
                      end_percent=0.9, extra={"control": "c"})
    comfy = to_comfy_conditioning(Conditioning((entry,)))
    assert comfy[0][1]["area"] == (8, 16, 0, 4) and comfy[0][1]["control"] == "c"
    back = from_comfy_conditioning(comfy).entries[0]
    assert (back.area, back.strength, back.mask_strength, back.set_area_to_bounds, back.start_percent,
            back.end_percent, dict(back.extra)) == (entry.area, 0.7, 0.3, True, 0.2, 0.9, {"control": "c"})
    percent = Area(0.5, 0.5, 0.0, 0.5, unit="percent")
    assert to_comfy_conditioning(Conditioning((entry.replace(area=percent),)))[0][1]["area"] == \
        ("percentage", 0.5, 0.5, 0.0, 0.5)
    assert from_comfy_conditioning(
        [[torch.ones(1), {"area": ("percentage", 0.5, 0.5, 0.0, 0.5)}]]).entries[0].area == percent
    latent = Latent(samples=torch.ones(1, 4, 2, 2), batch_index=(1,))
    assert to_comfy_latent(latent) == {"samples": latent.samples, "batch_index": [1]}
    assert from_comfy_latent(to_comfy_latent(latent)).batch_index == (1,)
    with pytest.raises(TypeError):
        from_comfy_latent({"not": "a latent"})


class WrongReturn:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "go"

    def go(self):
        return ("nope",)


class Expanding(WrongReturn):
    def go(self):
        return {"expand": {"5.0.0.1": {"class_type": "EmptyLatentImage", "inputs": {}}}, "result": (["5.0.0.1", 0],)}


class AsyncNode(WrongReturn):
    RETURN_TYPES = ("INT",)

    async def go(self):
        return (math.floor(2.5),)


def test_results_are_checked_and_async_functions_are_awaited():
    with pytest.raises(LegacyNodeError, match="LATENT dict"):
        adapt_legacy_node("WrongReturn", WrongReturn).call(ctx(), {})
    expanded = adapt_legacy_node("Expanding", Expanding).call(ctx(), {})  # links into the expansion stay links
    assert expanded.values == (["5.0.0.1", 0],) and list(expanded.expand) == ["5.0.0.1"]
    assert asyncio.run(adapt_legacy_node("AsyncNode", AsyncNode).call(ctx(), {})).values == (2,)


@pytest.mark.parametrize("function", ["missing", None])
def test_a_class_whose_function_names_no_method_is_listed_and_fails_when_run(function):
    cls = type("Odd", (), {"INPUT_TYPES": classmethod(lambda c: {"required": {}}), "RETURN_TYPES": ("INT",),
                           "FUNCTION": function})
    spec = adapt_legacy_node("Odd", cls)  # ComfyUI lists it in /object_info
    with pytest.raises(LegacyNodeError, match="FUNCTION"):
        spec.call(ctx(), {})


def test_fewer_values_than_outputs_are_filled_with_none_and_unknown_hidden_kinds_left_out():
    seen = {}

    class Short:
        RETURN_TYPES = ("INT", "STRING", "IMAGE")
        FUNCTION = "go"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}, "hidden": {"node": "UNIQUE_ID", "mystery": "NOT_A_COMFY_KIND"}}

        def go(self, **kwargs):
            seen.update(kwargs)
            return (1,)

    assert adapt_legacy_node("Short", Short).call(ctx("9"), {}).values == (1, None, None)
    assert seen == {"node": "9"}


@pytest.mark.parametrize("attributes, reason", [
    ({"FUNCTION": "go"}, "RETURN_TYPES"),
    ({"RETURN_TYPES": "INT", "FUNCTION": "go"}, "RETURN_TYPES must be a tuple"),
])
def test_malformed_classes_are_refused_with_the_reason(attributes, reason):
    cls = type("Bad", (), {"INPUT_TYPES": classmethod(lambda c: {"required": {}}), "go": lambda self: (1,),
                           **attributes})
    with pytest.raises(LegacyNodeError, match=reason):
        adapt_legacy_node("Bad", cls)
    broken_inputs = type("Bad", (), {"INPUT_TYPES": classmethod(lambda c: {"required": {"x": 5}}),
                                     "RETURN_TYPES": (), "FUNCTION": "go", "go": lambda self: ()})
    with pytest.raises(LegacyNodeError, match="'x'"):
        adapt_legacy_node("Bad", broken_inputs)
