"""Canny edges: a hand-made image gives edges exactly on its boundaries, the thresholds decide which contrasts
count, and the result equals kornia's canny (what ComfyUI's Canny node calls) pixel for pixel."""

from __future__ import annotations

import pytest
import torch

from diffusion.canny import CannyError, canny


def _square(level: float, size: int = 48) -> torch.Tensor:
    """[1, 3, size, size]: black with a grey (level) square from pixel 16 to 31."""
    image = torch.zeros(1, 3, size, size)
    image[..., 16:32, 16:32] = level
    return image


def test_a_white_square_gives_a_closed_outline_on_its_boundary_and_nothing_else():
    _, edges = canny(_square(1.0), 0.4, 0.8)
    edges = edges[0, 0]
    assert set(edges.unique().tolist()) == {0.0, 1.0}
    rows, cols = torch.nonzero(edges, as_tuple=True)
    # One pixel wide, on the step between pixel 15 and 16 (the left/upper side of a tie is kept) or 31 and 32.
    assert set(rows.tolist()) <= {15, 16, 31, 32} | set(range(15, 33))
    assert int(rows.min()) in (15, 16) and int(rows.max()) in (31, 32)
    assert int(cols.min()) in (15, 16) and int(cols.max()) in (31, 32)
    assert edges[20:28, 20:28].sum() == 0 and edges[:10].sum() == 0 and edges[:, 40:].sum() == 0
    for line in range(18, 30):  # every row and column through the square crosses the outline twice
        assert edges[line].sum() == 2 and edges[:, line].sum() == 2


def test_thresholds_decide_which_contrast_is_an_edge():
    faint = _square(0.25)  # a 0.25 step: Sobel magnitude about 0.65 after the blur
    assert canny(faint, 0.4, 0.8)[1].sum() == 0  # weak everywhere, never strong: no edge survives hysteresis
    assert canny(faint, 0.1, 0.5)[1].sum() > 40
    strong = _square(1.0)
    assert canny(strong, 0.4, 0.8)[1].sum() == canny(strong, 0.1, 0.5)[1].sum()  # a sharp step passes both


def test_weak_edges_connected_to_strong_ones_are_kept():
    # A horizontal step whose contrast fades from 1.0 (left) to 0.1 (right): one continuous edge line whose
    # magnitude falls from about 2.6 to 0.26.
    image = torch.zeros(1, 1, 40, 60)
    image[..., 20:, :] = torch.linspace(1.0, 0.1, 60)
    _, edges = canny(image, 0.4, 1.5)
    line = edges[0, 0, 18:22].amax(dim=0)  # (60,): is there an edge pixel in this column
    step = torch.linspace(1.0, 0.1, 60) * 2.59  # about each column's magnitude
    assert bool(line[step > 0.45].all())  # weak columns (0.4 < magnitude < 1.5) too: connected to the strong ones
    assert int((step > 1.5).sum()) < 30 < int(line.sum())
    assert line[step < 0.35].sum() == 0
    assert edges[0, 0, :15].sum() == 0 and edges[0, 0, 25:].sum() == 0
    _, faint = canny(image * 0.5, 0.4, 1.5)  # the same line never reaching the high threshold
    assert faint.sum() == 0


def test_equals_kornia_pixel_for_pixel():
    kornia = pytest.importorskip("kornia")
    gen = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(2, 3, 9, 12, generator=gen), size=(45, 61), mode="bilinear")
    for image in (torch.rand(2, 3, 33, 47, generator=gen), smooth, _square(0.7)):
        for low, high in ((0.4, 0.8), (0.1, 0.2), (0.05, 0.9)):
            magnitude, edges = canny(image, low, high)
            ref_magnitude, ref_edges = kornia.filters.canny(image, low, high)
            assert torch.equal(edges, ref_edges), (low, high)
            torch.testing.assert_close(magnitude, ref_magnitude, atol=1e-5, rtol=1e-5)


def test_bad_input_is_refused():
    with pytest.raises(CannyError, match="low_threshold <= high_threshold"):
        canny(_square(1.0), 0.8, 0.4)
    with pytest.raises(CannyError, match="1 or 3"):
        canny(torch.zeros(1, 4, 8, 8), 0.4, 0.8)
