"""The SD3 MMDiT (with SD3.5 medium's MMDiT-X blocks): config detection from shapes and parity with diffusers'
SD3Transformer2DModel on the same random weights (converted by diffusers' own single-file converter)."""

from __future__ import annotations

import pytest
import torch

from diffusion.mmdit import MMDiT, MMDiTConfig, detect_mmdit_config

TINY = MMDiTConfig(hidden_size=128, num_heads=2, depth=3, adm_in_channels=24, context_in_dim=32,
                   pos_embed_max_size=8, x_block_self_attn_layers=(0,))


def random_mmdit(config: MMDiTConfig = TINY, seed: int = 0) -> MMDiT:
    gen = torch.Generator().manual_seed(seed)
    model = MMDiT(config)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if name.endswith(("ln_q.weight", "ln_k.weight")):
                t.copy_(1.0 + 0.1 * torch.randn(t.shape, generator=gen))
            elif t.ndim == 1 or name == "pos_embed":
                t.copy_(0.1 * torch.randn(t.shape, generator=gen))
            else:
                t.copy_(torch.randn(t.shape, generator=gen) * t[0].numel() ** -0.5)
    return model.eval()


def test_config_read_back_from_shapes() -> None:
    for config in (TINY, MMDiTConfig(hidden_size=128, num_heads=2, depth=2, adm_in_channels=24, context_in_dim=32,
                                      pos_embed_max_size=8, x_block_self_attn_layers=())):
        with torch.device("meta"):
            model = MMDiT(config)
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert detect_mmdit_config(shapes) == config


def test_matches_diffusers_sd3_transformer() -> None:
    diffusers = pytest.importorskip("diffusers")
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    ours = random_mmdit()
    theirs = diffusers.SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=16, num_layers=3, attention_head_dim=64, num_attention_heads=2,
        joint_attention_dim=32, caption_projection_dim=128, pooled_projection_dim=24, out_channels=16,
        pos_embed_max_size=8, dual_attention_layers=(0,), qk_norm="rms_norm")
    converted = convert_sd3_transformer_checkpoint_to_diffusers({k: v.clone() for k, v in ours.state_dict().items()})
    theirs.load_state_dict(converted, strict=True)
    theirs.eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, 6, 10, generator=gen)
    context = torch.randn(2, 7, 32, generator=gen)
    y = torch.randn(2, 24, generator=gen)
    t = torch.tensor([900.0, 350.0])  # σ·1000
    with torch.no_grad():
        got = ours(x, t, context=context, y=y)
        want = theirs(hidden_states=x, encoder_hidden_states=context, pooled_projections=y, timestep=t,
                      return_dict=False)[0]
    assert got.shape == x.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
