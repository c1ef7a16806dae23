"""A MODEL's function patches (diffusion/model_options.py): the value composes without touching the weights, the
UNet calls transformer patches where and with what ComfyUI does, the guided denoiser runs pre-CFG / cfg / post-CFG
functions with ComfyUI's argument dicts, and each patch of diffusion/model_patches.py changes the result as it
should and only when active. A tiny random UNet in the real SD1 layout stands in for a checkpoint."""

from __future__ import annotations

import math

import pytest
import torch

from diffusion import model_patches as mp
from diffusion.guidance import GuidedDenoiser, prepare_conditioning
from diffusion.model_options import NO_OPTIONS, ModelOptions, ModelOptionsError
from diffusion.model_sampling import Denoiser, DiscreteSampling, rescale_zero_terminal_snr_sigmas
from diffusion.sampling_pipeline import sample_latent
from diffusion.unet import UNetConfig, UNetModel
from nodes.types import CondEntry, Conditioning

CONTEXT = 24
CONFIG = UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, transformer_depth=(1, 1),
                    transformer_depth_middle=1, transformer_depth_output=(1, 1), context_dim=CONTEXT, num_heads=4)
SAMPLING = DiscreteSampling.linear()


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def unet() -> UNetModel:
    torch.manual_seed(0)
    model = UNetModel(CONFIG)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def _inputs(batch: int = 2, size: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(batch, 4, size, size, generator=g), torch.tensor([10.0, 900.0][:batch]),
            torch.randn(batch, 5, CONTEXT, generator=g))


def _cond(seed: int) -> Conditioning:
    g = torch.Generator().manual_seed(seed)
    return Conditioning((CondEntry(cross_attn=torch.randn(1, 5, CONTEXT, generator=g)),))


def _guided(unet: UNetModel, options: ModelOptions = NO_OPTIONS, cfg: float = 5.0) -> GuidedDenoiser:
    latent = torch.zeros(1, 4, 16, 16)
    entries = prepare_conditioning(_cond(1), _cond(2), latent=latent, sampling=SAMPLING,
                                   extra_conds=lambda e, x: {})
    return GuidedDenoiser(denoiser=Denoiser(apply_model=unet, sampling=SAMPLING), entries=entries, cfg=cfg,
                          options=options)


def _differs(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Clearly different (the tiny random UNet's outputs are small, so no relative tolerance is meaningful)."""
    return float((a - b).abs().max()) > 1e-6


def _x(size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(1, 4, size, size, generator=torch.Generator().manual_seed(3)) * 3.0, torch.tensor([3.0])


# ---- the value -----------------------------------------------------------------------------------------------
def test_options_compose_into_new_values_and_round_trip_comfy_dicts() -> None:
    def a(h, o):
        return h

    def b(h, o):
        return h

    one = NO_OPTIONS.with_patch("input_block_patch", a)
    two = one.with_patch("input_block_patch", b).with_patch_replace(a, "attn1", "middle", 0)
    assert NO_OPTIONS.is_empty and not one.is_empty
    assert one.patches["input_block_patch"] == (a,)
    assert two.patches["input_block_patch"] == (a, b)
    assert two.patches_replace["attn1"] == {("middle", 0): a}
    comfy = two.to_comfy()
    assert comfy["transformer_options"]["patches"]["input_block_patch"] == [a, b]
    comfy["transformer_options"]["patches"]["input_block_patch"].append(a)  # a copy: the value does not change
    assert two.patches["input_block_patch"] == (a, b)
    back = ModelOptions.from_comfy(two.to_comfy())
    assert back.patches == two.patches and back.patches_replace["attn1"] == {("middle", 0): a}
    # ComfyUI-written functions read the value like its dict
    assert two["transformer_options"]["patches_replace"]["attn1"][("middle", 0)] is a
    assert two.get("sampler_cfg_function") is None and "transformer_options" in two
    post = NO_OPTIONS.with_post_cfg_function(a, disable_cfg1_optimization=True)
    assert post.disable_cfg1_optimization and post.to_comfy()["sampler_post_cfg_function"] == [a]
    with pytest.raises(ModelOptionsError, match="attn3"):
        NO_OPTIONS.with_patch_replace(a, "attn3", "input", 1)
    with pytest.raises(ModelOptionsError, match="callable"):
        NO_OPTIONS.with_patch("attn1_patch", 3)


# ---- UNet hooks ----------------------------------------------------------------------------------------------
def test_empty_transformer_options_leave_the_unet_output_bit_identical(unet) -> None:
    x, t, ctx = _inputs()
    plain = unet(x, t, ctx)
    assert torch.equal(unet(x, t, ctx, transformer_options={"patches": {}, "patches_replace": {}}), plain)


def test_transformer_patches_see_comfyui_block_keys_and_run_in_order(unet) -> None:
    x, t, ctx = _inputs()
    seen: list[tuple] = []

    def record(n, context, value, extra):
        seen.append((extra["block"], extra["block_index"], extra["transformer_index"], extra["n_heads"],
                     extra["dim_head"], extra["original_shape"], tuple(extra["cond_or_uncond"])))
        return n, context, value

    options = NO_OPTIONS.with_patch("attn1_patch", record).transformer_options()
    unet(x, t, ctx, transformer_options={**options, "cond_or_uncond": [0], "sigmas": torch.tensor([1.0, 1.0])})
    # TINY: input blocks 1 and 2 have a transformer (level 0 and 1), the middle block one, output blocks 0..3 each
    assert [s[0] for s in seen] == [("input", 1), ("input", 3), ("middle", 0), ("output", 0), ("output", 1),
                                    ("output", 2), ("output", 3)]
    assert [s[2] for s in seen] == list(range(7))  # transformer_index counts SpatialTransformers
    assert {s[1] for s in seen} == {0} and {s[3] for s in seen} == {4}
    assert seen[0][4] == 8 and seen[1][4] == 16  # widths 32 and 64 over 4 heads
    assert seen[0][5] == [2, 4, 8, 8] and seen[0][6] == (0,)

    order: list[str] = []
    first = NO_OPTIONS.with_patch("input_block_patch", lambda h, o: (order.append("a"), h * 2)[1])
    both = first.with_patch("input_block_patch", lambda h, o: (order.append("b"), h + 1)[1])
    swapped = NO_OPTIONS.with_patch("input_block_patch", lambda h, o: h + 1).with_patch(
        "input_block_patch", lambda h, o: h * 2)
    out_ab = unet(x, t, ctx, transformer_options=both.transformer_options())
    assert order[:2] == ["a", "b"]
    assert not torch.allclose(out_ab, unet(x, t, ctx, transformer_options=swapped.transformer_options()))


def test_attention_replace_by_block_and_by_transformer_index(unet) -> None:
    x, t, ctx = _inputs()
    plain = unet(x, t, ctx)
    from diffusion.attention import multihead_attention

    def same(q, k, v, extra):
        return multihead_attention(q, k, v, extra["n_heads"])

    hits: list = []

    def identity(q, k, v, extra):
        hits.append(extra["block"])
        return v

    same_out = unet(x, t, ctx, transformer_options=NO_OPTIONS.with_patch_replace(same, "attn1", "middle", 0)
                    .transformer_options())
    assert torch.allclose(same_out, plain, atol=1e-6)
    by_block = NO_OPTIONS.with_patch_replace(identity, "attn1", "middle", 0)
    out = unet(x, t, ctx, transformer_options=by_block.transformer_options())
    assert hits == [("middle", 0)] and _differs(out, plain)
    def no_cross(q, k, v, extra):
        hits.append(extra["block"])
        return torch.zeros_like(q)

    by_index = NO_OPTIONS.with_patch_replace(no_cross, "attn2", "output", 1, 0)
    hits.clear()
    out = unet(x, t, ctx, transformer_options=by_index.transformer_options())
    assert hits == [("output", 1)] and _differs(out, plain)


def test_freeu_at_one_is_the_identity_and_changes_the_output_otherwise(unet) -> None:
    x, t, ctx = _inputs()
    plain = unet(x, t, ctx)
    neutral = mp.FreeU(model_channels=32, b1=1.0, b2=1.0, s1=1.0, s2=1.0)
    out = unet(x, t, ctx, transformer_options=NO_OPTIONS.with_patch("output_block_patch", neutral)
               .transformer_options())
    assert torch.allclose(out, plain, atol=1e-5)
    # TINY has widths 32 and 64 = 2·model_channels: b2/s2 act on the deepest output level
    for patch in (mp.FreeU(model_channels=32, b1=1.0, b2=1.4, s1=1.0, s2=0.2),
                  mp.FreeU(model_channels=32, b1=1.0, b2=1.4, s1=1.0, s2=0.2, version=2)):
        changed = unet(x, t, ctx, transformer_options=NO_OPTIONS.with_patch("output_block_patch", patch)
                       .transformer_options())
        assert _differs(changed, plain)


def test_fourier_scale_scales_exactly_the_low_frequency_block() -> None:
    x = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(mp.fourier_scale(x, threshold=1, low=1.0), x, atol=1e-6)
    dc_only = torch.ones(1, 1, 8, 8)  # all energy at frequency 0, inside the block
    assert torch.allclose(mp.fourier_scale(dc_only, threshold=1, low=0.5), dc_only * 0.5, atol=1e-6)


# ---- guidance ------------------------------------------------------------------------------------------------
def test_plain_options_match_the_unpatched_denoiser_bit_for_bit(unet) -> None:
    x, sigma = _x()
    plain = _guided(unet)(x, sigma)
    assert torch.equal(_guided(unet, NO_OPTIONS.with_extra("note", 1))(x, sigma), plain)


def test_rescale_cfg_at_zero_is_plain_cfg_and_rescales_otherwise(unet) -> None:
    x, sigma = _x()
    plain = _guided(unet)(x, sigma)
    zero = _guided(unet, NO_OPTIONS.with_sampler_cfg_function(mp.RescaleCFG(0.0)))(x, sigma)
    assert torch.allclose(zero, plain, atol=1e-4)
    full = _guided(unet, NO_OPTIONS.with_sampler_cfg_function(mp.RescaleCFG(1.0)))(x, sigma)
    assert _differs(full, plain)


def test_cfg_zero_star_matches_a_hand_computation(unet) -> None:
    x, sigma = _x()
    guided = _guided(unet, NO_OPTIONS.with_post_cfg_function(mp.cfg_zero_star))
    preds = guided.predictions(x, sigma)
    cond, uncond = preds["cond"], preds["uncond"]
    v_cond, v_uncond = (x - cond).flatten(), (x - uncond).flatten()
    alpha = float(v_cond @ v_uncond) / (float(v_uncond @ v_uncond) + 1e-8)
    cfg = uncond + (cond - uncond) * 5.0
    expected = cfg + uncond * (alpha - 1.0) + 5.0 * uncond * (1.0 - alpha)
    assert torch.allclose(guided(x, sigma), expected, atol=1e-4)
    assert torch.allclose(expected, alpha * uncond + 5.0 * (cond - alpha * uncond), atol=1e-4)


def test_guidance_functions_get_comfyui_argument_dicts_and_compose_in_order(unet) -> None:
    x, sigma = _x()
    seen: dict[str, set] = {}

    def pre(args):
        seen["pre"] = set(args)
        return [args["conds_out"][0] * 2, args["conds_out"][1]]

    def cfg_fn(args):
        seen["cfg"] = set(args)
        return args["cond"]  # x − cond_denoised: the result is the (doubled) positive

    def post_a(args):
        seen["post"] = set(args)
        return args["denoised"] + 1

    def post_b(args):
        return args["denoised"] * 3

    options = (NO_OPTIONS.with_pre_cfg_function(pre).with_sampler_cfg_function(cfg_fn)
               .with_post_cfg_function(post_a).with_post_cfg_function(post_b))
    guided = _guided(unet, options)
    out = guided(x, sigma)
    cond = guided.predictions(x, sigma)["cond"]
    assert torch.allclose(out, (cond * 2 + 1) * 3, atol=1e-5)
    assert seen["pre"] == {"conds", "conds_out", "cond_scale", "timestep", "input", "sigma", "model",
                           "model_options"}
    assert seen["cfg"] == {"cond", "uncond", "cond_scale", "timestep", "input", "sigma", "cond_denoised",
                           "uncond_denoised", "model", "model_options"}
    assert seen["post"] == {"denoised", "cond", "uncond", "cond_scale", "model", "uncond_denoised", "cond_denoised",
                            "sigma", "model_options", "input"}
    swapped = (NO_OPTIONS.with_pre_cfg_function(pre).with_sampler_cfg_function(cfg_fn)
               .with_post_cfg_function(post_b).with_post_cfg_function(post_a))
    assert not torch.allclose(_guided(unet, swapped)(x, sigma), out)


def test_disable_cfg1_optimization_evaluates_the_negative_at_cfg_one(unet) -> None:
    x, sigma = _x()
    seen = {}

    def post(args):
        seen["uncond"] = args["uncond"]
        seen["uncond_denoised"] = args["uncond_denoised"]
        return args["denoised"]

    _guided(unet, NO_OPTIONS.with_post_cfg_function(post), cfg=1.0)(x, sigma)
    assert seen["uncond"] is None and torch.count_nonzero(seen["uncond_denoised"]) == 0
    _guided(unet, NO_OPTIONS.with_post_cfg_function(post, disable_cfg1_optimization=True), cfg=1.0)(x, sigma)
    assert seen["uncond"] is not None and torch.count_nonzero(seen["uncond_denoised"]) > 0


def test_pag_and_sag_change_the_result_and_pag_at_zero_does_not(unet) -> None:
    x, sigma = _x()
    plain = _guided(unet)(x, sigma)
    pag = _guided(unet, NO_OPTIONS.with_post_cfg_function(mp.PerturbedAttentionGuidance(3.0),
                                                          disable_cfg1_optimization=True))(x, sigma)
    assert _differs(pag, plain)
    pag0 = _guided(unet, NO_OPTIONS.with_post_cfg_function(mp.PerturbedAttentionGuidance(0.0)))(x, sigma)
    assert torch.equal(pag0, plain)

    sag = mp.SelfAttentionGuidance(scale=0.5, blur_sigma=2.0)
    options = NO_OPTIONS.with_post_cfg_function(sag.post_cfg, disable_cfg1_optimization=True).with_patch_replace(
        sag.record, "attn1", "middle", 0, 0)
    out = _guided(unet, options)(x, sigma)
    assert sag.state.scores is not None and sag.state.scores.shape == (4, 64, 64)  # heads × (8·8 middle tokens)²
    assert _differs(out, plain)


def test_apg_matches_comfyuis_pre_cfg_formula(unet) -> None:
    x, sigma = _x()
    guided = _guided(unet)
    plain = guided(x, sigma)
    preds = guided.predictions(x, sigma)
    apg = mp.AdaptiveProjectedGuidance(eta=1.0, norm_threshold=0.0, momentum=0.0)
    # eta 1, no clipping: the modified guidance is the guidance, and ComfyUI's positive
    # uncond + g + g/cfg makes CFG give plain CFG + g
    expected = plain + (preds["cond"] - preds["uncond"])
    assert torch.allclose(_guided(unet, NO_OPTIONS.with_pre_cfg_function(apg))(x, sigma), expected, atol=1e-4)
    apg0 = mp.AdaptiveProjectedGuidance(eta=0.0, norm_threshold=0.0, momentum=0.0)
    assert not torch.allclose(_guided(unet, NO_OPTIONS.with_pre_cfg_function(apg0))(x, sigma), plain, atol=1e-3)


def test_post_cfg_tweaks_match_their_formulas(unet) -> None:
    x, sigma = _x()
    guided = _guided(unet)
    plain = guided(x, sigma)
    eps = _guided(unet, NO_OPTIONS.with_post_cfg_function(mp.EpsilonScaling(1.25)))(x, sigma)
    assert torch.allclose(eps, x - (x - plain) / 1.25, atol=1e-4)
    tsr = _guided(unet, NO_OPTIONS.with_post_cfg_function(mp.TemporalScoreRescaling(1.0, 1.0)))(x, sigma)
    assert torch.equal(tsr, plain)
    snr = 1 / 9.0  # sigma 3
    r = (snr + 1) / (snr / 0.5 + 1)
    tsr = _guided(unet, NO_OPTIONS.with_post_cfg_function(mp.TemporalScoreRescaling(0.5, 1.0)))(x, sigma)
    assert torch.allclose(tsr, x + (plain - x) * r, atol=1e-4)
    norm = _guided(unet, NO_OPTIONS.with_post_cfg_function(mp.CFGNorm(1.0)))(x, sigma)
    cond = guided.predictions(x, sigma)["cond"]
    assert (norm.norm(dim=1) <= cond.norm(dim=1) * (1 + 1e-4) + 1e-6).all()
    for fn in (mp.mahiro, mp.tangential_damping_cfg):
        options = (NO_OPTIONS.with_post_cfg_function(fn) if fn is mp.mahiro
                   else NO_OPTIONS.with_pre_cfg_function(fn))
        out = _guided(unet, options)(x, sigma)
        assert torch.isfinite(out).all() and _differs(out, plain)
    fresca_neutral = mp.FreSca(scale_low=1.0, scale_high=1.0, freq_cutoff=20)
    assert torch.allclose(_guided(unet, NO_OPTIONS.with_pre_cfg_function(fresca_neutral))(x, sigma), plain,
                          atol=1e-4)


# ---- sampling: the base model is never changed ----------------------------------------------------------------
def test_a_patched_run_leaves_the_base_model_bit_identical(unet) -> None:
    x, t, ctx = _inputs()
    before = unet(x, t, ctx)
    weights = {k: v.clone() for k, v in unet.state_dict().items()}
    options = (NO_OPTIONS.with_patch("output_block_patch", mp.FreeU(32, 1.3, 1.4, 0.9, 0.2))
               .with_post_cfg_function(mp.PerturbedAttentionGuidance(2.0), disable_cfg1_optimization=True)
               .with_sampler_cfg_function(mp.RescaleCFG(0.7)))
    kw = dict(apply_model=unet, sampling=SAMPLING, latent=torch.zeros(1, 4, 8, 8),
              noise=torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5)),
              sigmas=torch.tensor([14.6, 3.0, 0.0]), positive=_cond(1), negative=_cond(2), cfg=4.0,
              sampler_name="euler", seed=1, extra_conds=lambda e, x: {})
    plain = sample_latent(**kw)
    patched = sample_latent(**kw, options=options)
    assert _differs(plain, patched)
    assert torch.equal(unet(x, t, ctx), before)
    assert all(torch.equal(v, weights[k]) for k, v in unet.state_dict().items())
    assert torch.equal(sample_latent(**kw), plain)


def test_differential_diffusion_thresholds_the_mask_by_the_remaining_steps(unet) -> None:
    seen: list[torch.Tensor] = []
    dd = mp.DifferentialDiffusion()

    def mask_fn(sigma, mask, extra_options):
        out = dd(sigma, mask, extra_options)
        seen.append(out)
        return out

    mask = torch.linspace(0, 1, 64).reshape(1, 1, 8, 8)
    sigmas = torch.tensor([14.6, 5.0, 1.0, 0.0])
    sample_latent(apply_model=unet, sampling=SAMPLING, latent=torch.randn(1, 4, 8, 8), noise=torch.randn(1, 4, 8, 8),
                  sigmas=sigmas, positive=_cond(1), negative=_cond(2), cfg=2.0, sampler_name="euler", seed=0,
                  extra_conds=lambda e, x: {}, denoise_mask=mask,
                  options=NO_OPTIONS.with_denoise_mask_function(mask_fn))
    assert len(seen) == 3
    covered = [float(m.mean()) for m in seen]
    assert covered[0] < covered[1] < covered[2]  # more pixels change as the run goes on
    assert all(set(m.unique().tolist()) <= {0.0, 1.0} for m in seen)
    soft = mp.DifferentialDiffusion(strength=0.5)
    view = type("V", (), {"model_sampling": SAMPLING})()
    blended = soft(torch.tensor([5.0]), mask, {"model": view, "sigmas": sigmas})
    binary = mp.DifferentialDiffusion()(torch.tensor([5.0]), mask, {"model": view, "sigmas": sigmas})
    assert torch.allclose(blended, 0.5 * binary + 0.5 * mask)


def _first_attention_output(unet, options: ModelOptions, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """(the UNet output, the first transformer block's self-attention output after the patches) for options."""
    x, t, ctx = _inputs(size=size)
    seen: list[torch.Tensor] = []
    recorded = options.with_patch("attn1_output_patch", lambda n, extra: (seen.append(n), n)[1])
    out = unet(x, t, ctx, transformer_options={**recorded.transformer_options(), "sigmas": torch.tensor([1.0, 1.0])})
    return out, seen[0]


def test_token_merging_shares_outputs_between_merged_tokens_and_keeps_shapes(unet) -> None:
    plain_out, plain_attn = _first_attention_output(unet, NO_OPTIONS)
    tome = mp.TokenMerging(ratio=0.5)
    options = NO_OPTIONS.with_patch("attn1_patch", tome.merge).with_patch("attn1_output_patch", tome.unmerge)
    out, attn = _first_attention_output(unet, options)
    assert out.shape == plain_out.shape and attn.shape == plain_attn.shape == (2, 256, 32)
    # half of the 16x16 tokens were merged into others: 128 distinct attention outputs per image instead of 256
    assert len(torch.unique(attn[0], dim=0)) == 128 and len(torch.unique(plain_attn[0], dim=0)) == 256
    again, attn_again = _first_attention_output(unet, options)
    assert torch.equal(attn_again, attn)  # the random destinations are drawn from the step: deterministic
    zero = mp.TokenMerging(ratio=0.0)
    _, attn_zero = _first_attention_output(
        unet, NO_OPTIONS.with_patch("attn1_patch", zero.merge).with_patch("attn1_output_patch", zero.unmerge))
    assert torch.equal(attn_zero, plain_attn)


def test_hypertile_attends_within_tiles_and_puts_tokens_back_in_place(unet) -> None:
    plain_out, plain_attn = _first_attention_output(unet, NO_OPTIONS)
    tiles = mp.HyperTile(model_channels=32, apply_to=frozenset({32}), latent_tile_size=4, swap_size=1,
                         scale_depth=False)
    options = NO_OPTIONS.with_patch("attn1_patch", tiles.tile).with_patch("attn1_output_patch", tiles.untile)
    out, attn = _first_attention_output(unet, options)
    assert out.shape == plain_out.shape and attn.shape == plain_attn.shape
    assert _differs(attn, plain_attn)
    untouched = mp.HyperTile(model_channels=32, apply_to=frozenset({64}), latent_tile_size=4, swap_size=1,
                             scale_depth=False)
    _, attn_untouched = _first_attention_output(
        unet, NO_OPTIONS.with_patch("attn1_patch", untouched.tile).with_patch("attn1_output_patch", untouched.untile))
    assert torch.equal(attn_untouched, plain_attn)  # width 32 is not in apply_to


def test_deep_shrink_downscales_the_chosen_block_only_inside_its_sigma_window(unet) -> None:
    import torch.nn.functional as F

    x, t, ctx = _inputs(size=16)
    plain = unet(x, t, ctx)
    sizes: list = []

    def resize(h, width, height, method):
        sizes.append((tuple(h.shape[-2:]), (height, width)))
        return F.interpolate(h, size=(height, width), mode="bilinear")

    shrink = mp.DeepShrink(block_number=1, downscale_factor=2.0, sigma_start=10.0, sigma_end=2.0,
                           downscale_method="bilinear", upscale_method="bilinear", resize=resize)
    options = NO_OPTIONS.with_patch("input_block_patch_after_skip", shrink.input_patch).with_patch(
        "output_block_patch", shrink.output_patch)
    inside = unet(x, t, ctx, transformer_options={**options.transformer_options(), "sigmas": torch.tensor([5.0, 5.0])})
    assert sizes[0] == ((16, 16), (8, 8)) and inside.shape == plain.shape
    assert _differs(inside, plain)
    sizes.clear()
    outside = unet(x, t, ctx, transformer_options={**options.transformer_options(),
                                                   "sigmas": torch.tensor([1.0, 1.0])})
    assert sizes == [] and torch.allclose(outside, plain, atol=1e-6)


# ---- model sampling overrides ---------------------------------------------------------------------------------
def test_zsnr_table_ends_at_comfyuis_terminal_sigma_and_keeps_the_first() -> None:
    plain = DiscreteSampling.linear()
    zsnr = DiscreteSampling.linear(zsnr=True)
    assert math.isclose(zsnr.sigma_max, math.sqrt((1 - 4.8973451890853435e-08) / 4.8973451890853435e-08),
                        rel_tol=1e-5)
    assert math.isclose(zsnr.sigma_min, plain.sigma_min, rel_tol=1e-5)
    direct = rescale_zero_terminal_snr_sigmas(plain.sigmas.double())
    assert torch.allclose(zsnr.sigmas.double(), direct, rtol=1e-5)


def test_lcm_table_is_distilled_to_50_steps_with_comfyuis_timesteps() -> None:
    base = DiscreteSampling.linear()
    lcm = DiscreteSampling.linear(prediction="lcm").distilled()
    assert lcm.num_timesteps == 50 and lcm.training_timesteps == 1000
    assert torch.equal(lcm.sigmas[-1], base.sigmas[-1]) and torch.equal(lcm.sigmas[0], base.sigmas[19])
    assert float(lcm.timestep(lcm.sigma_max)) == 999.0 and float(lcm.timestep(lcm.sigma_min)) == 19.0
    assert math.isclose(float(lcm.sigma(torch.tensor(999.0))), lcm.sigma_max, rel_tol=1e-6)
    # the LCM boundary condition: c_skip → 1, c_out → 0 as t → 0
    x, out = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2)
    sigma = torch.tensor([float(lcm.sigma_min)])
    t = 19.0 * 10.0
    c_skip, c_out = 0.25 / (t * t + 0.25), t / (t * t + 0.25) ** 0.5
    expected = c_out * (x - out * sigma) + c_skip * x
    assert torch.allclose(lcm.denoised(sigma, out, x), expected, atol=1e-6)


def test_x0_and_img_to_img_predictions() -> None:
    x, out = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2)
    x0 = DiscreteSampling.linear(prediction="x0")
    i2i = DiscreteSampling.linear(prediction="img_to_img")
    assert torch.equal(x0.denoised(torch.tensor([2.0]), out, x), out)
    assert torch.equal(i2i.calculate_input(torch.tensor([2.0]), x), x)
    assert torch.allclose(x0.calculate_input(torch.tensor([2.0]), x), x / math.sqrt(5.0))


def test_patches_see_the_runs_sigmas_as_sample_sigmas(unet) -> None:
    seen: list = []

    def post(args):
        seen.append(args["model_options"]["transformer_options"]["sample_sigmas"])
        return args["denoised"]

    def attn(n, context, value, extra):
        seen.append(extra["sample_sigmas"])
        return n, context, value

    sigmas = torch.tensor([14.6, 3.0, 0.0])
    sample_latent(apply_model=unet, sampling=SAMPLING, latent=torch.zeros(1, 4, 8, 8), noise=torch.randn(1, 4, 8, 8),
                  sigmas=sigmas, positive=_cond(1), negative=_cond(2), cfg=3.0, sampler_name="euler", seed=0,
                  extra_conds=lambda e, x: {},
                  options=NO_OPTIONS.with_post_cfg_function(post).with_patch("attn1_patch", attn))
    assert seen and all(torch.equal(s, sigmas) for s in seen)
