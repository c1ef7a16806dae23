"""Conditioning extras on tiny random checkpoints in real layouts: SDXL size/crop and refiner encodes, concat and area
strength, inpainting (9-channel) and InstructPix2Pix (8-channel) models fed through the sampler's concat channels, and
the tiled VAE nodes against the untiled ones."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from diffusion.checkpoint import save_sd1_checkpoint
from diffusion.concat_cond import BLANK_INPAINT_LATENT, ConcatError, concat_kind, resize_to_batch
from diffusion.families import sdxl_refiner_adm
from diffusion.memory import ModelManager
from diffusion.tiling import TilingError, tiled_scale
from diffusion.unet import UNetModel
from nodes.conditioning_extras import ConditioningError
from nodes.context import RunContext
from nodes.ksampler import extra_conds_for
from server.compose import build_registry, build_services
from server.config import ServerConfig
from server.engine.cache import OutputCache
from server.engine.executor import Executor
from server.engine.graph import validate_prompt
from server.messages import EventRecorder
from server.paths import ServerFolders
from tests.diffusion.tiny_checkpoint import tiny_configs, write_tiny_family_checkpoint, write_tiny_sd1_checkpoint


def _write_channels(path, in_channels: int, seed: int = 0) -> None:
    """A tiny SD1-layout checkpoint whose UNet takes `in_channels` (9 inpainting, 8 InstructPix2Pix)."""
    tiny = write_tiny_sd1_checkpoint(path, seed=seed)
    unet_cfg, _, _ = tiny_configs()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNetModel(dataclasses.replace(unet_cfg, in_channels=in_channels)).eval().requires_grad_(False)
    save_sd1_checkpoint(path, unet=unet, vae=tiny.vae, text_encoder=tiny.text_encoder)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    base = tmp_path_factory.mktemp("extras")
    config = ServerConfig(base_dir=base, load_custom_nodes=False)
    checkpoints = config.models_dir / "checkpoints"
    checkpoints.mkdir(parents=True)
    write_tiny_sd1_checkpoint(checkpoints / "tiny.safetensors")
    _write_channels(checkpoints / "inpaint.safetensors", 9)
    _write_channels(checkpoints / "ip2p.safetensors", 8)
    write_tiny_family_checkpoint(checkpoints / "xl.safetensors", "sdxl")
    write_tiny_family_checkpoint(checkpoints / "refiner.safetensors", "sdxl_refiner")
    folders = ServerFolders.from_config(config)
    folders.create_directories()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(config.input_dir / "photo.png")
    mask = np.full((64, 64, 4), 255, dtype=np.uint8)
    mask[16:48, 16:48, 3] = 0  # transparent centre = the region to repaint
    Image.fromarray(mask, "RGBA").save(config.input_dir / "mask.png")
    registry, _ = build_registry(config, folders)
    services = build_services(config, folders, models=ModelManager(torch.device("cpu")))
    cache = OutputCache(cpu_budget=1 << 30, gpu_budget=0, sizeof=lambda value: (0, 0))
    executor = Executor(registry, cache, functools.partial(RunContext, services=services))
    return executor, registry, services


def run_node(engine, class_type: str, **inputs):
    """Run one node's class directly with a RunContext (inputs already values)."""
    executor, registry, services = engine
    spec = registry.get(class_type)
    return spec.call(RunContext(node_id="n", prompt_id="p", services=services), inputs).values


def load(engine, name: str):
    return run_node(engine, "CheckpointLoaderSimple", ckpt_name=name)


def encode(engine, clip, text: str):
    return run_node(engine, "CLIPTextEncode", text=text, clip=clip)[0]


def image_and_mask(engine):
    image, _ = run_node(engine, "LoadImage", image="photo.png")
    _, mask = run_node(engine, "LoadImage", image="mask.png")
    return image, mask


# ---------------------------------------------------------------------------------------------------------------
# Text


def test_sdxl_encode_puts_text_l_on_clip_l_and_text_g_on_clip_g_with_the_size_conditioning(engine):
    _, clip, _ = load(engine, "xl.safetensors")
    (cond,) = run_node(engine, "CLIPTextEncodeSDXL", clip=clip, width=800, height=600, crop_w=8, crop_h=16,
                       target_width=1024, target_height=768, text_g="a castle", text_l="oil painting")
    entry = cond.entries[0]
    castle, painting = encode(engine, clip, "a castle").entries[0], encode(engine, clip, "oil painting").entries[0]
    assert torch.equal(entry.cross_attn[..., :32], painting.cross_attn[..., :32])  # clip_l is 32 wide here
    assert torch.equal(entry.cross_attn[..., 32:], castle.cross_attn[..., 32:])
    assert torch.equal(entry.pooled, castle.pooled)  # pooled from clip_g
    assert dict(entry.extra) == {"width": 800, "height": 600, "crop_w": 8, "crop_h": 16, "target_width": 1024,
                                 "target_height": 768}


def test_sdxl_encode_pads_the_shorter_prompt_with_empty_chunks(engine):
    _, clip, _ = load(engine, "xl.safetensors")
    long = " ".join(["word"] * 100)  # two chunks of 77
    (cond,) = run_node(engine, "CLIPTextEncodeSDXL", clip=clip, width=1024, height=1024, crop_w=0, crop_h=0,
                       target_width=1024, target_height=1024, text_g=long, text_l="short")
    assert cond.entries[0].cross_attn.shape == (1, 154, 64)
    empty = encode(engine, clip, "").entries[0].cross_attn
    assert torch.equal(cond.entries[0].cross_attn[:, 77:, :32], empty[..., :32])


def test_sdxl_encode_refuses_a_clip_without_clip_g(engine):
    _, clip, _ = load(engine, "tiny.safetensors")
    with pytest.raises(ConditioningError, match="clip_l and clip_g"):
        run_node(engine, "CLIPTextEncodeSDXL", clip=clip, width=1024, height=1024, crop_w=0, crop_h=0,
                 target_width=1024, target_height=1024, text_g="a", text_l="b")


def test_refiner_encode_feeds_the_aesthetic_score_into_the_adm(engine):
    model, clip, _ = load(engine, "refiner.safetensors")
    (cond,) = run_node(engine, "CLIPTextEncodeSDXLRefiner", ascore=2.5, width=640, height=512, text="x", clip=clip)
    entry = cond.entries[0]
    y = extra_conds_for(model)(entry, torch.zeros(1, 4, 8, 8))["y"]
    expected = sdxl_refiner_adm(entry.pooled.float(), height=512, width=640, crop_h=0, crop_w=0, aesthetic_score=2.5)
    assert torch.equal(y, expected)


def test_refiner_default_aesthetic_score_is_6_for_positive_and_2_5_for_negative_entries(engine):
    from diffusion.guidance import prepare_conditioning

    model, clip, _ = load(engine, "refiner.safetensors")
    text = encode(engine, clip, "x")
    prepared = prepare_conditioning(text, text, latent=torch.zeros(1, 4, 8, 8), sampling=model.sampling,
                                    extra_conds=extra_conds_for(model))
    pooled = text.entries[0].pooled.float()
    for entry, score in zip(prepared, (6.0, 2.5)):
        expected = sdxl_refiner_adm(pooled, height=64, width=64, crop_h=0, crop_w=0, aesthetic_score=score)
        assert torch.equal(entry.model_inputs["y"], expected), entry.slot


def test_concat_area_strength_and_controlnet_text(engine):
    _, clip, _ = load(engine, "tiny.safetensors")
    a, b = encode(engine, clip, "a"), encode(engine, clip, "b")
    (joined,) = run_node(engine, "ConditioningConcat", conditioning_to=a + a, conditioning_from=b)
    assert len(joined) == 2 and joined.entries[0].cross_attn.shape == (1, 154, 32)
    assert torch.equal(joined.entries[1].cross_attn[:, 77:], b.entries[0].cross_attn)
    (strong,) = run_node(engine, "ConditioningSetAreaStrength", conditioning=a, strength=2.5)
    assert strong.entries[0].strength == 2.5 and a.entries[0].strength == 1.0
    (cn,) = run_node(engine, "CLIPTextEncodeControlnet", clip=clip, conditioning=a, text="b")
    assert torch.equal(cn.entries[0].extra["cross_attn_controlnet"], b.entries[0].cross_attn)
    assert torch.equal(cn.entries[0].cross_attn, a.entries[0].cross_attn)


# ---------------------------------------------------------------------------------------------------------------
# Inpainting / InstructPix2Pix


def test_checkpoints_with_9_and_8_input_channels_load_as_inpainting_and_ip2p_models(engine):
    for name, channels, kind in (("inpaint.safetensors", 9, "inpaint"), ("ip2p.safetensors", 8, "ip2p"),
                                 ("tiny.safetensors", 4, "none")):
        model, _, _ = load(engine, name)
        assert model.unet.config.in_channels == channels
        assert concat_kind(channels, 4) == kind
    with pytest.raises(ConcatError):
        concat_kind(6, 4)


def test_inpaint_model_conditioning_feeds_mask_and_masked_latent_to_the_unet(engine):
    model, clip, vae = load(engine, "inpaint.safetensors")
    image, mask = image_and_mask(engine)
    cond = encode(engine, clip, "a")
    pos, neg, latent = run_node(engine, "InpaintModelConditioning", positive=cond, negative=cond, vae=vae,
                                pixels=image, mask=mask, noise_mask=True)
    assert latent.samples.shape == (1, 4, 8, 8) and latent.noise_mask.shape == (1, 1, 64, 64)
    (plain,) = run_node(engine, "VAEEncode", pixels=image, vae=vae)
    assert torch.equal(latent.samples, plain.samples)
    entry = pos.entries[0]
    concat = extra_conds_for(model)(entry, torch.zeros(2, 4, 8, 8))["c_concat"]
    assert concat.shape == (2, 5, 8, 8)
    expected_mask = F.interpolate(entry.extra["concat_mask"], size=(8, 8), mode="bilinear").round()
    assert torch.equal(concat[:, :1], expected_mask.expand(2, 1, 8, 8))
    assert expected_mask[0, 0, 4, 4] == 1 and expected_mask[0, 0, 0, 0] == 0
    torch.testing.assert_close(concat[:, 1:], entry.extra["concat_latent_image"].expand(2, 4, 8, 8) * 0.18215)
    # a plain 4-channel model ignores the concat entries, as ComfyUI does
    tiny, _, _ = load(engine, "tiny.safetensors")
    assert "c_concat" not in extra_conds_for(tiny)(entry, torch.zeros(1, 4, 8, 8))


def test_inpaint_model_without_concat_images_uses_the_noise_mask_or_comfyui_blank(engine):
    model, clip, _ = load(engine, "inpaint.safetensors")
    entry = encode(engine, clip, "a").entries[0]
    noise = torch.zeros(1, 4, 8, 8)
    blank = extra_conds_for(model)(entry, noise)["c_concat"]
    assert torch.equal(blank[:, 0], torch.ones(1, 8, 8))
    assert torch.equal(blank[0, 1:, 3, 3], torch.tensor(BLANK_INPAINT_LATENT))
    start = torch.randn(1, 4, 8, 8)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 32:, :] = 1
    concat = extra_conds_for(model, latent_image=start, denoise_mask=mask)(entry, noise)["c_concat"]
    assert torch.equal(concat[:, 1:], start)
    assert concat[0, 0, 6, 0] == 1 and concat[0, 0, 1, 0] == 0


def test_ip2p_conditioning_gives_an_empty_latent_and_the_raw_image_latent(engine):
    model, clip, vae = load(engine, "ip2p.safetensors")
    image, _ = image_and_mask(engine)
    cond = encode(engine, clip, "make it blue")
    pos, _, latent = run_node(engine, "InstructPixToPixConditioning", positive=cond, negative=cond, vae=vae,
                              pixels=image)
    assert torch.count_nonzero(latent.samples) == 0 and latent.samples.shape == (1, 4, 8, 8)
    concat = extra_conds_for(model)(pos.entries[0], torch.zeros(1, 4, 8, 8))["c_concat"]
    assert torch.equal(concat, pos.entries[0].extra["concat_latent_image"])  # SD1: not scaled


def test_unet_concatenates_c_concat_to_its_input(engine):
    model, _, _ = load(engine, "inpaint.safetensors")
    g = torch.Generator().manual_seed(1)
    x, extra, ctx = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 5, 8, 8, generator=g), torch.randn(1, 77, 32)
    t = torch.tensor([400.0])
    with torch.no_grad():
        assert torch.equal(model.unet(x, t, ctx, c_concat=extra), model.unet(torch.cat([x, extra], 1), t, ctx))
        with pytest.raises(ValueError, match="does not fit"):
            model.unet(x, t, ctx, c_concat=extra[..., :4])


def test_inpaint_and_ip2p_graphs_sample_end_to_end(engine):
    executor, registry, _ = engine

    def graph(ckpt: str, conditioning: dict) -> dict:
        return {
            "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a", "clip": ["4", 1]}},
            "10": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
            "14": {"class_type": "LoadImage", "inputs": {"image": "mask.png"}},
            "20": conditioning,
            "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 2, "cfg": 2.0, "sampler_name": "euler",
                                                       "scheduler": "normal", "denoise": 1.0, "model": ["4", 0],
                                                       "positive": ["20", 0], "negative": ["20", 1],
                                                       "latent_image": ["20", 2]}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
            "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
        }

    inpaint = {"class_type": "InpaintModelConditioning",
               "inputs": {"positive": ["6", 0], "negative": ["6", 0], "vae": ["4", 2], "pixels": ["10", 0],
                          "mask": ["14", 1], "noise_mask": True}}
    ip2p = {"class_type": "InstructPixToPixConditioning",
            "inputs": {"positive": ["6", 0], "negative": ["6", 0], "vae": ["4", 2], "pixels": ["10", 0]}}
    for ckpt, node in (("inpaint.safetensors", inpaint), ("ip2p.safetensors", ip2p), ("tiny.safetensors", inpaint)):
        outcome = executor.execute(validate_prompt(graph(ckpt, node), registry), prompt_id=ckpt,
                                   events=EventRecorder())
        assert outcome.status == "success", (ckpt, outcome.error)
    # the classic inpainting-checkpoint graph: VAEEncodeForInpaint's noise mask becomes the concat mask
    prompt = graph("inpaint.safetensors", inpaint)
    prompt["11"] = {"class_type": "VAEEncodeForInpaint", "inputs": {"pixels": ["10", 0], "vae": ["4", 2],
                                                                   "mask": ["14", 1], "grow_mask_by": 6}}
    prompt["3"]["inputs"].update(positive=["6", 0], negative=["6", 0], latent_image=["11", 0])
    outcome = executor.execute(validate_prompt(prompt, registry), prompt_id="classic", events=EventRecorder())
    assert outcome.status == "success", outcome.error


def test_area_conditioning_on_an_inpainting_model_cuts_the_concat_channels_to_the_area(engine):
    model, clip, vae = load(engine, "inpaint.safetensors")
    image, mask = image_and_mask(engine)
    cond = encode(engine, clip, "a")
    pos, neg, latent = run_node(engine, "InpaintModelConditioning", positive=cond, negative=cond, vae=vae,
                                pixels=image, mask=mask, noise_mask=False)
    (corner,) = run_node(engine, "ConditioningSetArea", conditioning=pos, width=32, height=32, x=32, y=0,
                         strength=1.0)
    (sampled,) = run_node(engine, "KSampler", model=model, seed=1, steps=2, cfg=2.0, sampler_name="euler",
                          scheduler="normal", positive=pos + corner, negative=neg, latent_image=latent, denoise=1.0)
    assert sampled.samples.shape == (1, 4, 8, 8) and torch.isfinite(sampled.samples).all()


def test_resize_to_batch_follows_comfyui():
    items = torch.arange(4).reshape(4, 1)
    assert resize_to_batch(items, 2).flatten().tolist() == [0, 3]
    assert resize_to_batch(items, 8).flatten().tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert resize_to_batch(items[:3], 5).flatten().tolist() == [0, 0, 1, 2, 2]


# ---------------------------------------------------------------------------------------------------------------
# Tiled VAE


def test_tiled_scale_blending_reproduces_a_tile_independent_map_exactly():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 20, 28, generator=g)
    up = functools.partial(F.interpolate, scale_factor=8, mode="nearest")
    out = tiled_scale(x, up, (8, 12), 3, 8, 3)
    torch.testing.assert_close(out, up(x), rtol=1e-5, atol=1e-5)
    down = functools.partial(F.avg_pool2d, kernel_size=8)
    pixels = torch.randn(1, 3, 96, 160, generator=g)
    torch.testing.assert_close(tiled_scale(pixels, down, (64, 64), 16, 1 / 8, 3), down(pixels), rtol=1e-5,
                               atol=1e-5)
    with pytest.raises(TilingError):
        tiled_scale(pixels, down, (16, 16), 16, 1 / 8, 3)


def test_tiled_decode_and_encode_match_the_untiled_nodes(engine):
    _, _, vae = load(engine, "tiny.safetensors")
    g = torch.Generator().manual_seed(2)
    small = type(run_node(engine, "EmptyLatentImage", width=64, height=64, batch_size=1)[0])(
        torch.randn(1, 4, 8, 8, generator=g))
    (whole,) = run_node(engine, "VAEDecode", samples=small, vae=vae)
    (tiled,) = run_node(engine, "VAEDecodeTiled", samples=small, vae=vae, tile_size=512, overlap=64,
                        temporal_size=64, temporal_overlap=8)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-5)  # one tile per pass: the same decode, averaged
    big = small.replace(samples=torch.randn(1, 4, 24, 32, generator=g))
    (whole,) = run_node(engine, "VAEDecode", samples=big, vae=vae)
    (tiled,) = run_node(engine, "VAEDecodeTiled", samples=big, vae=vae, tile_size=256, overlap=64,
                        temporal_size=64, temporal_overlap=8)
    (other,) = run_node(engine, "VAEDecode", samples=big.replace(samples=torch.randn(1, 4, 24, 32, generator=g)),
                        vae=vae)
    assert tiled.shape == whole.shape == (1, 192, 256, 3)
    # Seams come from per-tile GroupNorm statistics (large for a random tiny VAE, measured 0.013 here); an
    # unrelated latent differs by ~0.19.
    assert (tiled - whole).abs().mean() < 0.1 * (other - whole).abs().mean()

    image = whole
    (plain,) = run_node(engine, "VAEEncode", pixels=image, vae=vae)
    (tiled_latent,) = run_node(engine, "VAEEncodeTiled", pixels=image, vae=vae, tile_size=192, overlap=64,
                               temporal_size=64, temporal_overlap=8)
    (other_latent,) = run_node(engine, "VAEEncode", pixels=other, vae=vae)
    assert tiled_latent.samples.shape == plain.samples.shape == (1, 4, 24, 32)
    error = (tiled_latent.samples - plain.samples).abs().mean()
    assert error < 0.25 * (other_latent.samples - plain.samples).abs().mean()


def test_tiled_decode_reports_progress_over_every_tile(engine):
    executor, registry, services = engine
    _, _, vae = load(engine, "tiny.safetensors")
    reports = []
    ctx = RunContext(node_id="n", prompt_id="p", services=services,
                     report_progress=lambda value, total, preview: reports.append((value, total)))
    latent = type(run_node(engine, "EmptyLatentImage", width=64, height=64, batch_size=1)[0])(torch.zeros(2, 4, 16, 8))
    registry.get("VAEDecodeTiled").call(ctx, {"samples": latent, "vae": vae, "tile_size": 64, "overlap": 16,
                                              "temporal_size": 64, "temporal_overlap": 8})
    # tiles (rows x cols, 8 latent px, overlap 2): (16, 4) -> 1 x 3, (4, 16) -> 7 x 1, (8, 8) -> 3 x 1; batch 2
    assert reports[-1] == (2 * (3 + 7 + 3), 2 * (3 + 7 + 3))
    assert [v for v, _ in reports] == list(range(1, 27))
