"""The optional LoRA's style: "huge" shapes and the judge that tells them from the base model's sizes."""

import numpy as np

from train.lora_style import is_huge, style_caption, style_scene
from train.scenes import Combo, Scene, render, sample_scene, split_combos


def test_style_caption_names_the_new_size_and_drops_the_position():
    combo = Combo("small", "orange", "cross", "top left", "white")
    assert style_caption(combo) == "a huge orange cross on a white background"


def test_huge_renders_are_judged_huge_and_every_base_size_is_not():
    rng = np.random.default_rng(2)
    combos = split_combos("train")
    base = [sample_scene(rng, combos) for _ in range(120)]
    huge = [style_scene(rng, s.combo) for s in base]
    assert all(is_huge(render(s, 64)) for s in huge)
    assert not any(is_huge(render(s, 64)) for s in base)


def test_a_flat_image_is_not_huge():
    scene = Scene(Combo("large", "red", "circle", "center", "blue"), extent=0.0, cx=0.5, cy=0.5)
    assert not is_huge(render(scene, 64))
