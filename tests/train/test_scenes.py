"""The built-in model's dataset: captions, the held-out split and the renderer."""

import numpy as np

from train.scenes import (
    COLOURS,
    PALETTE,
    POSITIONS,
    SHAPES,
    SIZES,
    Combo,
    Scene,
    all_combos,
    is_held_out,
    render,
    render_alpha,
    sample_scene,
    split_combos,
)


def test_caption_names_every_choice_in_the_grammar_order():
    combo = Combo("small", "red", "star", "top left", "blue")
    assert combo.caption() == "a small red star in the top left on a blue background"


def test_caption_uses_an_before_vowels_and_drops_optional_parts():
    combo = Combo("large", "orange", "ring", "center", "white")
    assert combo.caption(with_size=False) == "an orange ring in the center on a white background"
    assert Combo("medium", "red", "circle", "left", "orange").caption(with_position=False) == (
        "a medium red circle on an orange background"
    )
    assert combo.caption(with_size=False, with_position=False, with_background=False) == "an orange ring"


def test_combos_cover_every_choice_and_never_match_shape_and_background_colour():
    combos = all_combos()
    assert len(combos) == len(SIZES) * len(COLOURS) * len(SHAPES) * len(POSITIONS) * (len(COLOURS) - 1)
    assert all(c.colour != c.background for c in combos)


def test_held_out_split_is_small_disjoint_and_stable():
    train, held = split_combos("train"), split_combos("held_out")
    assert not set(train) & set(held)
    assert len(train) + len(held) == len(all_combos())
    assert 0.03 < len(held) / len(all_combos()) < 0.05
    assert [is_held_out(c) for c in held] == [True] * len(held)


def test_every_part_of_a_held_out_combo_is_seen_in_training():
    train = split_combos("train")
    seen_pairs = {(c.colour, c.shape) for c in train} | {(c.shape, c.position) for c in train}
    seen_pairs |= {(c.colour, c.background) for c in train}
    for c in split_combos("held_out"):
        assert {(c.colour, c.shape), (c.shape, c.position), (c.colour, c.background)} <= seen_pairs


def test_sampled_scenes_are_seeded():
    combos = split_combos("train")
    a = [sample_scene(np.random.default_rng(3), combos) for _ in range(5)]
    b = [sample_scene(np.random.default_rng(3), combos) for _ in range(5)]
    assert a == b


def test_render_paints_background_border_and_foreground_centre():
    scene = Scene(Combo("large", "yellow", "square", "center", "purple"), extent=0.5, cx=0.5, cy=0.5)
    image = render(scene, 64)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert tuple(image[0, 0]) == PALETTE["purple"]
    assert tuple(image[32, 32]) == PALETTE["yellow"]


def test_ring_has_a_hole_and_circle_area_matches_its_extent():
    circle = Scene(Combo("large", "red", "circle", "center", "blue"), extent=0.5, cx=0.5, cy=0.5)
    ring = Scene(Combo("large", "red", "ring", "center", "blue"), extent=0.5, cx=0.5, cy=0.5)
    alpha = render_alpha(circle, 128)
    assert abs(alpha.sum() / 128**2 - np.pi * 0.25**2) < 0.005
    assert render_alpha(ring, 128)[64, 64] == 0.0 and alpha[64, 64] == 1.0
