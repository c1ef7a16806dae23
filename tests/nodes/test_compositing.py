"""Compositing nodes (nodes/compositing.py): pasting through masks at pixel or latent positions, alpha join/split,
and Porter-Duff operators against hand-computed values."""

import pytest
import torch

from nodes.compositing import (ImageCompositeMasked, JoinImageWithAlpha, LatentCompositeMasked,
                               PorterDuffImageComposite, SplitImageWithAlpha)
from nodes.types import Latent
from tests.nodes.test_image import make_ctx, run


def composite(tmp_path, destination, source, x, y, resize_source=False, mask=None):
    inputs = dict(destination=destination, source=source, x=x, y=y, resize_source=resize_source)
    if mask is not None:
        inputs["mask"] = mask
    return run(ImageCompositeMasked, make_ctx(tmp_path), **inputs).values[0]


def test_image_composite_pastes_at_the_position_and_cuts_at_the_border(tmp_path):
    destination, source = torch.zeros(1, 4, 4, 3), torch.ones(1, 2, 2, 3)
    out = composite(tmp_path, destination, source, 1, 2)
    assert out[0, :, :, 0].tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0]]
    corner = composite(tmp_path, destination, source, 3, 3)
    assert corner.sum() == 3 and corner[0, 3, 3, 0] == 1
    assert torch.all(destination == 0)
    assert torch.all(composite(tmp_path, destination, source, 40, 0) == 0)


def test_image_composite_weights_by_the_resized_mask_and_can_resize_the_source(tmp_path):
    destination, source = torch.zeros(2, 4, 4, 3), torch.ones(1, 2, 2, 3)
    half = composite(tmp_path, destination, source, 0, 0, mask=torch.full((8, 8), 0.5))
    assert torch.allclose(half[:, :2, :2], torch.full((2, 2, 2, 3), 0.5)) and torch.all(half[:, 2:] == 0)
    whole = composite(tmp_path, destination, source, 0, 0, resize_source=True)
    assert torch.all(whole == 1)


def test_image_composite_gives_an_rgb_source_the_destinations_alpha_channel(tmp_path):
    destination = torch.zeros(1, 2, 2, 4)
    out = composite(tmp_path, destination, torch.full((1, 1, 1, 3), 0.5), 0, 0)
    assert out.shape == (1, 2, 2, 4)
    assert out[0, 0, 0].tolist() == [0.5, 0.5, 0.5, 1.0] and out[0, 1, 1].tolist() == [0, 0, 0, 0]


def test_latent_composite_masked_positions_in_pixels_and_keeps_the_destinations_mask(tmp_path):
    noise_mask = torch.ones(1, 1, 4, 4)
    destination = Latent(torch.zeros(1, 4, 4, 4), noise_mask=noise_mask, batch_index=(3,))
    source = Latent(torch.ones(1, 4, 2, 2))
    out = run(LatentCompositeMasked, make_ctx(tmp_path), destination=destination, source=source, x=8, y=16,
              resize_source=False).values[0]
    assert out.samples[0, 0].tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0]]
    assert out.noise_mask is noise_mask and out.batch_index == (3,)
    assert torch.all(destination.samples == 0)


def test_join_image_with_alpha_inverts_and_resizes_the_mask(tmp_path):
    image = torch.full((2, 4, 4, 4), 0.3)
    out = run(JoinImageWithAlpha, make_ctx(tmp_path), image=image, alpha=torch.full((1, 2, 2), 0.25)).values[0]
    assert out.shape == (2, 4, 4, 4)
    assert torch.allclose(out[..., :3], torch.full((2, 4, 4, 3), 0.3)) and torch.allclose(
        out[..., 3], torch.full((2, 4, 4), 0.75))


def test_split_image_with_alpha_gives_colours_and_one_minus_alpha(tmp_path):
    rgba = torch.rand(2, 3, 3, 4)
    colours, mask = run(SplitImageWithAlpha, make_ctx(tmp_path), image=rgba).values
    assert torch.equal(colours, rgba[..., :3]) and torch.allclose(mask, 1 - rgba[..., 3])
    _, opaque = run(SplitImageWithAlpha, make_ctx(tmp_path), image=rgba[..., :3]).values
    assert torch.all(opaque == 0)


def porter_duff(tmp_path, mode, src=0.8, src_mask=0.5, dst=0.2, dst_mask=0.0, size=2):
    return run(PorterDuffImageComposite, make_ctx(tmp_path), source=torch.full((1, size, size, 3), src),
               source_alpha=torch.full((1, size, size), src_mask), destination=torch.full((1, 2, 2, 3), dst),
               destination_alpha=torch.full((1, 2, 2), dst_mask), mode=mode).values


def test_porter_duff_src_over_and_dst_by_hand(tmp_path):
    # source alpha 0.5 over an opaque destination: a = 0.5 + 0.5·1 = 1, colour = (0.8·0.5 + 0.5·0.2) / 1 = 0.5
    image, mask = porter_duff(tmp_path, "SRC_OVER")
    assert torch.allclose(image, torch.full((1, 2, 2, 3), 0.5)) and torch.allclose(mask, torch.zeros(1, 2, 2))
    image, mask = porter_duff(tmp_path, "DST")
    assert torch.allclose(image, torch.full((1, 2, 2, 3), 0.2)) and torch.all(mask == 0)
    image, mask = porter_duff(tmp_path, "CLEAR")
    assert torch.all(image == 0) and torch.all(mask == 1)
    # XOR of two opaque layers leaves nothing (alpha 0, colour set to 0)
    image, mask = porter_duff(tmp_path, "XOR", src_mask=0.0)
    assert torch.all(image == 0) and torch.all(mask == 1)


def test_porter_duff_resizes_the_source_to_the_destination(tmp_path):
    image, mask = porter_duff(tmp_path, "SRC", src_mask=0.0, size=5)
    assert image.shape == (1, 2, 2, 3) and torch.allclose(image, torch.full((1, 2, 2, 3), 0.8), atol=1e-5)


def test_porter_duff_needs_matching_channels(tmp_path):
    with pytest.raises(ValueError, match="channels"):
        run(PorterDuffImageComposite, make_ctx(tmp_path), source=torch.zeros(1, 2, 2, 4),
            source_alpha=torch.zeros(1, 2, 2), destination=torch.zeros(1, 2, 2, 3),
            destination_alpha=torch.zeros(1, 2, 2), mode="SRC_OVER")
