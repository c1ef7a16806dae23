"""Latent nodes (nodes/latent_tools.py, nodes/latent_operations.py) on small latents: positions in pixels / 8,
values by hand, what is carried along (noise mask, batch index), and the error cases."""

import math

import pytest
import torch

from nodes.latent_operations import (LatentApplyOperation, LatentOperationSharpen, LatentOperationTonemapReinhard,
                                     ReinhardTonemap)
from nodes.latent_tools import (LatentAdd, LatentBatch, LatentBatchSeedBehavior, LatentBlend, LatentComposite,
                                LatentConcat, LatentCrop, LatentCut, LatentCutToBatch, LatentFlip, LatentInterpolate,
                                LatentMultiply, LatentRotate, LatentSubtract)
from nodes.types import Latent
from tests.nodes.test_image import make_ctx, run


def grid(height=2, width=3, channels=1, batch=1):
    return Latent(torch.arange(batch * channels * height * width, dtype=torch.float32).reshape(
        batch, channels, height, width))


def test_latent_composite_pastes_and_feathers_the_inner_sides(tmp_path):
    ctx = make_ctx(tmp_path)
    to, source = Latent(torch.zeros(1, 1, 5, 5)), Latent(torch.ones(1, 1, 3, 3))
    plain = run(LatentComposite, ctx, samples_to=to, samples_from=source, x=8, y=8, feather=0).values[0].samples
    assert plain[0, 0].sum() == 9 and torch.all(plain[0, 0, 1:4, 1:4] == 1)
    # feather 16 px = 2 latent px: each side inside samples_to ramps 0.5, 1
    soft = run(LatentComposite, ctx, samples_to=to, samples_from=source, x=8, y=8, feather=16).values[0].samples
    ramp = torch.tensor([0.5, 1.0, 0.5])
    assert torch.allclose(soft[0, 0, 1:4, 1:4], ramp[:, None] * ramp[None, :])
    edge = run(LatentComposite, ctx, samples_to=to, samples_from=source, x=0, y=0, feather=16).values[0].samples
    assert edge[0, 0, 0, 0] == 1 and edge[0, 0, 2, 2] == 0.25  # the sides on the border are not feathered
    assert torch.all(to.samples == 0)


def test_latent_blend_weights_samples1_by_the_factor(tmp_path):
    out = run(LatentBlend, make_ctx(tmp_path), samples1=Latent(torch.ones(1, 4, 2, 2)),
              samples2=Latent(torch.zeros(1, 4, 4, 4)), blend_factor=0.25).values[0]
    assert torch.allclose(out.samples, torch.full((1, 4, 2, 2), 0.25))


def test_add_subtract_multiply_resize_and_repeat_samples2(tmp_path):
    ctx = make_ctx(tmp_path)
    s1 = Latent(torch.full((2, 4, 4, 4), 3.0), batch_index=(5, 6))
    s2 = Latent(torch.ones(1, 4, 2, 2))
    added = run(LatentAdd, ctx, samples1=s1, samples2=s2).values[0]
    assert torch.allclose(added.samples, torch.full((2, 4, 4, 4), 4.0)) and added.batch_index == (5, 6)
    assert torch.allclose(run(LatentSubtract, ctx, samples1=s1, samples2=s2).values[0].samples, torch.full(
        (2, 4, 4, 4), 2.0))
    assert torch.all(run(LatentMultiply, ctx, samples=s1, multiplier=-0.5).values[0].samples == -1.5)
    with pytest.raises(ValueError, match="channels"):
        run(LatentAdd, ctx, samples1=s1, samples2=Latent(torch.ones(1, 16, 4, 4)))


def test_latent_interpolate_mixes_directions_and_lengths(tmp_path):
    s1 = Latent(torch.tensor([3.0, 4.0, 0.0, 0.0]).reshape(1, 4, 1, 1))
    s2 = Latent(torch.tensor([0.0, 0.0, 0.0, 2.0]).reshape(1, 4, 1, 1))
    ctx = make_ctx(tmp_path)
    out = run(LatentInterpolate, ctx, samples1=s1, samples2=s2, ratio=0.5).values[0].samples.flatten()
    direction = torch.tensor([0.3, 0.4, 0.0, 0.5]) / math.sqrt(0.5)
    assert torch.allclose(out, direction * 3.5, atol=1e-6)
    assert torch.allclose(run(LatentInterpolate, ctx, samples1=s1, samples2=s2, ratio=1.0).values[0].samples,
                          s1.samples, atol=1e-6)
    zero = run(LatentInterpolate, ctx, samples1=Latent(torch.zeros(1, 4, 1, 1)), samples2=s2,
               ratio=1.0).values[0].samples
    assert torch.all(zero == 0)  # 0/0 directions become 0


def test_latent_batch_appends_and_keeps_each_seeded_place(tmp_path):
    out = run(LatentBatch, make_ctx(tmp_path), samples1=Latent(torch.zeros(2, 4, 2, 2)),
              samples2=Latent(torch.ones(1, 4, 4, 4), batch_index=(7,))).values[0]
    assert out.samples.shape == (3, 4, 2, 2) and out.batch_index == (0, 1, 7)
    assert torch.allclose(out.samples[2], torch.ones(4, 2, 2))


def test_seed_behavior_fixed_repeats_the_first_index_and_random_drops_it(tmp_path):
    latent = Latent(torch.zeros(3, 4, 2, 2), batch_index=(4, 5, 6))
    ctx = make_ctx(tmp_path)
    assert run(LatentBatchSeedBehavior, ctx, samples=latent, seed_behavior="fixed").values[0].batch_index == (4,) * 3
    assert run(LatentBatchSeedBehavior, ctx, samples=Latent(torch.zeros(2, 4, 2, 2)),
               seed_behavior="fixed").values[0].batch_index == (0, 0)
    assert run(LatentBatchSeedBehavior, ctx, samples=latent, seed_behavior="random").values[0].batch_index is None


def test_latent_crop_divides_by_8_and_keeps_8_latent_pixels(tmp_path):
    latent = grid(height=10, width=10)
    ctx = make_ctx(tmp_path)
    out = run(LatentCrop, ctx, samples=latent, width=64, height=64, x=8, y=16).values[0].samples
    assert out.shape == (1, 1, 8, 8) and out[0, 0, 0, 0] == 21  # row 2, column 1
    far = run(LatentCrop, ctx, samples=latent, width=64, height=64, x=800, y=800).values[0].samples
    assert far.shape == (1, 1, 8, 8) and far[0, 0, 0, 0] == 22  # clamped to 10 - 8


def test_latent_cut_counts_from_either_end(tmp_path):
    latent = grid(height=2, width=5)
    ctx = make_ctx(tmp_path)
    assert run(LatentCut, ctx, samples=latent, dim="x", index=-2, amount=5).values[0].samples[0, 0].tolist() == \
        [[3, 4], [8, 9]]
    assert run(LatentCut, ctx, samples=latent, dim="y", index=7, amount=3).values[0].samples[0, 0].tolist() == \
        [[5, 6, 7, 8, 9]]
    # "t" on a 4-D latent is the channel axis, as in ComfyUI
    assert run(LatentCut, ctx, samples=grid(channels=4), dim="t", index=1, amount=2).values[0].samples.shape == \
        (1, 2, 2, 3)


def test_latent_cut_to_batch_stacks_slices_and_drops_a_remainder(tmp_path):
    latent = grid(height=1, width=7)
    out = run(LatentCutToBatch, make_ctx(tmp_path), samples=latent, dim="x", slice_size=3).values[0].samples
    assert out.shape == (2, 1, 1, 3) and out[:, 0, 0].tolist() == [[0, 1, 2], [3, 4, 5]]
    same = run(LatentCutToBatch, make_ctx(tmp_path), samples=latent, dim="t", slice_size=2).values[0]
    assert same is latent  # "t" of a 4-D latent is the channel axis: nothing to cut


def test_latent_concat_joins_on_the_axis_in_the_order_given(tmp_path):
    a, b = Latent(torch.zeros(2, 4, 2, 2)), Latent(torch.ones(1, 4, 2, 3))
    ctx = make_ctx(tmp_path)
    out = run(LatentConcat, ctx, samples1=a, samples2=b, dim="-x").values[0].samples
    assert out.shape == (2, 4, 2, 5) and torch.all(out[..., :3] == 1) and torch.all(out[..., 3:] == 0)
    with pytest.raises(ValueError, match="dim 'y'"):
        run(LatentConcat, ctx, samples1=a, samples2=b, dim="y")


def test_latent_flip_and_rotate(tmp_path):
    latent = grid(height=2, width=3)  # [[0 1 2] [3 4 5]]
    ctx = make_ctx(tmp_path)
    assert run(LatentFlip, ctx, samples=latent, flip_method="x-axis: vertically").values[0].samples[0, 0].tolist() \
        == [[3, 4, 5], [0, 1, 2]]
    assert run(LatentFlip, ctx, samples=latent,
               flip_method="y-axis: horizontally").values[0].samples[0, 0].tolist() == [[2, 1, 0], [5, 4, 3]]
    assert run(LatentRotate, ctx, samples=latent, rotation="90 degrees").values[0].samples[0, 0].tolist() == \
        [[3, 0], [4, 1], [5, 2]]


def test_reinhard_tonemap_compresses_lengths_and_keeps_directions(tmp_path):
    samples = torch.randn(1, 4, 3, 3)
    operation = run(LatentOperationTonemapReinhard, make_ctx(tmp_path), multiplier=1.0).values[0]
    assert operation == ReinhardTonemap(1.0)
    out = run(LatentApplyOperation, make_ctx(tmp_path), samples=Latent(samples), operation=operation).values[0]
    lengths = torch.linalg.vector_norm(samples, dim=1)
    top = (lengths.std() * 5 + lengths.mean()).item()
    expected = lengths / (1 + lengths / top)
    assert torch.allclose(torch.linalg.vector_norm(out.samples, dim=1), expected, atol=1e-5)
    cosine = torch.nn.functional.cosine_similarity(out.samples, samples, dim=1)
    assert torch.allclose(cosine, torch.ones_like(cosine), atol=1e-5)


def test_latent_sharpen_keeps_a_uniform_latent_and_changes_detail(tmp_path):
    ctx = make_ctx(tmp_path)
    sharpen = run(LatentOperationSharpen, ctx, sharpen_radius=2, sigma=1.0, alpha=0.5).values[0]
    uniform = torch.tensor([1.0, -2.0, 0.5, 3.0]).reshape(1, 4, 1, 1).expand(2, 4, 6, 6)
    assert torch.allclose(sharpen(latent=uniform), uniform, atol=1e-5)
    detailed = torch.randn(1, 4, 6, 6)
    assert not torch.allclose(sharpen(latent=detailed), detailed, atol=1e-3)
    with pytest.raises(ValueError, match="sharpen_radius"):
        run(LatentOperationSharpen, ctx, sharpen_radius=9, sigma=1.0, alpha=0.1).values[0](latent=detailed)
