"""The LDM UNet: checkpoint-identical parameter names and shapes, and a forward that behaves."""

from __future__ import annotations

import math

import pytest
import torch

from diffusion.attention import multihead_attention
from diffusion.unet import UNetConfig, UNetModel, timestep_embedding
from tests.diffusion.conftest import manifest_shapes

UNET_PREFIX = "model.diffusion_model."

SD15 = UNetConfig()
SD21 = UNetConfig(context_dim=1024, num_heads=None, num_head_channels=64, use_linear_in_transformer=True)
SDXL = UNetConfig(
    channel_mult=(1, 2, 4),
    transformer_depth=(0, 2, 10),
    transformer_depth_middle=10,
    transformer_depth_output=(10, 2, 0),
    context_dim=2048,
    num_heads=None,
    num_head_channels=64,
    use_linear_in_transformer=True,
    adm_in_channels=2816,
)

TINY = UNetConfig(
    model_channels=32,
    channel_mult=(1, 2),
    num_res_blocks=1,
    transformer_depth=(1, 1),
    transformer_depth_middle=1,
    transformer_depth_output=(1, 1),
    context_dim=24,
    num_heads=4,
)


def meta_shapes(config: UNetConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = UNetModel(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    ("manifest_name", "config"), [("sd15", SD15), ("sd21v", SD21), ("sdxl_base", SDXL)]
)
def test_parameter_names_and_shapes_equal_the_released_checkpoint(manifest_name: str, config: UNetConfig) -> None:
    expected = manifest_shapes(manifest_name, UNET_PREFIX)
    got = meta_shapes(config)
    assert sorted(set(expected) - set(got)) == []
    assert sorted(set(got) - set(expected)) == []
    assert {k: v for k, v in got.items() if expected[k] != v} == {}


def tiny_inputs(batch: int = 2, height: int = 8, width: int = 8) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 4, height, width, generator=g)
    t = torch.tensor([10.0, 900.0][:batch])
    context = torch.randn(batch, 5, TINY.context_dim, generator=g)
    return x, t, context


def randomized(model: torch.nn.Module) -> torch.nn.Module:
    """Default init zeroes nothing, but make every parameter clearly non-trivial and reproducible."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def test_forward_returns_latent_shaped_output_for_odd_sizes() -> None:
    model = randomized(UNetModel(TINY))
    x, t, context = tiny_inputs(height=9, width=13)  # 9x13 -> 5x7 at level 1, upsampled back to 9x13
    with torch.no_grad():
        out = model(x, t, context)
    assert out.shape == (2, 4, 9, 13)
    assert torch.isfinite(out).all()


def test_output_depends_on_timestep_and_text_context() -> None:
    model = randomized(UNetModel(TINY))
    x, t, context = tiny_inputs()
    with torch.no_grad():
        base = model(x, t, context)
        other_t = model(x, t + 100.0, context)
        other_ctx = model(x, t, context + 1.0)
    assert not torch.allclose(base, other_t)
    assert not torch.allclose(base, other_ctx)


def test_batch_items_are_independent() -> None:
    model = randomized(UNetModel(TINY))
    x, t, context = tiny_inputs()
    with torch.no_grad():
        both = model(x, t, context)
        first = model(x[:1], t[:1], context[:1])
    torch.testing.assert_close(both[:1], first, rtol=1e-4, atol=1e-5)


def test_forward_does_not_modify_its_inputs() -> None:
    model = randomized(UNetModel(TINY))
    x, t, context = tiny_inputs()
    copies = [x.clone(), t.clone(), context.clone()]
    with torch.no_grad():
        model(x, t, context)
    for before, after in zip(copies, (x, t, context)):
        assert torch.equal(before, after)


def test_conv_and_linear_transformer_projections_compute_the_same_function() -> None:
    conv_model = randomized(UNetModel(TINY))
    linear_config = UNetConfig(**{**TINY.__dict__, "use_linear_in_transformer": True})
    linear_model = UNetModel(linear_config).eval()
    state = {k: (v.flatten(1) if (".proj_in.weight" in k or ".proj_out.weight" in k) else v)
             for k, v in conv_model.state_dict().items()}
    linear_model.load_state_dict(state, strict=True)
    x, t, context = tiny_inputs()
    with torch.no_grad():
        torch.testing.assert_close(linear_model(x, t, context), conv_model(x, t, context))


def test_adm_vector_is_required_exactly_when_configured() -> None:
    config = UNetConfig(**{**TINY.__dict__, "adm_in_channels": 12})
    model = randomized(UNetModel(config))
    x, t, context = tiny_inputs()
    y = torch.randn(2, 12)
    with torch.no_grad():
        out = model(x, t, context, y)
        assert not torch.allclose(out, model(x, t, context, y + 1.0))
        with pytest.raises(ValueError, match="adm_in_channels"):
            model(x, t, context)
        with pytest.raises(ValueError, match="adm_in_channels"):
            randomized(UNetModel(TINY))(x, t, context, y)


def test_forward_runs_in_the_weight_dtype() -> None:
    model = randomized(UNetModel(TINY)).to(torch.bfloat16)
    x, t, context = tiny_inputs()
    with torch.no_grad():
        out = model(x, t, context)  # fp32 inputs are cast to the weights' dtype
    assert out.dtype == torch.bfloat16


def test_timestep_embedding_is_cosines_then_sines_of_geometric_frequencies() -> None:
    t = torch.tensor([0.0, 3.0])
    emb = timestep_embedding(t, 8)
    assert emb.dtype == torch.float32 and emb.shape == (2, 8)
    torch.testing.assert_close(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = [math.exp(-math.log(10000.0) * i / 4) for i in range(4)]
    expected = [math.cos(3.0 * f) for f in freqs] + [math.sin(3.0 * f) for f in freqs]
    torch.testing.assert_close(emb[1], torch.tensor(expected))
    assert timestep_embedding(t, 7).shape == (2, 7)


def test_multihead_attention_matches_explicit_softmax_attention() -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, n, 12, generator=g) for n in (5, 7, 7))
    heads = 3
    out = multihead_attention(q, k, v, heads)
    qh, kh, vh = (a.view(2, -1, heads, 4).transpose(1, 2) for a in (q, k, v))  # (B, heads, T, 4)
    weights = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(4), dim=-1)
    expected = (weights @ vh).transpose(1, 2).reshape(2, 5, 12)
    torch.testing.assert_close(out, expected)


def test_config_rejects_inconsistent_fields() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        UNetConfig(num_heads=8, num_head_channels=64)
    with pytest.raises(ValueError, match="one entry per level"):
        UNetConfig(transformer_depth=(1, 1))
    with pytest.raises(ValueError, match="GroupNorm"):
        UNetConfig(model_channels=40)


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "batch", "size"),
    [(3, 1, 1, 1, 8), (3, 1, 1, 2, 7), (3, 2, 1, 1, 9), (1, 1, 0, 2, 6), (3, 1, 1, 1, 40)],
)
def test_unet_conv_matches_torch_conv_on_both_paths(kernel, stride, padding, batch, size) -> None:
    from diffusion.unet import Conv2d

    torch.manual_seed(0)
    conv = Conv2d(32, 48, kernel, stride=stride, padding=padding)
    reference = torch.nn.Conv2d(32, 48, kernel, stride=stride, padding=padding)
    reference.load_state_dict(conv.state_dict())
    x = torch.randn(batch, 32, size, size)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), reference(x), rtol=1e-4, atol=1e-5)
    conv_no_bias = Conv2d(32, 48, kernel, stride=stride, padding=padding, bias=False)
    reference_no_bias = torch.nn.Conv2d(32, 48, kernel, stride=stride, padding=padding, bias=False)
    reference_no_bias.load_state_dict(conv_no_bias.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(conv_no_bias(x), reference_no_bias(x), rtol=1e-4, atol=1e-5)


def test_unet_conv_supports_gradients_on_the_matrix_multiply_path() -> None:
    from diffusion.unet import Conv2d

    torch.manual_seed(0)
    conv = Conv2d(8, 8, 3, padding=1)
    reference = torch.nn.Conv2d(8, 8, 3, padding=1)
    reference.load_state_dict(conv.state_dict())
    x = torch.randn(2, 8, 5, 5)
    conv(x).square().sum().backward()
    reference(x).square().sum().backward()
    torch.testing.assert_close(conv.weight.grad, reference.weight.grad, rtol=1e-4, atol=1e-4)
