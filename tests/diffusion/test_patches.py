"""Weight patches applied while a handle runs: same result as merged weights, base weights untouched."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from diffusion.families import SD1
from diffusion.handles import Model
from diffusion.model_sampling import DiscreteSampling
from diffusion.patches import (
    LoraPatch,
    PatchConflict,
    PatchTargetError,
    UnsupportedPatch,
    applied,
    applied_to_model,
    hooked,
    lora_delta,
    merged,
)
from diffusion.unet import UNetConfig, UNetModel

TINY_SD1 = UNetConfig(
    model_channels=32, channel_mult=(1, 2), num_res_blocks=1, transformer_depth=(1, 1), transformer_depth_middle=1,
    transformer_depth_output=(1, 1), context_dim=16, num_heads=4,
)


class Toy(nn.Module):
    """A Linear, a strided 3x3 conv and a 1x1 conv, each called through its forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.point = nn.Conv2d(8, 6, 1)
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.point(torch.relu(self.conv(x)))  # (B, 6, H/2, W/2)
        return self.fc(h.permute(0, 2, 3, 1))  # (B, H/2, W/2, 5)


def seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return module.eval().requires_grad_(False)


def lora(target: str, out: int, in_: int, rank: int = 2, *, kernel: tuple[int, ...] = (), strength: float = 1.0,
         alpha: float = 1.0, seed: int = 1, root="unet") -> LoraPatch:
    g = torch.Generator().manual_seed(seed)
    up_shape = (out, rank, 1, 1) if kernel else (out, rank)
    return LoraPatch(
        root=root, target=target, down=torch.randn(rank, in_, *kernel, generator=g),
        up=torch.randn(*up_shape, generator=g), mid=None, alpha=alpha, strength=strength, source="test.safetensors",
    )


def explicitly_merged(module: nn.Module, patches: list[LoraPatch]) -> nn.Module:
    """Reference: a copy whose weights are W + strength·alpha/rank·up@down (Tucker: up·mid·down), written out."""
    ref = copy.deepcopy(module)
    with torch.no_grad():
        for p in patches:
            weight = ref.get_submodule(p.target).weight
            up, down = p.up.flatten(1), p.down.flatten(1)
            if p.mid is None:
                delta = (up @ down).reshape(weight.shape)
            else:
                delta = torch.einsum("oa,abhw,bi->oihw", up, p.mid, down)
            weight.add_(p.strength * p.alpha / p.down.shape[0] * delta)
    return ref


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def assert_bit_identical(module: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = module.state_dict()
    assert after.keys() == before.keys()
    for k in before:
        assert torch.equal(after[k], before[k]), k


def toy_patches() -> list[LoraPatch]:
    return [
        lora("conv", 8, 4, kernel=(3, 3), alpha=1.0, strength=0.7, seed=1),
        lora("point", 6, 8, kernel=(1, 1), alpha=4.0, strength=1.0, seed=2),
        lora("fc", 5, 6, alpha=2.0, strength=-0.5, seed=3),
    ]


X = torch.randn(2, 4, 9, 7, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("mode", ["hooks", "merged"])
def test_patched_output_equals_explicitly_merged_weights_for_linear_and_conv_layers(mode) -> None:
    toy = seeded(Toy())
    patches = toy_patches()
    expected = explicitly_merged(toy, patches)(X)
    with applied(toy, patches, mode=mode) as patched:
        got = patched(X)
    assert not torch.allclose(got, toy(X), atol=1e-3)  # the LoRA changes the output
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_tucker_locon_equals_its_explicit_kernel() -> None:
    toy = seeded(Toy())
    g = torch.Generator().manual_seed(7)
    patch = LoraPatch(
        root="unet", target="conv", down=torch.randn(3, 4, 1, 1, generator=g), up=torch.randn(8, 2, 1, 1, generator=g),
        mid=torch.randn(2, 3, 3, 3, generator=g), alpha=3.0, strength=0.8,
    )
    expected = explicitly_merged(toy, [patch])(X)
    for mode in ("hooks", "merged"):
        with applied(toy, [patch], mode=mode):
            torch.testing.assert_close(toy(X), expected, atol=1e-5, rtol=1e-5)


def test_two_loras_on_one_layer_add_up() -> None:
    toy = seeded(Toy())
    first = [lora("fc", 5, 6, rank=2, seed=11, strength=0.5), lora("conv", 8, 4, kernel=(3, 3), seed=12)]
    second = [lora("fc", 5, 6, rank=3, seed=13, alpha=1.5, strength=1.2)]
    expected = explicitly_merged(toy, first + second)(X)
    with hooked(toy, first + second):
        torch.testing.assert_close(toy(X), expected, atol=1e-5, rtol=1e-5)


def test_strength_zero_changes_nothing_and_negative_strength_subtracts() -> None:
    toy = seeded(Toy())
    base = toy(X)
    with hooked(toy, [lora("fc", 5, 6, strength=0.0)]):
        assert torch.equal(toy(X), base)
    with hooked(toy, [lora("fc", 5, 6, strength=0.9)]):
        plus = toy(X)
    with hooked(toy, [lora("fc", 5, 6, strength=-0.9)]):
        minus = toy(X)
    # fc is the last (linear) layer: +s and -s deltas are opposite.
    torch.testing.assert_close((plus + minus) / 2, base, atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["hooks", "merged"])
def test_base_weights_are_bit_identical_after_use_and_after_an_exception(mode) -> None:
    toy = seeded(Toy())
    before = snapshot(toy)
    base = toy(X)
    with applied(toy, toy_patches(), mode=mode):
        toy(X)
    assert_bit_identical(toy, before)
    with pytest.raises(RuntimeError, match="boom"):
        with applied(toy, toy_patches(), mode=mode):
            toy(X)
            raise RuntimeError("boom")
    assert_bit_identical(toy, before)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in toy.modules())
    assert torch.equal(toy(X), base)


def test_a_failing_patch_leaves_nothing_behind() -> None:
    toy = seeded(Toy())
    before = snapshot(toy)
    good, bad = lora("fc", 5, 6), lora("point", 6, 3, kernel=(1, 1))  # point has 8 inputs, not 3
    for mode in ("hooks", "merged"):
        with pytest.raises(PatchTargetError, match=r"point.*\(6, 8, 1, 1\)"):
            with applied(toy, [good, bad], mode=mode):
                pass
        assert_bit_identical(toy, before)
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in toy.modules())


def test_unknown_layer_and_non_adaptable_layer_are_refused() -> None:
    unet = seeded(UNetModel(TINY_SD1))
    with pytest.raises(PatchTargetError, match="no layer 'input_blocks.99.0'"):
        with hooked(unet, [lora("input_blocks.99.0", 4, 4)]):
            pass
    with pytest.raises(PatchTargetError, match="only Linear and Conv2d"):
        with hooked(unet, [lora("out.0", 32, 32)]):  # a GroupNorm
            pass


def test_one_module_shared_by_two_handles_gives_each_its_own_result() -> None:
    unet = seeded(UNetModel(TINY_SD1))
    model = Model(unet=unet, family=SD1, sampling=DiscreteSampling.linear(), name="tiny")
    q = "input_blocks.1.1.transformer_blocks.0.attn2.to_q"
    a = model.with_patches(lora(q, 32, 32, seed=21))
    b = model.with_patches(lora("input_blocks.1.0.in_layers.2", 32, 32, kernel=(3, 3), seed=22))
    g = torch.Generator().manual_seed(0)
    x, t, ctx = torch.randn(1, 4, 8, 8, generator=g), torch.tensor([500.0]), torch.randn(1, 3, 16, generator=g)
    base = unet(x, t, ctx)
    with applied_to_model(a) as patched:
        out_a = patched(x, t, ctx)
    with applied_to_model(b) as patched:
        out_b = patched(x, t, ctx)
    torch.testing.assert_close(out_a, explicitly_merged(unet, list(a.patches))(x, t, ctx), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_b, explicitly_merged(unet, list(b.patches))(x, t, ctx), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out_a, out_b, atol=1e-4)
    assert torch.equal(unet(x, t, ctx), base)
    assert model.patches == ()


def test_opening_a_second_context_on_a_patched_module_is_refused() -> None:
    toy = seeded(Toy())
    with hooked(toy, [lora("fc", 5, 6, seed=1)]):
        with pytest.raises(PatchConflict):
            with hooked(toy, [lora("fc", 5, 6, seed=2)]):
                pass
        with pytest.raises(PatchConflict):
            with merged(toy, [lora("conv", 8, 4, kernel=(3, 3))]):
                pass
    with hooked(toy, [lora("fc", 5, 6, seed=2)]):  # closed: free again
        pass


@pytest.mark.parametrize("mode", ["hooks", "merged"])
@pytest.mark.parametrize("use_linear", [False, True])
def test_spatial_transformer_projections_are_patched_though_read_by_weight(mode, use_linear) -> None:
    """SpatialTransformer reads proj_in/proj_out's weights itself (no forward call): hooks could not see it."""
    config = UNetConfig(**{**TINY_SD1.__dict__, "use_linear_in_transformer": use_linear})
    unet = seeded(UNetModel(config))
    kernel = () if use_linear else (1, 1)
    patches = [
        lora("input_blocks.1.1.proj_in", 32, 32, kernel=kernel, seed=31),
        lora("middle_block.1.proj_out", 64, 64, kernel=kernel, seed=32, strength=0.6),
    ]
    original = unet.input_blocks[1][1].proj_in.weight
    before = snapshot(unet)
    g = torch.Generator().manual_seed(0)
    x, t, ctx = torch.randn(1, 4, 8, 8, generator=g), torch.tensor([500.0]), torch.randn(1, 3, 16, generator=g)
    with applied(unet, patches, mode=mode):
        got = unet(x, t, ctx)
    torch.testing.assert_close(got, explicitly_merged(unet, patches)(x, t, ctx), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, unet(x, t, ctx), atol=1e-4)
    assert unet.input_blocks[1][1].proj_in.weight is original
    assert_bit_identical(unet, before)


@pytest.mark.parametrize("mode", ["hooks", "merged"])
def test_patches_apply_under_inference_mode_as_the_sampler_runs_them(mode) -> None:
    unet = seeded(UNetModel(TINY_SD1))
    patches = [lora("input_blocks.1.1.proj_in", 32, 32, kernel=(1, 1), seed=41), lora("time_embed.0", 128, 32, seed=42)]
    before = snapshot(unet)
    g = torch.Generator().manual_seed(0)
    x, t, ctx = torch.randn(1, 4, 8, 8, generator=g), torch.tensor([500.0]), torch.randn(1, 3, 16, generator=g)
    with torch.inference_mode(), applied(unet, patches, mode=mode):
        got = unet(x, t, ctx)
    torch.testing.assert_close(got, explicitly_merged(unet, patches)(x, t, ctx), atol=1e-5, rtol=1e-5)
    assert_bit_identical(unet, before)


def test_hooks_compute_in_the_weight_dtype() -> None:
    fc = seeded(nn.Linear(16, 8)).to(torch.bfloat16)
    patch = lora("", 8, 16, rank=4, strength=0.5)  # target "" = the module itself
    x = torch.randn(3, 16, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    with hooked(fc, [patch]):
        got = fc(x)
    assert got.dtype == torch.bfloat16
    reference = x.float() @ (fc.weight.float() + lora_delta(patch, fc.weight.shape)).T + fc.bias.float()
    torch.testing.assert_close(got.float(), reference, atol=0.05, rtol=0.02)


def test_handles_refuse_patches_they_cannot_apply() -> None:
    model = Model(unet=seeded(UNetModel(TINY_SD1)), family=SD1, sampling=DiscreteSampling.linear(), name="tiny")
    with pytest.raises(UnsupportedPatch, match="str"):
        with applied_to_model(model.with_patches("not a patch")):
            pass
    with pytest.raises(UnsupportedPatch, match="str"):
        with applied(model.unet, ("not a patch",)):
            pass
    with pytest.raises(PatchTargetError, match="clip_l"):
        with applied_to_model(model.with_patches(lora("text_projection", 4, 4, root="clip_l"))):
            pass
