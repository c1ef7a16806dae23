"""The deterministic adherence judge: colours by nearest palette entry, shape by the committed classifier."""

import numpy as np
import pytest
from scipy import ndimage

from train.checker import accuracy, judge_batch
from train.scenes import PALETTE, SHAPES, Combo, Scene, render, sample_scene, split_combos
from train.shape_classifier import classify_masks, load_classifier, make_examples


@pytest.fixture(scope="module")
def classifier():
    return load_classifier()


@pytest.fixture(scope="module")
def held_out_scenes():
    rng = np.random.default_rng(11)
    combos = split_combos("held_out")
    return [sample_scene(rng, combos) for _ in range(60)]


@pytest.mark.parametrize("size", [64, 128])
def test_clean_renders_are_judged_right_on_every_attribute(classifier, held_out_scenes, size):
    images = [render(s, size) for s in held_out_scenes]
    acc = accuracy(judge_batch(images, classifier), [s.combo for s in held_out_scenes])
    assert acc == {"background": 1.0, "foreground": 1.0, "shape": 1.0, "position": 1.0, "size": 1.0}


def test_blurred_noisy_renders_are_still_judged_right(classifier, held_out_scenes):
    rng = np.random.default_rng(5)
    images = []
    for scene in held_out_scenes:
        blurred = ndimage.gaussian_filter(render(scene, 64).astype(np.float32), sigma=(0.8, 0.8, 0))
        images.append(np.clip(blurred + rng.normal(0, 6, blurred.shape), 0, 255).astype(np.uint8))
    acc = accuracy(judge_batch(images, classifier), [s.combo for s in held_out_scenes])
    assert acc["background"] == 1.0
    assert acc["foreground"] >= 0.95
    assert acc["shape"] >= 0.95


def test_a_flat_image_has_a_background_and_nothing_else(classifier):
    flat = np.full((128, 128, 3), PALETTE["green"], dtype=np.uint8)
    (judgement,) = judge_batch([flat], classifier)
    assert judgement.background == "green"
    assert judgement.foreground is None and judgement.shape is None


def test_wrong_colours_are_reported_as_wrong(classifier):
    asked = Combo("large", "red", "circle", "center", "blue")
    shown = Scene(Combo("large", "yellow", "circle", "center", "black"), extent=0.5, cx=0.5, cy=0.5)
    (judgement,) = judge_batch([render(shown, 128)], classifier)
    matches = judgement.matches(asked)
    assert not matches["background"] and not matches["foreground"]
    assert matches["shape"] and matches["position"] and matches["size"]


def test_committed_shape_classifier_names_fresh_degraded_masks(classifier):
    masks, labels = make_examples(seed=987, count=240)  # a seed the committed weights were not trained on
    predicted = classify_masks(classifier, masks)
    assert np.mean([p == SHAPES[label] for p, label in zip(predicted, labels)]) >= 0.97
