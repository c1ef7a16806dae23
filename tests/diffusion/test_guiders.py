"""GUIDER / SAMPLER / NOISE values: CFGGuider with a plain sampler is KSampler's run bit for bit, options bind into
the sampler function, and the other guiders follow ComfyUI's formulas (tiny UNet-like and analytic models)."""

from __future__ import annotations

import functools

import pytest
import torch

from diffusion import guiders
from diffusion.families import SD1
from diffusion.guidance import LatentArea
from diffusion.handles import Model
from diffusion.model_sampling import Denoiser, DiscreteSampling
from diffusion.node_samplers import sample_lcm_upscale
from diffusion.noise import initial_noise
from diffusion.samplers import SAMPLER_NAMES, UnknownSamplerError
from diffusion.sampling_pipeline import SamplingInputError, sample_latent
from diffusion.sampling_values import DisableNoise, RandomNoise, ReverseTimeNoiseScaler, Sampler, SamplerOptionError
from diffusion.schedules import sampler_sigmas
from diffusion.values import Latent
from tests.diffusion.tiny_models import TinyUNet, area, cond, entry, no_extra

SAMPLING = DiscreteSampling.linear()
SHAPE = (1, 4, 16, 16)


def _model(unet=None) -> Model:
    return Model(unet=TinyUNet() if unet is None else unet, family=SD1, sampling=SAMPLING)


def _sigmas(name: str = "euler", steps: int = 4, denoise: float = 1.0) -> torch.Tensor:
    return sampler_sigmas(SAMPLING, "karras", steps, denoise=denoise, sampler_name=name)


def _guided(guider, sampler: Sampler, *, sigmas=None, latent=None, seed=3, **kw) -> torch.Tensor:
    latent = torch.zeros(SHAPE) if latent is None else latent
    return guider.sample(initial_noise(latent.shape, seed), latent, sampler,
                         _sigmas(sampler.name) if sigmas is None else sigmas, seed=seed, extra_conds=no_extra, **kw)


def _ksampler(model: Model, name: str, *, sigmas=None, latent=None, seed=3, positive=None, negative=None,
              cfg=5.0, **kw) -> torch.Tensor:
    latent = torch.zeros(SHAPE) if latent is None else latent
    return sample_latent(apply_model=model.unet, sampling=SAMPLING, latent=latent,
                         noise=initial_noise(latent.shape, seed), sigmas=_sigmas(name) if sigmas is None else sigmas,
                         positive=positive or cond(entry(1)), negative=negative or cond(entry(2)), cfg=cfg,
                         sampler_name=name, seed=seed, extra_conds=no_extra, **kw)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_cfg_guider_with_a_named_sampler_is_ksamplers_run_bit_for_bit(name):
    model = _model()
    guider = guiders.CFGGuider(model=model, positive=cond(entry(1)), negative=cond(entry(2)), cfg=5.0)
    assert torch.equal(_guided(guider, Sampler.named(name)), _ksampler(model, name))


@pytest.mark.parametrize("name", ["euler", "ddim", "euler_ancestral", "dpmpp_2m_sde"])
def test_inpainting_img2img_and_areas_also_match_ksampler(name):
    model = _model()
    latent = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4))
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 2:9] = 1.0
    positive = cond(entry(1), entry(3, area=area(8, 8, 0, 8), strength=0.7))
    sigmas = _sigmas(name, 6, denoise=0.6)
    guider = guiders.CFGGuider(model=model, positive=positive, negative=cond(entry(2)), cfg=4.0)
    ours = _guided(guider, Sampler.named(name), sigmas=sigmas, latent=latent, denoise_mask=mask)
    theirs = _ksampler(model, name, sigmas=sigmas, latent=latent, positive=positive, cfg=4.0, denoise_mask=mask)
    assert torch.equal(ours, theirs)


def test_run_edges_follow_sample_latent():
    guider = guiders.CFGGuider(model=_model(), positive=cond(entry(1)), negative=cond(entry(2)), cfg=5.0)
    latent = torch.randn(SHAPE)
    assert torch.equal(_guided(guider, Sampler.named("euler"), sigmas=torch.zeros(0), latent=latent), latent)
    with pytest.raises(SamplingInputError, match="1-D"):
        _guided(guider, Sampler.named("euler"), sigmas=torch.ones(2, 2))
    with pytest.raises(SamplingInputError, match="noise shape"):
        guider.sample(torch.zeros(1, 4, 8, 8), torch.zeros(SHAPE), Sampler.named("euler"), _sigmas(), seed=1,
                      extra_conds=no_extra)
    with pytest.raises(UnknownSamplerError):
        Sampler.named("euler_a")


# ---- SAMPLER options -------------------------------------------------------------------------------------------
def test_options_bind_into_the_sampler_function():
    guider = guiders.CFGGuider(model=_model(), positive=cond(entry(1)), negative=cond(entry(2)), cfg=5.0)
    plain = Sampler.named("euler_ancestral")
    defaults = plain.with_options({"eta": 1.0, "s_noise": 1.0})
    assert isinstance(defaults.function, functools.partial) and defaults.options == {"eta": 1.0, "s_noise": 1.0}
    assert torch.equal(_guided(guider, defaults), _guided(guider, plain))
    assert not torch.equal(_guided(guider, plain.with_options({"eta": 0.5})), _guided(guider, plain))
    assert not torch.equal(_guided(guider, Sampler.named("lms").with_options({"order": 2})),
                           _guided(guider, Sampler.named("lms")))


def test_an_option_the_function_lacks_is_refused_unless_neutral():
    euler = Sampler.named("euler")
    with pytest.raises(SamplerOptionError, match="eta"):
        euler.with_options({"eta": 0.5})
    kept = euler.with_options({"s_noise": 1.0, "eta": 0.0}, neutral={"eta": 0.0})
    assert kept.options == {"s_noise": 1.0}
    with pytest.raises(SamplerOptionError, match="eta"):
        euler.with_options({"eta": 0.5}, neutral={"eta": 0.0})


def test_noise_values():
    latent = Latent(torch.zeros(2, 4, 8, 8), batch_index=(3, 1))
    assert torch.equal(RandomNoise(7).generate_noise(latent), initial_noise((2, 4, 8, 8), 7, batch_index=(3, 1)))
    zeros = DisableNoise().generate_noise(latent)
    assert zeros.shape == (2, 4, 8, 8) and zeros.dtype == torch.float32 and not zeros.any()
    assert DisableNoise().seed == 0 and DisableNoise(seed=5).seed == 5


def test_option_values():
    assert torch.equal(ReverseTimeNoiseScaler(1.0)(torch.tensor([2.0, 3.0])), torch.tensor([4.0, 9.0]))


# ---- the other guiders -----------------------------------------------------------------------------------------
def test_basic_guider_is_the_conditioning_alone():
    model = _model()
    basic = guiders.basic_guider(model, cond(entry(1)))
    cfg_one = guiders.CFGGuider(model=model, positive=cond(entry(1)), negative=cond(entry(9)), cfg=1.0)
    assert torch.equal(_guided(basic, Sampler.named("euler")), _guided(cfg_one, Sampler.named("euler")))


def test_dual_cfg_reduces_to_cfg_when_cond2_is_the_negative():
    model = _model()
    pos, neg = cond(entry(1)), cond(entry(2))
    cfg = _guided(guiders.CFGGuider(model=model, positive=pos, negative=neg, cfg=4.0), Sampler.named("euler"))
    for style in ("regular", "nested"):
        dual = guiders.DualCFGGuider(model=model, cond1=pos, cond2=neg, negative=neg, cfg_conds=4.0,
                                     cfg_cond2_negative=3.0 if style == "regular" else 1.0, style=style)
        torch.testing.assert_close(_guided(dual, Sampler.named("euler")), cfg, rtol=1e-5, atol=1e-5)


def test_dual_cfg_regular_skips_what_comfyui_skips_at_scale_one():
    unet = TinyUNet()
    model = _model(unet)
    dual = guiders.DualCFGGuider(model=model, cond1=cond(entry(1)), cond2=cond(entry(2)), negative=cond(entry(3)),
                                 cfg_conds=1.0, cfg_cond2_negative=1.0)
    positive_alone = guiders.basic_guider(model, cond(entry(1)))
    unet.calls.clear()
    out = _guided(dual, Sampler.named("euler"))
    assert len(unet.calls) == 4  # one group evaluated per step
    assert torch.equal(out, _guided(positive_alone, Sampler.named("euler")))


def _predictions(run_guider, x, sigma):
    run = guiders.GuidanceRun(base=Denoiser(apply_model=run_guider.model.unet, sampling=SAMPLING), noise=x,
                              sampling=SAMPLING, extra_conds=no_extra, max_batch=None)
    return run, run_guider.denoiser(run)


def test_dual_cfg_formulas():
    model = _model()
    x, sigma = torch.randn(SHAPE), torch.tensor([3.0])
    c1, c2, n = cond(entry(1)), cond(entry(2)), cond(entry(3))
    for style in ("regular", "nested"):
        dual = guiders.DualCFGGuider(model=model, cond1=c1, cond2=c2, negative=n, cfg_conds=2.5,
                                     cfg_cond2_negative=4.0, style=style)
        run, denoiser = _predictions(dual, x, sigma)
        pos, mid, neg = (run.predictor_for(c)(x, sigma) for c in (c1, c2, n))
        if style == "regular":
            expected = neg + (mid - neg) * 4.0 + (pos - mid) * 2.5
        else:
            expected = neg + 4.0 * (mid + (pos - mid) * 2.5 - neg)
        torch.testing.assert_close(denoiser(x, sigma), expected, rtol=1e-6, atol=1e-6)


def test_perp_neg_removes_only_the_negatives_component_perpendicular_to_the_positive():
    gen = torch.Generator().manual_seed(1)
    pos, neg, empty = (torch.randn(SHAPE, generator=gen) for _ in range(3))
    out = guiders.perp_neg(pos, neg, empty, neg_scale=1.0, cond_scale=1.0)
    pos_dir, neg_dir = pos - empty, neg - empty
    perp = pos_dir - (out - empty)  # what was removed
    assert abs(float((perp * pos_dir).sum())) < 1e-3
    torch.testing.assert_close(perp + (neg_dir * pos_dir).sum() / pos_dir.norm() ** 2 * pos_dir, neg_dir)
    # A negative along the positive removes nothing.
    torch.testing.assert_close(guiders.perp_neg(pos, empty + 2 * pos_dir, empty, neg_scale=1.0, cond_scale=3.0),
                               empty + 3.0 * pos_dir)


def test_perp_neg_guider_and_model_patch():
    model = _model()
    pos, neg, empty = cond(entry(1)), cond(entry(2)), cond(entry(3))
    guider = guiders.PerpNegGuider(model=model, positive=pos, negative=neg, empty=empty, cfg=5.0, neg_scale=1.0)
    x, sigma = torch.randn(SHAPE), torch.tensor([2.0])
    run, denoiser = _predictions(guider, x, sigma)
    p, n, e = (run.predictor_for(c)(x, sigma) for c in (pos, neg, empty))
    torch.testing.assert_close(denoiser(x, sigma), guiders.perp_neg(p, n, e, neg_scale=1.0, cond_scale=5.0))
    # The PerpNeg model node's form gives the same guidance through CFGGuider (x − (x − D), as in ComfyUI).
    patched = guiders.with_sampler_cfg_function(model, guiders.PerpNegCfg(empty=empty, neg_scale=1.0))
    assert patched.unet is model.unet and guiders.sampler_cfg_function(model) is None
    via_model = guiders.CFGGuider(model=patched, positive=pos, negative=neg, cfg=5.0)
    torch.testing.assert_close(_guided(via_model, Sampler.named("euler")),
                               _guided(guider, Sampler.named("euler")), rtol=1e-5, atol=1e-5)
    # neg_scale 0: the negative is not evaluated and Perp-Neg is CFG against the empty prompt.
    plain = guiders.PerpNegGuider(model=model, positive=pos, negative=neg, empty=empty, cfg=5.0, neg_scale=0.0)
    cfg = guiders.CFGGuider(model=model, positive=pos, negative=empty, cfg=5.0)
    torch.testing.assert_close(_guided(plain, Sampler.named("euler")), _guided(cfg, Sampler.named("euler")),
                               rtol=1e-5, atol=1e-5)


def test_area_entries_get_counterparts_in_every_other_group():
    model = _model()
    left = area(16, 8, 0, 0)
    guider = guiders.PerpNegGuider(model=model, positive=cond(entry(1, area=left)), negative=cond(entry(2)),
                                   empty=cond(entry(3)), cfg=5.0, neg_scale=1.0)
    run = guiders.GuidanceRun(base=None, noise=torch.zeros(SHAPE), sampling=SAMPLING, extra_conds=no_extra,
                              max_batch=None)
    positive, empty, negative = guiders._prepare_groups(run, (guider.positive, guider.empty, guider.negative))
    assert [e.area for e in positive] == [LatentArea(16, 8, 0, 0)]
    for group in (empty, negative):
        assert [e.area for e in group] == [None, LatentArea(16, 8, 0, 0)]
        assert all(e.slot == "cond" for e in group)
    assert torch.equal(negative[1].model_inputs["context"], negative[0].model_inputs["context"])


# ---- node-defined samplers -------------------------------------------------------------------------------------
def _resize(x, width, height, method):
    return torch.nn.functional.interpolate(x, size=(height, width), mode=method)


def test_lcm_upscale_grows_the_latent_and_draws_comfyuis_global_noise():
    shape, seed = (1, 4, 8, 8), 5
    sigmas = _sigmas("lcm", 4)
    gen = torch.Generator().manual_seed(11)
    target = torch.randn(1, 4, 12, 12, generator=gen)

    def model(x, sigma):  # a denoiser whose x0 depends on x, at any size
        return 0.5 * x + target[..., : x.shape[-2], : x.shape[-1]]

    x = initial_noise(shape, seed) * (1 + sigmas[0] ** 2) ** 0.5
    ours = sample_lcm_upscale(model, x, sigmas, seed=seed, upscale=_resize, total_upscale=1.5,
                              upscale_method="bilinear")
    assert ours.shape == (1, 4, 12, 12)
    # ComfyUI: torch.manual_seed(seed) draws the initial noise, then the sampler's randn_like continues it.
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        torch.randn(shape)
        ratios = torch.linspace(1.0, 1.5, 3).tolist()[1:]  # upscale_steps = len(sigmas) // 2 + 1
        ref = x
        for i in range(len(sigmas) - 1):
            ref = model(ref, sigmas[i])
            if i < len(ratios):
                ref = _resize(ref, round(8 * ratios[i]), round(8 * ratios[i]), "bilinear")
            if sigmas[i + 1] > 0:
                ref = ref + sigmas[i + 1] * torch.randn_like(ref)
    assert torch.equal(ours, ref)


# ---- CFG++: the unconditional prediction a guider hands to the sampler ------------------------------------------
def test_guiders_publish_their_unconditional_prediction_and_evaluate_it_for_cfg_pp():
    from diffusion.samplers.cfg_pp import capture_uncond

    model = _model()
    x, sigma = torch.randn(SHAPE), torch.tensor([3.0])
    c1, c2, n = cond(entry(1)), cond(entry(2)), cond(entry(3))
    dual = guiders.DualCFGGuider(model=model, cond1=c1, cond2=c2, negative=n, cfg_conds=1.0, cfg_cond2_negative=1.0)
    perp = guiders.PerpNegGuider(model=model, positive=c1, negative=n, empty=c2, cfg=1.0, neg_scale=0.0)
    for guider in (dual, perp):
        run, denoiser = _predictions(guider, x, sigma)
        negative = run.predictor_for(n)(x, sigma)
        with capture_uncond() as uncond:
            denoiser(x, sigma)  # a CFG++ sampler listens: the cfg-1 / neg_scale-0 shortcut is off
            assert torch.equal(uncond.latest(x), negative), type(guider).__name__
        assert not torch.equal(denoiser(x, sigma), torch.zeros_like(x))
    nested = guiders.DualCFGGuider(model=model, cond1=c1, cond2=c2, negative=n, cfg_conds=2.0, cfg_cond2_negative=3.0,
                                   style="nested")
    run, denoiser = _predictions(nested, x, sigma)
    with capture_uncond() as uncond:
        denoiser(x, sigma)
        assert torch.equal(uncond.latest(x), run.predictor_for(c2)(x, sigma))  # its inner CFG's uncond


def test_euler_pp_steps_along_the_unconditional_prediction():
    from diffusion.node_samplers import sample_euler_pp
    from diffusion.samplers.cfg_pp import publish_uncond

    gen = torch.Generator().manual_seed(2)
    target, uncond_target = torch.randn(SHAPE, generator=gen), torch.randn(SHAPE, generator=gen)

    def model(x, sigma):
        publish_uncond(0.3 * x + uncond_target)
        return 0.5 * x + target

    sigmas = _sigmas("euler", 4)
    x0 = torch.randn(SHAPE, generator=gen) * sigmas[0]
    expected = x0
    for i in range(4):
        denoised, uncond = 0.5 * expected + target, 0.3 * expected + uncond_target
        expected = expected + (expected - 2 * denoised + uncond) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    torch.testing.assert_close(sample_euler_pp(model, x0, sigmas), expected)
