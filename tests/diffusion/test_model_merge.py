"""Model/CLIP merging as weight patches (ComfyUI's add_patches semantics), composed with LoRA in order, and LoRA
extraction from a difference, on tiny random SD1-layout checkpoints."""

from __future__ import annotations

import pytest
import torch

from diffusion import model_merge
from diffusion.checkpoint import load_checkpoint
from diffusion.handles import checkpoint_handles
from diffusion.model_merge import MergeError, extract_lora, lora_state_dict
from diffusion.patches import LoraPatch, WeightPatch, applied, applied_to_clip, applied_to_model
from diffusion.tokenizer import ClipTokenizer
from tests.diffusion.tiny_checkpoint import write_tiny_family_checkpoint, write_tiny_sd1_checkpoint


@pytest.fixture(scope="module")
def handles(tmp_path_factory):
    folder = tmp_path_factory.mktemp("merge")
    tokenizer = ClipTokenizer()
    out = []
    for seed in (0, 5):
        path = write_tiny_sd1_checkpoint(folder / f"m{seed}.safetensors", seed=seed).path
        model, clip, _ = checkpoint_handles(load_checkpoint(path), tokenizer=tokenizer, latent_rgb=None)
        out.append((model, clip))
    return out


def unet_inputs():
    g = torch.Generator().manual_seed(3)
    return torch.randn(1, 4, 8, 8, generator=g), torch.tensor([500.0]), torch.randn(1, 5, 32, generator=g)


def params(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def lora_on(target: str, out: int, in_: int, strength: float = 1.0) -> LoraPatch:
    g = torch.Generator().manual_seed(9)
    return LoraPatch(root="unet", target=target, down=torch.randn(2, in_, generator=g) * 0.1,
                     up=torch.randn(out, 2, generator=g) * 0.1, mid=None, alpha=2.0, strength=strength)


def test_merge_simple_is_the_weighted_sum_inside_the_context_and_leaves_both_models_untouched(handles):
    (m1, _), (m2, _) = handles
    before1, before2 = params(m1.unet), params(m2.unet)
    objects = {k: id(v) for k, v in m1.unet.named_parameters()}
    merged = model_merge.merge_models(m1, m2, model_merge.simple(0.3))
    assert m1.patches == () and len(merged.patches) == len(before1)
    with applied_to_model(merged) as unet:
        for name, value in unet.named_parameters():
            # ComfyUI's ModelMergeSimple: the ratio is model1's share (add_patches(kp, 1 - ratio, ratio))
            expected = before1[name] * 0.3 + before2[name] * (1.0 - 0.3)
            assert torch.equal(value, expected), name
    assert {k: id(v) for k, v in m1.unet.named_parameters()} == objects
    for name, value in m1.unet.named_parameters():
        assert torch.equal(value, before1[name])
    for name, value in m2.unet.named_parameters():
        assert torch.equal(value, before2[name])


def test_hooks_and_merged_modes_give_the_same_prediction_and_restore_the_weights(handles):
    (m1, _), (m2, _) = handles
    merged = model_merge.merge_models(m1, m2, model_merge.by_block({"input": 0.2, "middle": 0.9, "out": 0.5}))
    x, t, ctx = unet_inputs()
    base = m1.unet(x, t, ctx)
    with applied(m1.unet, merged.patches, mode="hooks"):
        hooked = m1.unet(x, t, ctx)
    with applied(m1.unet, merged.patches, mode="merged"):
        written = m1.unet(x, t, ctx)
    assert torch.equal(hooked, written)
    assert not torch.allclose(hooked, base)
    assert torch.equal(m1.unet(x, t, ctx), base)


def test_block_ratios_follow_comfyui_prefix_rules():
    # (strength_patch, strength_model) = (1 − ratio, ratio): the ratio is model1's share, as in ComfyUI
    strengths = model_merge.by_block({"input": 0.1, "middle": 0.2, "out": 0.3})
    assert strengths("input_blocks.1.0.in_layers.2.weight") == (1.0 - 0.1, 0.1)
    assert strengths("middle_block.1.norm.weight") == (1.0 - 0.2, 0.2)
    assert strengths("output_blocks.0.0.skip_connection.bias") == (1.0 - 0.3, 0.3)
    assert strengths("out.2.weight") == (1.0 - 0.3, 0.3)
    assert strengths("time_embed.0.weight") == (1.0 - 0.1, 0.1)  # no prefix: the first ratio, as ComfyUI
    assert model_merge.simple(1.0)("any.weight") == (0.0, 1.0)  # the default ratio keeps model1


def test_subtract_then_add_gives_back_the_first_model(handles):
    (m1, _), (m2, _) = handles
    difference = model_merge.merge_models(m1, m2, model_merge.subtract(1.0))
    restored = model_merge.merge_models(difference, m2, model_merge.add())
    x, t, ctx = unet_inputs()
    with applied_to_model(restored) as unet:
        out = unet(x, t, ctx)
    torch.testing.assert_close(out, m1.unet(x, t, ctx), rtol=1e-4, atol=1e-5)


def test_merge_composes_with_lora_in_order_and_reads_a_lora_copy_of_the_same_module(handles):
    (m1, _), (m2, _) = handles
    target = "input_blocks.1.1.transformer_blocks.0.attn2.to_k"
    layer = m1.unet.get_submodule(target)
    patch = lora_on(target, layer.out_features, layer.in_features)
    w1, w2 = layer.weight.detach().clone(), m2.unet.get_submodule(target).weight.detach().clone()
    from diffusion.patches import lora_delta
    delta = lora_delta(patch, w1.shape)

    # LoRA first, then merged: r (W1 + ΔW) + (1 - r) W2
    then_merged = model_merge.merge_models(m1.with_patches(patch), m2, model_merge.simple(0.25))
    with applied_to_model(then_merged) as unet:
        torch.testing.assert_close(unet.get_submodule(target).weight, (w1 + delta) * 0.25 + w2 * 0.75)
    # merged first, then LoRA: r W1 + (1 - r) W2 + ΔW
    merged_then = model_merge.merge_models(m1, m2, model_merge.simple(0.25)).with_patches(patch)
    with applied_to_model(merged_then) as unet:
        torch.testing.assert_close(unet.get_submodule(target).weight, w1 * 0.25 + w2 * 0.75 + delta)
    # A model minus a LoRA'd copy of itself (same module): exactly -ΔW on that layer, zero elsewhere.
    diff = model_merge.merge_models(m1, m1.with_patches(patch), model_merge.subtract(1.0))
    with applied_to_model(diff) as unet:
        torch.testing.assert_close(unet.get_submodule(target).weight, -delta, rtol=0, atol=1e-6)
        assert torch.count_nonzero(unet.get_submodule("out.2").weight) == 0
    assert torch.equal(layer.weight, w1)


def test_clip_merge_changes_the_encoding_and_skips_nothing_it_should_not(handles):
    (_, c1), (_, c2) = handles
    merged = model_merge.merge_clips(c1, c2, model_merge.simple(0.0))  # ratio 0: all of clip2 (CLIPMergeSimple)
    assert all(isinstance(p, WeightPatch) for p in merged.patches)
    tokens = torch.tensor([[49406, 320, 1125, 49407] + [49407] * 73])
    with applied_to_clip(merged):
        merged_out = c1.encoders[0].module(tokens)[0]
    torch.testing.assert_close(merged_out, c2.encoders[0].module(tokens)[0])
    kept = model_merge.merge_clips(c1, c2, model_merge.simple(1.0))  # ratio 1, the default: clip1 as it is
    with applied_to_clip(kept):
        kept_out = c1.encoders[0].module(tokens)[0]
    torch.testing.assert_close(kept_out, c1.encoders[0].module(tokens)[0])


def test_models_of_other_architectures_do_not_merge(handles, tmp_path):
    (m1, _), _ = handles
    path = write_tiny_family_checkpoint(tmp_path / "xl.safetensors", "sdxl")
    xl, _, _ = checkpoint_handles(load_checkpoint(path), tokenizer=ClipTokenizer(), latent_rgb=None)
    with pytest.raises(MergeError, match="too little in common"):
        model_merge.merge_models(m1, xl, model_merge.simple(0.5))


def test_extract_lora_reconstructs_a_low_rank_difference():
    g = torch.Generator().manual_seed(0)
    diff = torch.randn(24, 3, generator=g) @ torch.randn(3, 40, generator=g)
    up, down = extract_lora(diff, 3)
    assert up.shape == (24, 3) and down.shape == (3, 40)
    error = (up @ down - diff).norm() / diff.norm()
    assert error < 0.2  # exact but for ComfyUI's clamp of the largest 1 % of factor values
    up1, down1 = extract_lora(diff, 1)
    assert (up1 @ down1 - diff).norm() / diff.norm() > 2 * error
    conv = torch.randn(8, 2, generator=g) @ torch.randn(2, 4 * 9, generator=g)
    up, down = extract_lora(conv.reshape(8, 4, 3, 3), 16)
    assert up.shape == (8, 4, 1, 1) and down.shape == (4, 4, 3, 3)  # rank capped at min(out, in)


def test_lora_state_dict_uses_comfyui_key_layout(handles):
    (m1, c1), (m2, c2) = handles
    sd = lora_state_dict(model_merge.merge_models(m1, m2, model_merge.subtract(1.0)),
                         model_merge.merge_clips(c1, c2, model_merge.subtract(1.0)), rank=4)
    assert sd["diffusion_model.input_blocks.0.0.lora_up.weight"].shape == (32, 4, 1, 1)
    assert sd["diffusion_model.input_blocks.0.0.lora_down.weight"].shape == (4, 4, 3, 3)
    assert "diffusion_model.input_blocks.0.0.diff_b" in sd and "diffusion_model.out.0.diff" in sd
    assert "text_encoders.clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj.lora_up.weight" in sd
    assert all(v.dtype == torch.float16 for v in sd.values())
    full = lora_state_dict(model_merge.merge_models(m1, m2, model_merge.subtract(1.0)), None, rank=4,
                           lora_type="full_diff", bias_diff=False)
    assert not any(k.endswith(".diff_b") for k in full)
    w = full["diffusion_model.input_blocks.0.0.diff"].float()
    expected = m1.unet.input_blocks[0][0].weight - m2.unet.input_blocks[0][0].weight
    torch.testing.assert_close(w, expected, rtol=1e-3, atol=1e-3)
