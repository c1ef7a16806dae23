"""ControlNet: full-size layouts load strictly (manifests), reduced random files load in both layouts and match
diffusers' ControlNetModel, and during sampling the control acts where its hint is, with strength, start/end
percent, chaining and ComfyUI's batching rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diffusion.checkpoint import CheckpointMismatch, UnknownCheckpoint
from diffusion.controlnet import (
    AppliedControl,
    ControlNet,
    ControlNetError,
    ControlResiduals,
    broadcast_hint,
    check_controlnet_layout,
    load_controlnet_file,
    merge_residuals,
    resize_hint,
)
from diffusion.guidance import GuidedDenoiser, prepare_conditioning
from diffusion.model_sampling import Denoiser, DiscreteSampling
from diffusion.noise import initial_noise
from diffusion.safetensors_io import save_atomic
from diffusion.sampling_pipeline import sample_latent
from diffusion.schedules import sampler_sigmas
from diffusion.unet import UNetConfig, UNetModel
from diffusion.values import CondEntry, Conditioning
from tests.diffusion.tiny_checkpoint import tiny_configs
from tests.diffusion.tiny_controlnet import random_controlnet, tiny_controlnet_config, write_controlnet

MANIFESTS = Path(__file__).parents[1] / "fixtures" / "manifests_controlnet"
SAMPLING = DiscreteSampling.linear(prediction="eps")
LATENT = 32  # latent side; the hint is 8x that (large enough that attention does not smear the effect)


def _manifest(name: str) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v) for k, v in json.loads((MANIFESTS / name).read_text())["tensors"].items()}


# ---------------------------------------------------------------------------------------------------------------
# Layouts


@pytest.mark.parametrize("name, layout, context, adm, heads, union", [
    ("controlnet_sd15.json", "ldm", 768, None, 8, None),
    ("controlnet_sd21.json", "ldm", 1024, None, None, None),
    ("controlnet_sdxl_ldm.json", "ldm", 2048, 2816, None, None),
    ("controlnet_sd15_diffusers.json", "diffusers", 768, None, 8, None),
    ("controlnet_sdxl_diffusers.json", "diffusers", 2048, 2816, None, None),
    ("controlnet_union_sdxl_diffusers.json", "diffusers", 2048, 2816, None, 8),
])
def test_full_size_layouts_match_the_module_built_on_meta_exactly(name, layout, context, adm, heads, union):
    shapes = _manifest(name)
    found = check_controlnet_layout(shapes, path=name)  # strict: every name and shape, nothing left over
    assert found.layout == layout
    assert len(set(found.names.values())) == len(found.names) == len(shapes)
    unet = found.config.unet
    assert (unet.context_dim, unet.adm_in_channels, unet.num_heads, found.config.union_types) == (
        context, adm, heads, union)
    assert found.config.hint_channels == 3
    assert unet.model_channels == 320


def test_a_wrong_shape_or_a_stray_tensor_is_refused_naming_it():
    shapes = _manifest("controlnet_sd15.json")
    bad = {**shapes, "control_model.zero_convs.3.0.weight": (640, 320, 1, 1)}
    with pytest.raises(CheckpointMismatch, match="zero_convs.3.0.weight"):
        check_controlnet_layout(bad, path="bad.safetensors")
    with pytest.raises(CheckpointMismatch, match="stray"):
        check_controlnet_layout({**shapes, "stray": (1,)}, path="bad.safetensors")
    with pytest.raises(UnknownCheckpoint, match="not a ControlNet"):
        check_controlnet_layout({"model.0.weight": (3, 3, 3, 3)}, path="esrgan.safetensors")


@pytest.mark.parametrize("prefix", ["control_model.", ""])
def test_a_reduced_random_file_loads_with_its_exact_weights(tmp_path, prefix):
    net = random_controlnet(tiny_controlnet_config(), seed=1)
    path = write_controlnet(tmp_path / "cn.safetensors", net, prefix=prefix)
    loaded = load_controlnet_file(path)
    assert loaded.config == net.config
    for key, value in net.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key


def test_diffusers_layout_gives_the_residuals_diffusers_computes(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        reference = diffusers.ControlNetModel(
            block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32, attention_head_dim=8,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"), norm_num_groups=32).eval()
        with torch.no_grad():
            for param in reference.parameters():  # diffusers zero-initialises its zero convs: give them weights
                param.add_(torch.randn_like(param) * 0.05)
    save_atomic(tmp_path / "diffusion_pytorch_model.safetensors",
                {k: v.contiguous() for k, v in reference.state_dict().items()})
    ours = load_controlnet_file(tmp_path / "diffusion_pytorch_model.safetensors").model
    assert ours.config.unet.channel_mult == (1, 2) and ours.config.unet.num_heads == 8

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=gen)
    hint = torch.rand(2, 3, 64, 64, generator=gen)
    t = torch.tensor([700.0, 30.0])
    context = torch.randn(2, 5, 32, generator=gen)
    with torch.no_grad():
        down, mid = reference(x, t, context, hint, return_dict=False)
        got = ours(x, hint, t, context)
    assert len(got.output) == len(down) and len(got.middle) == 1
    for a, b in zip(got.output, down):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.middle[0], mid, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# Hints and residual merging


def test_hint_resize_crops_the_centre_then_nearest_exact():
    hint = torch.zeros(1, 1, 20, 40)
    hint[..., :, 10:30] = 1.0  # the centre square of a 2:1 image
    out = resize_hint(hint, 8, 8)
    assert out.shape == (1, 1, 8, 8) and torch.equal(out, torch.ones(1, 1, 8, 8))
    assert resize_hint(hint, 20, 40) is hint


def test_hint_batches_follow_comfyui_broadcast_rules():
    hints = torch.arange(3.0).reshape(3, 1, 1, 1)
    assert broadcast_hint(hints[:1], 4, 2).shape[0] == 1  # one hint serves every latent
    assert broadcast_hint(hints[:2], 4, 2).flatten().tolist() == [0, 1, 0, 1]  # per chunk
    assert broadcast_hint(hints, 2, 1).flatten().tolist() == [0, 1]  # extra hints dropped
    assert broadcast_hint(hints[:2], 6, 2).flatten().tolist() == [0, 1, 0, 0, 1, 0]  # cycled within a chunk


def test_merge_scales_by_strength_and_adds_the_previous_control():
    a = ControlResiduals(middle=(torch.ones(1, 2, 2, 2),), output=(torch.ones(1, 2, 2, 2),) * 2)
    prev = ControlResiduals(input=(torch.full((1, 2, 2, 2), 5.0),), output=(torch.full((1, 2, 2, 2), 3.0),))
    merged = merge_residuals(a, 0.5, False, prev)
    assert [float(t.mean()) for t in merged.output] == [3.5, 0.5]
    assert float(merged.middle[0].mean()) == 0.5 and float(merged.input[0].mean()) == 5.0


# ---------------------------------------------------------------------------------------------------------------
# Sampling with control


@pytest.fixture(scope="module")
def unet() -> UNetModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return UNetModel(tiny_configs()[0]).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def control_net() -> ControlNet:
    return ControlNet(model=random_controlnet(tiny_controlnet_config(), seed=1), name="tiny")


def _text(seed: int) -> torch.Tensor:
    return torch.randn(1, 77, tiny_configs()[0].context_dim, generator=torch.Generator().manual_seed(seed))


def _edges_top_left() -> torch.Tensor:
    """A [1, 3, 256, 256] edge map: a white square outline near the top-left corner, black elsewhere."""
    hint = torch.zeros(1, 3, 8 * LATENT, 8 * LATENT)
    hint[..., 8:56, 8:12] = hint[..., 8:56, 52:56] = 1.0
    hint[..., 8:12, 8:56] = hint[..., 52:56, 8:56] = 1.0
    return hint


def _sample(unet, positive: Conditioning, negative: Conditioning, *, steps: int = 4, seed: int = 5) -> torch.Tensor:
    shape = (1, 4, LATENT, LATENT)
    with torch.inference_mode():
        return sample_latent(apply_model=unet, sampling=SAMPLING, latent=torch.zeros(shape),
                             noise=initial_noise(shape, seed),
                             sigmas=sampler_sigmas(SAMPLING, "normal", steps, sampler_name="euler"),
                             positive=positive, negative=negative, cfg=4.0, sampler_name="euler", seed=seed,
                             extra_conds=lambda entry, latent: {})


def _with(control: AppliedControl | None, *, apply_to_uncond: bool = False) -> tuple[Conditioning, Conditioning]:
    pos = CondEntry(cross_attn=_text(1), control=control, control_apply_to_uncond=apply_to_uncond)
    neg = CondEntry(cross_attn=_text(2), control=None if apply_to_uncond else control)
    return Conditioning((pos,)), Conditioning((neg,))


def test_the_hint_changes_the_sample_mostly_where_its_edges_are(unet, control_net):
    plain = _sample(unet, *_with(None))
    edges = _sample(unet, *_with(AppliedControl(net=control_net, hint=_edges_top_left())))
    blank = _sample(unet, *_with(AppliedControl(net=control_net, hint=torch.zeros(1, 3, 256, 256))))
    assert (edges - plain).abs().max() > 0.05  # the ControlNet acts
    change = (edges - blank).abs().mean(dim=(0, 1))  # (32, 32): what the edges themselves did
    inside = torch.zeros(LATENT, LATENT, dtype=torch.bool)
    inside[:8, :8] = True  # the edge square covers latent pixels 1..7
    ratio = float(change[inside].mean() / change[~inside].mean())
    assert ratio > 3.0, ratio


def test_strength_zero_is_bit_for_bit_no_control(unet, control_net):
    plain = _sample(unet, *_with(None))
    zero = _sample(unet, *_with(AppliedControl(net=control_net, hint=_edges_top_left(), strength=0.0)))
    assert torch.equal(plain, zero)


def test_outside_start_end_percent_the_control_does_nothing(unet, control_net):
    calls: list[int] = []
    hook = control_net.model.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    try:
        late = AppliedControl(net=control_net, hint=_edges_top_left(), start_percent=0.0, end_percent=0.5)
        pos, neg = _with(late)
        x = torch.randn(1, 4, LATENT, LATENT) * 3
        with torch.inference_mode():
            def guided(p, n):
                entries = prepare_conditioning(p, n, latent=x, sampling=SAMPLING, extra_conds=lambda e, l: {})
                return GuidedDenoiser(denoiser=Denoiser(apply_model=unet, sampling=SAMPLING), entries=entries,
                                      cfg=4.0)
            inside, outside = SAMPLING.sigma_max * 0.99, SAMPLING.percent_to_sigma(0.5) * 0.9
            plain = guided(*_with(None))
            controlled = guided(pos, neg)
            assert torch.equal(controlled(x, torch.tensor([outside])), plain(x, torch.tensor([outside])))
            assert calls == []
            assert not torch.allclose(controlled(x, torch.tensor([inside])), plain(x, torch.tensor([inside])))
            assert calls == [2]  # positive and negative share the control: one batched call
    finally:
        hook.remove()


def test_two_stacked_controlnets_add_their_residuals(unet, control_net):
    other = ControlNet(model=random_controlnet(tiny_controlnet_config(), seed=7), name="other")
    first = AppliedControl(net=control_net, hint=_edges_top_left(), strength=0.8)
    second_alone = AppliedControl(net=other, hint=torch.rand(1, 3, 64, 64), strength=1.3)
    stacked = AppliedControl(net=other, hint=second_alone.hint, strength=1.3, previous=first)
    x, sigma = torch.randn(2, 4, LATENT, LATENT), torch.tensor([5.0, 5.0])
    inputs = {"context": torch.cat([_text(1), _text(2)])}
    with torch.inference_mode():
        both = stacked.prepared(SAMPLING)(x, sigma, inputs, 2)
        a = first.prepared(SAMPLING)(x, sigma, inputs, 2)
        b = second_alone.prepared(SAMPLING)(x, sigma, inputs, 2)
    for got, ra, rb in zip(both.output + both.middle, a.output + a.middle, b.output + b.middle):
        torch.testing.assert_close(got, ra + rb)
    one = _sample(unet, *_with(first))
    two = _sample(unet, *_with(stacked))
    assert (two - one).abs().max() > 1e-3


def test_the_old_apply_node_rule_gives_the_control_to_a_negative_without_one(control_net):
    applied = AppliedControl(net=control_net, hint=_edges_top_left())
    x = torch.zeros(1, 4, LATENT, LATENT)
    shared = prepare_conditioning(*_with(applied, apply_to_uncond=True), latent=x, sampling=SAMPLING,
                                  extra_conds=lambda e, l: {})
    assert shared[0].control is not None and shared[1].control is shared[0].control
    positive_only = Conditioning((CondEntry(cross_attn=_text(1), control=applied),))
    alone = prepare_conditioning(positive_only, Conditioning((CondEntry(cross_attn=_text(2)),)), latent=x,
                                 sampling=SAMPLING, extra_conds=lambda e, l: {})
    assert alone[1].control is None


def test_a_hint_with_the_wrong_channel_count_is_refused(control_net):
    with pytest.raises(ControlNetError, match="3-channel"):
        AppliedControl(net=control_net, hint=torch.zeros(1, 4, 64, 64))


def test_sdxl_and_union_controlnets_need_y_and_a_known_type():
    sdxl = UNetConfig(model_channels=320, channel_mult=(1,), num_res_blocks=1, transformer_depth=(1,),
                      transformer_depth_middle=1, transformer_depth_output=(1,), context_dim=32, num_heads=None,
                      num_head_channels=64, use_linear_in_transformer=True, adm_in_channels=12)
    net = random_controlnet(tiny_controlnet_config(sdxl, union_types=8), seed=2)
    x, hint = torch.randn(1, 4, 4, 4), torch.rand(1, 3, 32, 32)
    t, context, y = torch.tensor([500.0]), torch.randn(1, 3, 32), torch.randn(1, 12)
    with torch.inference_mode():
        with pytest.raises(ControlNetError, match="'y'"):
            net(x, hint, t, context)
        auto = net(x, hint, t, context, y=y)
        canny = net(x, hint, t, context, y=y, control_type=(3,))
        depth = net(x, hint, t, context, y=y, control_type=(1,))
        with pytest.raises(ControlNetError, match="out of range"):
            net(x, hint, t, context, y=y, control_type=(9,))
    assert not torch.allclose(auto.output[0], canny.output[0])
    assert not torch.allclose(canny.output[0], depth.output[0])


def test_a_controlnet_of_another_family_is_refused_with_a_clear_error(control_net):
    applied = AppliedControl(net=control_net, hint=_edges_top_left()).prepared(SAMPLING)
    x, sigma = torch.randn(1, 4, LATENT, LATENT), torch.tensor([3.0])
    with pytest.raises(ControlNetError, match="32-wide text embeddings; this model gives 2048-wide"):
        applied(x, sigma, {"context": torch.randn(1, 77, 2048), "y": torch.randn(1, 2816)}, 1)


def test_the_unet_adds_each_residual_list_where_comfyui_pops_it(unet):
    """input: after input block 0 for the last entry; middle: after the middle block; output: the last entry to
    the skip the first output block takes (the deepest), leaving the path into the middle block alone."""
    gen = torch.Generator().manual_seed(9)
    x, t, context = torch.randn(1, 4, 8, 8, generator=gen), torch.tensor([400.0]), _text(3)
    r_in = torch.randn(1, 32, 8, 8, generator=gen)  # input block 0: the first conv, level 0 width
    r_mid = torch.randn(1, 64, 4, 4, generator=gen)  # the middle block: level 1
    r_out = torch.randn(1, 64, 4, 4, generator=gen)  # the last input block's skip

    def run(control=None, hooks=()):
        handles = [module.register_forward_hook(fn) if kind == "post" else module.register_forward_pre_hook(fn)
                   for module, kind, fn in hooks]
        try:
            with torch.inference_mode():
                return unet(x, t, context, control=control)
        finally:
            for handle in handles:
                handle.remove()

    split = r_out.shape[1]
    expected_input = run(hooks=[(unet.input_blocks[0], "post", lambda m, a, out: out + r_in)])
    expected_middle = run(hooks=[(unet.middle_block, "post", lambda m, a, out: out + r_mid)])
    expected_output = run(hooks=[(unet.output_blocks[0], "pre", lambda m, a: (torch.cat(
        [a[0][:, :-split], a[0][:, -split:] + r_out], 1),) + a[1:])])
    torch.testing.assert_close(run(ControlResiduals(input=(None, r_in))), expected_input)
    torch.testing.assert_close(run(ControlResiduals(middle=(r_mid,))), expected_middle)
    torch.testing.assert_close(run(ControlResiduals(output=(None, r_out))), expected_output)
    assert not torch.allclose(expected_output, run())
