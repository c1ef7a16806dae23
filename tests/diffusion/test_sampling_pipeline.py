"""One KSampler run end to end: noise scaling, guidance, inpainting, samplers (tiny UNet-like and analytic models)."""

import pytest
import torch

from diffusion.model_sampling import Denoiser, DiscreteSampling
from diffusion.noise import initial_noise
from diffusion.samplers import UnknownSamplerError, run_sampler
from diffusion.sampling_pipeline import SamplingInputError, prepare_denoise_mask, sample_latent
from diffusion.schedules import sampler_sigmas
from nodes.types import Conditioning
from tests.diffusion.tiny_models import AnalyticEps, TinyUNet, area, close_to_gaussian, cond, entry, no_extra, prompt

SAMPLING = DiscreteSampling.linear()
SHAPE = (1, 4, 16, 16)


def _run(*, model=None, latent=None, noise=None, sigmas=None, positive=None, negative=None, cfg=7.0,
         sampler_name="euler", seed=3, steps=6, denoise=1.0, **kw):
    latent = torch.zeros(SHAPE) if latent is None else latent
    return sample_latent(
        apply_model=TinyUNet() if model is None else model,
        sampling=SAMPLING,
        latent=latent,
        noise=initial_noise(latent.shape, seed) if noise is None else noise,
        sigmas=sampler_sigmas(SAMPLING, "karras", steps, denoise=denoise, sampler_name=sampler_name)
        if sigmas is None else sigmas,
        positive=cond(entry(1)) if positive is None else positive,
        negative=cond(entry(2)) if negative is None else negative,
        cfg=cfg, sampler_name=sampler_name, seed=seed, extra_conds=no_extra, **kw,
    )


@pytest.mark.parametrize("sampler_name", ["euler", "dpmpp_2m", "euler_ancestral", "dpmpp_sde", "uni_pc"])
def test_cfg_one_equals_sampling_the_positive_alone(sampler_name):
    sigmas = sampler_sigmas(SAMPLING, "karras", 5, sampler_name=sampler_name)
    noise = initial_noise(SHAPE, 3)
    out = _run(cfg=1.0, sampler_name=sampler_name, sigmas=sigmas, noise=noise)
    denoiser = Denoiser(TinyUNet(), SAMPLING)

    def positive_only(x, sigma):
        return denoiser(x, sigma, context=prompt(1))

    x = SAMPLING.noise_scaling(sigmas[0], noise, torch.zeros(SHAPE), max_denoise=True)
    assert torch.equal(out, run_sampler(sampler_name, positive_only, x, sigmas, seed=3))


def test_identical_prompts_make_cfg_irrelevant():
    same = cond(entry(1))
    low, high = _run(positive=same, negative=same, cfg=1.5), _run(positive=same, negative=same, cfg=12.0)
    torch.testing.assert_close(low, high, rtol=1e-5, atol=1e-5)


def test_txt2img_starts_from_noise_scaled_for_max_denoise():
    seen = []

    class Recording(TinyUNet):
        def __call__(self, x_in, t, **kw):
            seen.append((x_in, t))
            return super().__call__(x_in, t, **kw)

    noise = initial_noise(SHAPE, 3)
    _run(model=Recording(), noise=noise, cfg=1.0, steps=3)
    # The first model input is x / sqrt(σmax² + 1) with x = noise·sqrt(1 + σmax²): the noise itself.
    torch.testing.assert_close(seen[0][0], noise, rtol=1e-6, atol=1e-6)
    assert seen[0][1].tolist() == [999.0]


def test_img2img_adds_noise_at_the_first_sigma_to_the_latent():
    seen = []

    class Recording(TinyUNet):
        def __call__(self, x_in, t, **kw):
            seen.append(x_in)
            return super().__call__(x_in, t, **kw)

    latent = torch.full(SHAPE, 0.7)
    noise = initial_noise(SHAPE, 3)
    sigmas = sampler_sigmas(SAMPLING, "karras", 4, denoise=0.5, sampler_name="euler")
    _run(model=Recording(), latent=latent, noise=noise, sigmas=sigmas, cfg=1.0)
    expected = (latent + noise * sigmas[0]) / (sigmas[0] ** 2 + 1) ** 0.5
    torch.testing.assert_close(seen[0], expected, rtol=1e-6, atol=1e-6)


def test_empty_sigmas_return_the_latent_unchanged():
    latent = torch.randn(SHAPE)
    out = _run(latent=latent, sigmas=torch.zeros(0))
    assert torch.equal(out, latent)


def test_disjoint_areas_only_change_their_own_region():
    # Every prediction for a region comes from crops of that region alone, so the halves evolve independently.
    # (A whole-image entry would let a 3x3-kernel model carry changes across the border over the steps, as in
    # ComfyUI; hence area-limited negatives here.)
    left, right = area(16, 8, 0, 0), area(16, 8, 0, 8)
    negative = cond(entry(5, area=left), entry(5, area=right))
    a = _run(positive=cond(entry(1, area=left), entry(2, area=right)), negative=negative, cfg=5.0)
    b = _run(positive=cond(entry(3, area=left), entry(2, area=right)), negative=negative, cfg=5.0)
    assert torch.equal(a[..., 8:], b[..., 8:])
    assert not torch.allclose(a[..., :8], b[..., :8])


def test_a_pixelwise_model_keeps_area_changes_inside_the_area_even_with_a_whole_image_negative():
    left, right = area(16, 8, 0, 0), area(16, 8, 0, 8)
    a = _run(model=TinyUNet(kernel=1), positive=cond(entry(1, area=left), entry(2, area=right)), cfg=5.0)
    b = _run(model=TinyUNet(kernel=1), positive=cond(entry(3, area=left), entry(2, area=right)), cfg=5.0)
    assert torch.equal(a[..., 8:], b[..., 8:])
    assert not torch.allclose(a[..., :8], b[..., :8])


@pytest.mark.parametrize("sampler_name", ["euler", "ddim", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_sde", "uni_pc",
                                          "lcm"])
def test_inpainting_keeps_the_unmasked_latent_exactly(sampler_name):
    latent = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4))
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1.0
    out = _run(latent=latent, denoise_mask=mask, sampler_name=sampler_name)
    keep = prepare_denoise_mask(mask, SHAPE) == 0
    assert torch.equal(out[keep], latent[keep])
    assert not torch.allclose(out[~keep], latent[~keep])


def test_inpaint_mask_at_image_resolution_is_resized():
    mask = torch.zeros(1, 128, 128)
    mask[:, :64] = 1.0
    prepared = prepare_denoise_mask(mask, (2, 4, 16, 16))
    assert prepared.shape == (2, 4, 16, 16)
    assert prepared[:, :, :8].eq(1).all() and prepared[:, :, 8:].eq(0).all()


def test_ddim_renoises_the_kept_region_with_its_own_draw():
    latent = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4))
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :, :8] = 1.0
    euler = _run(latent=latent, denoise_mask=mask, sampler_name="euler")
    ddim = _run(latent=latent, denoise_mask=mask, sampler_name="ddim")
    assert not torch.equal(euler, ddim)
    # Without a mask ddim is euler.
    assert torch.equal(_run(latent=latent, sampler_name="euler"), _run(latent=latent, sampler_name="ddim"))


def test_the_analytic_model_samples_its_gaussian_through_the_whole_pipeline():
    shape = (1, 4, 64, 64)
    out = sample_latent(
        apply_model=AnalyticEps(SAMPLING), sampling=SAMPLING, latent=torch.zeros(shape),
        noise=initial_noise(shape, 8), sigmas=sampler_sigmas(SAMPLING, "karras", 30, sampler_name="dpmpp_2m"),
        positive=cond(entry(1)), negative=cond(entry(2)), cfg=6.0, sampler_name="dpmpp_2m", seed=8,
        extra_conds=no_extra,
    )
    assert close_to_gaussian(out)  # the model ignores prompts, so cfg changes nothing


def test_callback_sees_every_step_and_can_interrupt():
    steps = []
    _run(callback=steps.append, steps=5)
    assert [s.index for s in steps] == [0, 1, 2, 3, 4]

    class Stop(Exception):
        pass

    def stop(step):
        raise Stop

    with pytest.raises(Stop):
        _run(callback=stop)


def test_mismatched_noise_shape_is_an_error():
    with pytest.raises(SamplingInputError, match="noise shape"):
        _run(noise=torch.zeros(1, 4, 8, 8))


def test_unknown_sampler_is_an_error():
    with pytest.raises(UnknownSamplerError):
        _run(sampler_name="euler_a", sigmas=sampler_sigmas(SAMPLING, "karras", 3, sampler_name="euler"))


def test_batch_of_two_uses_one_call_per_evaluation_and_leaves_inputs_alone():
    model = TinyUNet()
    latent, noise = torch.zeros(2, 4, 16, 16), initial_noise((2, 4, 16, 16), 3)
    before = noise.clone()
    _run(model=model, latent=latent, noise=noise, steps=3, negative=Conditioning((entry(2),)))
    assert [c["batch"] for c in model.calls] == [4, 4, 4]
    assert torch.equal(noise, before) and latent.eq(0).all()
