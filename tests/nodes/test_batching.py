"""Batch and resize nodes with v3 dynamic inputs (nodes/batching.py, nodes/resize_image_mask.py): joining batches,
rebatching lists, the eight resize rules, and prompts with dotted input keys through the real validator and
executor."""

import functools

import pytest
import torch

from nodes import batching, image, resize_image_mask
from nodes.batching import BatchImagesNode, BatchLatentsNode, BatchMasksNode, RebatchImages, RebatchLatents
from nodes.context import RunContext
from nodes.registry import Registry
from nodes.resize_image_mask import ResizeImageMaskNode
from nodes.services import Services
from nodes.types import Latent
from server.engine.cache import OutputCache
from server.engine.executor import Executor
from server.engine.graph import PromptError, validate_prompt
from tests.nodes.test_image import TmpFolders, make_ctx, run

RESIZE_SPEC = resize_image_mask.NODES[0]


def test_batch_images_pads_channels_and_resizes_to_the_first(tmp_path):
    first, second = torch.zeros(2, 4, 6, 3), torch.ones(1, 2, 3, 4)
    out = run(BatchImagesNode, make_ctx(tmp_path), **{"images.image0": first, "images.image1": second}).values[0]
    assert out.shape == (3, 4, 6, 4)
    assert torch.all(out[:2, ..., 3] == 1) and torch.allclose(out[2], torch.ones(4, 6, 4))


def test_batch_masks_and_latents_take_the_slots_in_order_with_gaps(tmp_path):
    ctx = make_ctx(tmp_path)
    masks = run(BatchMasksNode, ctx, **{"masks.mask3": torch.ones(1, 2, 2), "masks.mask0": torch.zeros(4, 4)}).values[0]
    assert masks.shape == (2, 4, 4) and torch.all(masks[0] == 0) and torch.allclose(masks[1], torch.ones(4, 4))
    latents = run(BatchLatentsNode, ctx, **{"latents.latent0": Latent(torch.zeros(2, 4, 2, 2), batch_index=(4, 5)),
                                         "latents.latent1": Latent(torch.ones(1, 4, 4, 4))}).values[0]
    assert latents.samples.shape == (3, 4, 2, 2) and latents.batch_index == (4, 5, 0)


def test_batch_nodes_serve_comfyuis_autogrow_schema():
    spec = batching.NODES[0]
    info = spec.info(lambda declared: None)
    assert info["input"] == {"required": {"images": ["COMFY_AUTOGROW_V3", {"template": {
        "input": {"required": {"image": ["IMAGE", {}]}}, "prefix": "image", "min": 2, "max": 50}}]}}
    assert info["input_order"] == {"required": ["images"]}
    names = [declared.name for declared in spec.inputs]
    assert names[:3] == ["images.image0", "images.image1", "images.image2"] and len(names) == 50
    assert [declared.optional for declared in spec.inputs[:3]] == [False, False, True]


def test_rebatch_images_recuts_the_list(tmp_path):
    images = [torch.full((3, 2, 2, 3), 0.0), torch.full((2, 2, 2, 3), 1.0)]
    out = run(RebatchImages, make_ctx(tmp_path), images=images, batch_size=[2]).values[0]
    assert [batch.shape[0] for batch in out] == [2, 2, 1] and out[1][:, 0, 0, 0].tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="different sizes"):
        run(RebatchImages, make_ctx(tmp_path), images=[torch.zeros(1, 2, 2, 3), torch.zeros(1, 3, 3, 3)],
            batch_size=[2])


def test_rebatch_latents_keeps_indices_flushes_on_size_change_and_drops_full_masks(tmp_path):
    masked = torch.zeros(2, 1, 16, 16)
    latents = [Latent(torch.zeros(2, 4, 2, 2), noise_mask=masked), Latent(torch.ones(2, 4, 2, 2)),
               Latent(torch.ones(1, 4, 3, 3))]
    out = run(RebatchLatents, make_ctx(tmp_path), latents=latents, batch_size=[3]).values[0]
    assert [(latent.samples.shape[0], latent.batch_index) for latent in out] == [(3, (0, 1, 2)), (1, (3,)),
                                                                                 (1, (4,))]
    assert out[0].noise_mask.shape == (3, 1, 16, 16) and out[0].noise_mask[:2].sum() == 0
    assert out[1].noise_mask is None and out[2].noise_mask is None  # all-ones masks are dropped


def resize(tmp_path, data, resize_type, method="nearest-exact", **options):
    given = {f"resize_type.{name}": value for name, value in options.items()}
    return run(ResizeImageMaskNode, make_ctx(tmp_path), input=data, resize_type=resize_type, scale_method=method,
               **given).values[0]


@pytest.mark.parametrize("resize_type, options, size", [
    ("scale by multiplier", {"multiplier": 1.5}, (15, 30)),
    ("scale dimensions", {"width": 12, "height": 0, "crop": "disabled"}, (6, 12)),
    ("scale dimensions", {"width": 8, "height": 8, "crop": "center"}, (8, 8)),
    ("scale longer dimension", {"longer_size": 40}, (20, 40)),
    ("scale shorter dimension", {"shorter_size": 5}, (5, 10)),
    ("scale width", {"width": 4}, (2, 4)),
    ("scale height", {"height": 4}, (4, 8)),
    ("scale total pixels", {"megapixels": 0.0002}, (10, 20)),  # int(209.7) = 209 px: sqrt(209/200) · 10 -> 10
])
def test_resize_image_mask_rules_for_images_and_masks(tmp_path, resize_type, options, size):
    image = torch.rand(2, 10, 20, 3)
    out = resize(tmp_path, image, resize_type, **options)
    assert out.shape == (2, *size, 3)
    assert resize(tmp_path, image[..., 0], resize_type, **options).shape == (2, *size)


def test_resize_image_mask_matches_another_size_and_keeps_zero_dimensions(tmp_path):
    image = torch.rand(1, 10, 20, 3)
    assert resize(tmp_path, image, "match size", match=torch.zeros(1, 3, 7), crop="center").shape == (1, 3, 7, 3)
    assert resize(tmp_path, image, "scale dimensions", width=0, height=0, crop="disabled") is image


def test_resize_image_mask_validation_requires_the_chosen_options_inputs():
    registry = Registry(list_files=lambda files: ["a.png"])
    registry.add_all([RESIZE_SPEC, *image.NODES])
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
              "2": {"class_type": "ResizeImageMaskNode",
                    "inputs": {"input": ["1", 0], "resize_type": "scale by multiplier", "resize_type.width": 10,
                               "scale_method": "area"}}}
    # (the output is a MatchType: until link checks treat it as a wildcard, the prompt ends at the resize node)
    with pytest.raises(PromptError) as failure:
        validate_prompt(prompt, registry, partial_execution_targets=["2"])
    assert "resize_type.multiplier" in str(failure.value.node_errors["2"])
    prompt["2"]["inputs"]["resize_type.multiplier"] = 0.5
    assert validate_prompt(prompt, registry, partial_execution_targets=["2"]).order == ("1", "2")


def test_a_prompt_with_autogrow_keys_validates_and_runs(tmp_path):
    registry = Registry()
    registry.add_all([*batching.NODES, *image.NODES])
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 4, "batch_size": 1, "color": 0xFF0000}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 2, "height": 2, "batch_size": 2, "color": 0}},
        "3": {"class_type": "BatchImagesNode", "inputs": {"images.image0": ["1", 0], "images.image1": ["2", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "batch"}},
    }
    executor = Executor(registry, OutputCache(), functools.partial(RunContext,
                                                                   services=Services(folders=TmpFolders(tmp_path))))
    outcome = executor.execute(validate_prompt(prompt, registry), prompt_id="p")
    assert outcome.status == "success", outcome.error
    assert len(outcome.outputs["4"]["images"]) == 3
    missing = {**prompt, "3": {"class_type": "BatchImagesNode", "inputs": {"images.image0": ["1", 0]}}}
    with pytest.raises(PromptError) as failure:
        validate_prompt(missing, registry)
    assert "images.image1" in str(failure.value.node_errors["3"])
