"""Classifier-free guidance over regional conditioning (ComfyUI calc_cond_batch / cfg_function semantics)."""

import pytest
import torch

from diffusion.guidance import GuidanceError, GuidedDenoiser, prepare_conditioning
from diffusion.model_sampling import Denoiser, DiscreteSampling
from nodes.types import Area, Conditioning
from tests.diffusion.tiny_models import TinyUNet, area, cond, entry, no_extra, prompt

SAMPLING = DiscreteSampling.linear()
SIGMA = torch.tensor([3.0])


def _latent(batch: int = 1, size: int = 16) -> torch.Tensor:
    return torch.randn(batch, 4, size, size, generator=torch.Generator().manual_seed(9)) * 3.0


def _guided(model, positive, negative, *, cfg, x, max_batch=None, extra_conds=no_extra):
    entries = prepare_conditioning(positive, negative, latent=x, sampling=SAMPLING, extra_conds=extra_conds)
    return GuidedDenoiser(denoiser=Denoiser(model, SAMPLING), entries=entries, cfg=cfg, max_batch=max_batch)


def _plain(model, x, context, sigma=SIGMA):
    """One whole-image prediction without guidance."""
    return Denoiser(model, SAMPLING)(x, sigma.expand(x.shape[0]), context=context.expand(x.shape[0], -1, -1))


def test_cfg_one_is_the_positive_prediction_without_a_negative_pass():
    model, x = TinyUNet(), _latent(batch=2)
    guided = _guided(model, cond(entry(1)), cond(entry(2)), cfg=1.0, x=x)
    out = guided(x, SIGMA.expand(2))
    assert [c["batch"] for c in model.calls] == [2]
    assert torch.equal(out, _plain(TinyUNet(), x, prompt(1)))


def test_cfg_extrapolates_the_denoised_predictions():
    model, x = TinyUNet(), _latent()
    out = _guided(model, cond(entry(1)), cond(entry(2)), cfg=7.5, x=x)(x, SIGMA)
    pos, neg = _plain(TinyUNet(), x, prompt(1)), _plain(TinyUNet(), x, prompt(2))
    torch.testing.assert_close(out, neg + (pos - neg) * 7.5, rtol=1e-5, atol=1e-5)


def test_positive_and_negative_share_one_model_call():
    model, x = TinyUNet(), _latent(batch=3)
    _guided(model, cond(entry(1)), cond(entry(2)), cfg=5.0, x=x)(x, SIGMA.expand(3))
    assert [c["batch"] for c in model.calls] == [6]


def test_prompts_of_different_lengths_are_batched_by_repeating_tokens():
    model, x = TinyUNet(), _latent()
    out = _guided(model, cond(entry(1, tokens=154)), cond(entry(2, tokens=77)), cfg=4.0, x=x)(x, SIGMA)
    assert len(model.calls) == 1 and model.calls[0]["context"][1] == 154
    pos, neg = _plain(TinyUNet(), x, prompt(1, 154)), _plain(TinyUNet(), x, prompt(2))
    torch.testing.assert_close(out, neg + (pos - neg) * 4.0, rtol=1e-5, atol=1e-5)


def test_max_batch_splits_model_calls():
    model, x = TinyUNet(), _latent()
    _guided(model, cond(entry(1), entry(3)), cond(entry(2)), cfg=5.0, x=x, max_batch=1)(x, SIGMA)
    assert [c["batch"] for c in model.calls] == [1, 1, 1]


def test_combined_entries_average_their_predictions():
    x = _latent()
    out = _guided(TinyUNet(), cond(entry(1), entry(3)), Conditioning(()), cfg=1.0, x=x)(x, SIGMA)
    expected = (_plain(TinyUNet(), x, prompt(1)) + _plain(TinyUNet(), x, prompt(3))) / 2
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)


def test_start_and_end_percent_switch_an_entry_on_and_off():
    x = _latent()
    late = entry(3, start_percent=0.5)  # only in the second half of the schedule (sigma below the midpoint)
    guided = _guided(TinyUNet(), cond(entry(1), late), Conditioning(()), cfg=1.0, x=x)
    high, low = torch.tensor([10.0]), torch.tensor([0.2])
    torch.testing.assert_close(guided(x, high), _plain(TinyUNet(), x, prompt(1), high))
    both = (_plain(TinyUNet(), x, prompt(1), low) + _plain(TinyUNet(), x, prompt(3), low)) / 2
    torch.testing.assert_close(guided(x, low), both, rtol=1e-6, atol=1e-6)


def test_a_masked_entry_only_weighs_in_where_its_mask_is():
    x = _latent()
    mask = torch.zeros(1, 16, 16)
    mask[:, :, :8] = 1.0  # left half
    out = _guided(TinyUNet(), cond(entry(1), entry(3, mask=mask)), Conditioning(()), cfg=1.0, x=x)(x, SIGMA)
    p1, p3 = _plain(TinyUNet(), x, prompt(1)), _plain(TinyUNet(), x, prompt(3))
    torch.testing.assert_close(out[..., 8:], p1[..., 8:])
    torch.testing.assert_close(out[..., :8], (p1[..., :8] + p3[..., :8]) / 2, rtol=1e-6, atol=1e-6)


def test_a_mask_at_image_resolution_is_resized_to_the_latent():
    x = _latent()
    mask = torch.zeros(1, 128, 128)
    mask[:, :, :64] = 1.0
    entries = prepare_conditioning(cond(entry(3, mask=mask)), Conditioning(()), latent=x, sampling=SAMPLING,
                                   extra_conds=no_extra)
    assert entries[0].mask.shape == (1, 16, 16)
    assert entries[0].mask[0, 0, :8].eq(1).all() and entries[0].mask[0, 0, 8:].eq(0).all()


def test_an_area_entry_sees_only_its_crop_and_is_feathered_at_inner_edges():
    x = _latent()
    a = area(8, 8, 4, 4)  # a centred 8x8 square; feather width min(8, 8 // 4) = 2 latent pixels
    out = _guided(TinyUNet(), cond(entry(1), entry(3, area=a)), Conditioning(()), cfg=1.0, x=x)(x, SIGMA)
    p1 = _plain(TinyUNet(), x, prompt(1))
    crop_pred = _plain(TinyUNet(), x[:, :, 4:12, 4:12], prompt(3))  # the model ran on the crop alone
    outside = torch.ones(16, 16, dtype=torch.bool)
    outside[4:12, 4:12] = False
    torch.testing.assert_close(out[..., outside], p1[..., outside])
    inner = (p1[..., 6:10, 6:10] + crop_pred[..., 2:6, 2:6]) / 2
    torch.testing.assert_close(out[..., 6:10, 6:10], inner, rtol=1e-5, atol=1e-6)
    # The area's first row has weight 1/2, its second 2/2.
    edge = (p1[..., 4, 6:10] + 0.5 * crop_pred[..., 0, 2:6]) / 1.5
    torch.testing.assert_close(out[..., 4, 6:10], edge, rtol=1e-5, atol=1e-6)


def test_changing_one_area_prompt_leaves_a_disjoint_area_untouched():
    x = _latent()
    left, right = area(16, 8, 0, 0), area(16, 8, 0, 8)
    first = _guided(TinyUNet(), cond(entry(1, area=left), entry(2, area=right)), cond(entry(5)), cfg=6.0, x=x)
    second = _guided(TinyUNet(), cond(entry(3, area=left), entry(2, area=right)), cond(entry(5)), cfg=6.0, x=x)
    a, b = first(x, SIGMA), second(x, SIGMA)
    assert torch.equal(a[..., 8:], b[..., 8:])
    assert not torch.allclose(a[..., :8], b[..., :8])


def test_percent_areas_resolve_to_latent_pixels():
    x = _latent(size=16)
    half = Area(height=0.5, width=0.25, y=0.5, x=0.0, unit="percent")
    entries = prepare_conditioning(cond(entry(1, area=half)), Conditioning(()), latent=x, sampling=SAMPLING,
                                   extra_conds=no_extra)
    got = entries[0].area
    assert (got.height, got.width, got.y, got.x) == (8, 4, 8, 0)


def test_set_area_to_bounds_crops_to_the_mask_box():
    x = _latent(size=32)
    mask = torch.zeros(1, 32, 32)
    mask[:, 10:14, 20:30] = 1.0
    entries = prepare_conditioning(cond(entry(1, mask=mask, set_area_to_bounds=True)), Conditioning(()), latent=x,
                                   sampling=SAMPLING, extra_conds=no_extra)
    got = entries[0].area
    assert (got.height, got.width, got.y, got.x) == (8, 10, 10, 20)  # height raised to the 8-pixel minimum


def test_an_area_entry_gets_a_negative_counterpart_over_the_same_area():
    x = _latent()
    a = area(8, 8, 0, 0)
    entries = prepare_conditioning(cond(entry(1), entry(3, area=a, strength=0.7)), cond(entry(5)), latent=x,
                                   sampling=SAMPLING, extra_conds=no_extra)
    assert [e.slot for e in entries] == ["cond", "cond", "uncond", "uncond"]
    extra = entries[-1]
    assert extra.area == entries[1].area and extra.strength == 0.7
    assert torch.equal(extra.model_inputs["context"], prompt(5))


def test_extra_conds_reach_the_model_repeated_to_the_batch():
    model, x = TinyUNet(), _latent(batch=2)
    seen = []

    def sdxl_like(entry, latent):
        seen.append(tuple(latent.shape))
        return {"y": torch.ones(1, 8)}

    _guided(model, cond(entry(1)), cond(entry(2)), cfg=3.0, x=x, extra_conds=sdxl_like)(x, SIGMA.expand(2))
    assert seen == [(2, 4, 16, 16)] * 2
    assert model.calls[0]["y"] == (4, 8)


def test_empty_positive_conditioning_is_an_error():
    with pytest.raises(GuidanceError):
        prepare_conditioning(Conditioning(()), cond(entry(1)), latent=_latent(), sampling=SAMPLING,
                             extra_conds=no_extra)


def test_guidance_does_not_mutate_its_input():
    x = _latent()
    before = x.clone()
    _guided(TinyUNet(), cond(entry(1, area=area(8, 8, 2, 2))), cond(entry(2)), cfg=3.0, x=x)(x, SIGMA)
    assert torch.equal(x, before)
