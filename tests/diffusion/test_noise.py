"""Seeded noise against ComfyUI's prepare_noise (tests/fixtures/comfyui_numerics/noise.json: ComfyUI 0.8.0,
``prepare_noise(zeros(shape), seed)`` on CPU float32: first 16 values per batch item, sum and std)."""

import json
from pathlib import Path

import pytest
import torch

from diffusion.noise import (
    SEED_MAX,
    BatchIndexError,
    BrownianNoiseSampler,
    SeedError,
    StepNoiseSampler,
    initial_noise,
)

FIXTURE = json.loads((Path(__file__).parents[1] / "fixtures" / "comfyui_numerics" / "noise.json").read_text())


def _case_id(case: dict) -> str:
    return f"{'x'.join(map(str, case['shape']))}-seed{case['seed']}"


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=_case_id)
def test_initial_noise_matches_comfyui(case):
    noise = initial_noise(case["shape"], case["seed"])
    assert noise.dtype == torch.float32 and noise.device.type == "cpu"
    assert list(noise.shape) == case["shape"]
    for item, expected in zip(noise, case["first16_per_batch_item"]):
        assert item.flatten()[:16].tolist() == expected  # bit-exact
    assert noise.double().sum().item() == pytest.approx(case["sum"], rel=1e-6)
    assert noise.double().std().item() == pytest.approx(case["std"], rel=1e-6)


def test_fixture_covers_batch_four_and_the_largest_seed():
    assert any(c["shape"][0] == 4 for c in FIXTURE["cases"])
    assert any(c["seed"] == SEED_MAX for c in FIXTURE["cases"])


def test_batch_index_reproduces_one_image_of_a_batch():
    batch = initial_noise([4, 4, 8, 8], 7)
    alone = initial_noise([1, 4, 8, 8], 7, batch_index=[2])
    assert torch.equal(alone[0], batch[2])


def test_batch_index_keeps_order_and_repeats():
    batch = initial_noise([4, 4, 8, 8], 7)
    picked = initial_noise([3, 4, 8, 8], 7, batch_index=[3, 0, 3])
    assert torch.equal(picked, torch.stack([batch[3], batch[0], batch[3]]))


def test_batch_index_must_match_the_batch():
    with pytest.raises(BatchIndexError):
        initial_noise([2, 4, 8, 8], 7, batch_index=[0])


def test_initial_noise_leaves_the_global_rng_alone():
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    initial_noise([1, 4, 8, 8], 99)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("seed", [-1, SEED_MAX + 1, 1.5])
def test_seed_out_of_range_is_an_error(seed):
    with pytest.raises(SeedError):
        initial_noise([1, 4, 8, 8], seed)


def test_step_noise_is_a_seed_plus_one_cpu_stream_one_draw_per_call():
    x = torch.zeros(1, 4, 4, 4)
    sampler = StepNoiseSampler(x, 5)
    first, second = sampler(torch.tensor(2.0), torch.tensor(1.0)), sampler(torch.tensor(1.0), torch.tensor(0.5))
    gen = torch.Generator().manual_seed(6)
    assert torch.equal(first, torch.randn(1, 4, 4, 4, generator=gen))
    assert torch.equal(second, torch.randn(1, 4, 4, 4, generator=gen))


def test_step_noise_at_the_largest_seed_wraps_instead_of_overflowing():
    noise = StepNoiseSampler(torch.zeros(1, 4, 2, 2), SEED_MAX)(torch.tensor(1.0), torch.tensor(0.5))
    assert torch.equal(noise, initial_noise([1, 4, 2, 2], 0))


def test_brownian_increments_are_unit_variance_and_reproducible():
    x = torch.zeros(1, 4, 32, 32)
    a = BrownianNoiseSampler(x, 0.03, 14.6, seed=3)
    b = BrownianNoiseSampler(x, 0.03, 14.6, seed=3)
    n1 = a(torch.tensor(14.6), torch.tensor(5.0))
    assert torch.equal(n1, b(torch.tensor(14.6), torch.tensor(5.0)))
    assert n1.std().item() == pytest.approx(1.0, abs=0.05)


def test_brownian_increments_add_up_along_one_path():
    # W(c) - W(a) = (W(c) - W(b)) + (W(b) - W(a)): the noise of one long step is the sum of its halves.
    x = torch.zeros(1, 2, 8, 8)
    tree = BrownianNoiseSampler(x, 0.1, 10.0, seed=11)
    a, b, c = torch.tensor(8.0), torch.tensor(3.0), torch.tensor(1.0)
    whole = tree(a, c) * (a - c).sqrt()
    halves = tree(a, b) * (a - b).sqrt() + tree(b, c) * (b - c).sqrt()
    torch.testing.assert_close(whole, halves, rtol=1e-4, atol=1e-5)
