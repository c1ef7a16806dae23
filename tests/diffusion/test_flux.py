"""The Flux transformer: ComfyUI's time embedding, config detection, and parity with diffusers'
FluxTransformer2DModel on the same random weights (converted by diffusers' own single-file converter)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diffusion.flux import Flux, FluxConfig, detect_flux_config, timestep_embedding

FIXTURES = Path(__file__).parents[1] / "fixtures"
TINY = FluxConfig(hidden_size=128, num_heads=2, depth=2, depth_single_blocks=2, context_in_dim=32, vec_in_dim=24)


def random_flux(config: FluxConfig, seed: int = 0) -> Flux:
    torch.manual_seed(seed)
    model = Flux(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.02 if p.ndim > 1 else 0.1) + (1.0 if name.endswith("scale") else 0.0))
    return model.eval()


def to_diffusers(sd: dict[str, torch.Tensor], config: FluxConfig) -> dict[str, torch.Tensor]:
    """BFL / ComfyUI names -> diffusers' (written here from diffusers' module layout, independently of our code)."""
    dim, mlp = config.hidden_size, config.mlp_hidden
    out: dict[str, torch.Tensor] = {}

    def put(target: str, source: str) -> None:
        for suffix in ("weight", "bias"):
            if f"{source}.{suffix}" in sd:
                out[f"{target}.{suffix}"] = sd[f"{source}.{suffix}"]

    def split(targets: list[str], source: str, sizes: list[int]) -> None:
        for suffix in ("weight", "bias"):
            for target, part in zip(targets, sd[f"{source}.{suffix}"].split(sizes, dim=0)):
                out[f"{target}.{suffix}"] = part

    put("x_embedder", "img_in")
    put("context_embedder", "txt_in")
    for ours, theirs in (("time_in", "timestep_embedder"), ("vector_in", "text_embedder"),
                         ("guidance_in", "guidance_embedder")):
        put(f"time_text_embed.{theirs}.linear_1", f"{ours}.in_layer")
        put(f"time_text_embed.{theirs}.linear_2", f"{ours}.out_layer")
    for i in range(config.depth):
        b, t = f"double_blocks.{i}", f"transformer_blocks.{i}"
        put(f"{t}.norm1.linear", f"{b}.img_mod.lin")
        put(f"{t}.norm1_context.linear", f"{b}.txt_mod.lin")
        split([f"{t}.attn.to_q", f"{t}.attn.to_k", f"{t}.attn.to_v"], f"{b}.img_attn.qkv", [dim] * 3)
        split([f"{t}.attn.add_q_proj", f"{t}.attn.add_k_proj", f"{t}.attn.add_v_proj"], f"{b}.txt_attn.qkv",
              [dim] * 3)
        out[f"{t}.attn.norm_q.weight"] = sd[f"{b}.img_attn.norm.query_norm.scale"]
        out[f"{t}.attn.norm_k.weight"] = sd[f"{b}.img_attn.norm.key_norm.scale"]
        out[f"{t}.attn.norm_added_q.weight"] = sd[f"{b}.txt_attn.norm.query_norm.scale"]
        out[f"{t}.attn.norm_added_k.weight"] = sd[f"{b}.txt_attn.norm.key_norm.scale"]
        put(f"{t}.attn.to_out.0", f"{b}.img_attn.proj")
        put(f"{t}.attn.to_add_out", f"{b}.txt_attn.proj")
        put(f"{t}.ff.net.0.proj", f"{b}.img_mlp.0")
        put(f"{t}.ff.net.2", f"{b}.img_mlp.2")
        put(f"{t}.ff_context.net.0.proj", f"{b}.txt_mlp.0")
        put(f"{t}.ff_context.net.2", f"{b}.txt_mlp.2")
    for i in range(config.depth_single_blocks):
        b, t = f"single_blocks.{i}", f"single_transformer_blocks.{i}"
        put(f"{t}.norm.linear", f"{b}.modulation.lin")
        split([f"{t}.attn.to_q", f"{t}.attn.to_k", f"{t}.attn.to_v", f"{t}.proj_mlp"], f"{b}.linear1",
              [dim, dim, dim, mlp])
        out[f"{t}.attn.norm_q.weight"] = sd[f"{b}.norm.query_norm.scale"]
        out[f"{t}.attn.norm_k.weight"] = sd[f"{b}.norm.key_norm.scale"]
        put(f"{t}.proj_out", f"{b}.linear2")
    put("proj_out", "final_layer.linear")
    for suffix in ("weight", "bias"):  # BFL's (shift, scale) is diffusers' (scale, shift)
        shift, scale = sd[f"final_layer.adaLN_modulation.1.{suffix}"].chunk(2, dim=0)
        out[f"norm_out.linear.{suffix}"] = torch.cat([scale, shift])
    return out


def test_timestep_embedding_equals_comfyui() -> None:
    data = json.loads((FIXTURES / "comfyui_numerics_flow" / "flux_timestep_embedding.json").read_text())
    for case in data["cases"]:
        got = timestep_embedding(torch.tensor([case["input"]]))[0]
        torch.testing.assert_close(got, torch.tensor(case["embedding"]), rtol=1e-6, atol=1e-6, msg=case["label"])


def test_config_read_back_from_shapes() -> None:
    for config in (TINY, FluxConfig(hidden_size=128, num_heads=2, depth=1, depth_single_blocks=3,
                                     context_in_dim=32, vec_in_dim=24, guidance_embed=False)):
        with torch.device("meta"):
            model = Flux(config)
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert detect_flux_config(shapes) == config
        prefixed = {"model.diffusion_model." + k: v for k, v in shapes.items()}
        assert detect_flux_config(prefixed, prefix="model.diffusion_model.") == config


@pytest.mark.parametrize("guidance_embed", [True, False])
def test_matches_diffusers_flux_transformer(guidance_embed: bool) -> None:
    diffusers = pytest.importorskip("diffusers")
    config = FluxConfig(hidden_size=128, num_heads=2, depth=2, depth_single_blocks=2, context_in_dim=32,
                        vec_in_dim=24, guidance_embed=guidance_embed)
    ours = random_flux(config)
    theirs = diffusers.FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=2, num_single_layers=2, attention_head_dim=64,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=24, guidance_embeds=guidance_embed,
        axes_dims_rope=config.rope_axes)
    theirs.load_state_dict(to_diffusers(ours.state_dict(), config), strict=True)
    theirs.eval()

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, 6, 10, generator=gen)
    context = torch.randn(2, 7, 32, generator=gen)
    y = torch.randn(2, 24, generator=gen)
    sigma = torch.tensor([0.9, 0.35])
    guidance = torch.tensor([3.5, 1.0]) if guidance_embed else None
    with torch.no_grad():
        got = ours(x, sigma, context, y=y, guidance=guidance)
        # diffusers takes packed tokens and ids; (B, 16, 6, 10) -> (B, 3·5, 64)
        packed = x.reshape(2, 16, 3, 2, 5, 2).permute(0, 2, 4, 1, 3, 5).reshape(2, 15, 64)
        img_ids = torch.zeros(3, 5, 3)
        img_ids[..., 1] = torch.arange(3)[:, None]
        img_ids[..., 2] = torch.arange(5)[None, :]
        want = theirs(hidden_states=packed, encoder_hidden_states=context, pooled_projections=y, timestep=sigma,
                      img_ids=img_ids.reshape(15, 3), txt_ids=torch.zeros(7, 3), guidance=guidance,
                      return_dict=False)[0]
        want = want.reshape(2, 3, 5, 16, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(2, 16, 6, 10)
    assert got.shape == x.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_odd_sizes_are_padded_to_whole_patches() -> None:
    model = random_flux(TINY)
    x = torch.randn(1, 16, 5, 7)
    with torch.no_grad():
        out = model(x, torch.tensor([0.5]), torch.randn(1, 3, 32), y=torch.randn(1, 24), guidance=torch.tensor([3.5]))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_fp8_weights_compute_in_the_activation_dtype() -> None:
    model = random_flux(TINY)
    x = torch.randn(1, 16, 4, 4)
    args = (torch.tensor([0.5]), torch.randn(1, 3, 32))
    kwargs = {"y": torch.randn(1, 24), "guidance": torch.tensor([3.5])}
    with torch.no_grad():
        full = model(x, *args, **kwargs)
        for module in model.modules():
            if type(module).__name__ == "Linear":
                module.weight.data = module.weight.data.to(torch.float8_e4m3fn)
        assert model.img_in.weight.dtype == torch.float8_e4m3fn and model.compute_dtype == torch.float32
        fp8 = model(x, *args, **kwargs)
    assert fp8.dtype == torch.float32
    rel = (fp8 - full).norm() / full.norm()
    assert 0 < rel < 0.1  # fp8 rounds the weights (e4m3: 3 mantissa bits), it does not break the model


def test_a_skip_replacement_drops_the_block() -> None:
    """ComfyUI's patches_replace["dit"] skip (returns its args) equals the model without that block."""
    model = random_flux(FluxConfig(hidden_size=128, num_heads=2, depth=2, depth_single_blocks=2, context_in_dim=32,
                                   vec_in_dim=24))
    x, sigma, ctx, y = torch.randn(1, 16, 4, 4), torch.tensor([0.5]), torch.randn(1, 3, 32), torch.randn(1, 24)

    def skip(args, extra):
        return args

    options = {"patches_replace": {"dit": {("double_block", 0): skip, ("single_block", 1): skip}}}
    with torch.no_grad():
        skipped = model(x, sigma, ctx, y=y, guidance=torch.tensor([3.5]), transformer_options=options)
        full = model(x, sigma, ctx, y=y, guidance=torch.tensor([3.5]))
        model.double_blocks = torch.nn.ModuleList([model.double_blocks[1]])
        model.single_blocks = torch.nn.ModuleList([model.single_blocks[0]])
        without = model(x, sigma, ctx, y=y, guidance=torch.tensor([3.5]))
    torch.testing.assert_close(skipped, without)
    assert not torch.allclose(skipped, full)
