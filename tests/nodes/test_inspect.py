"""The inspect nodes (nodes/inspect.py): DenoisingTimeline samples exactly as KSampler (the same latent, bit for
bit, for every sampler) and its frames are what the model predicted; NoiseToTimestep is KSampler's forward noising;
DenoiseOnce is one step of it; SchedulePlot plots the schedule code's sigmas; TrainingStep computes the loss the
built-in model was trained on, and on its training data that loss is what the training log reports."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion.checkpoint import load_checkpoint
from diffusion.handles import checkpoint_handles
from diffusion.memory import ModelManager
from diffusion.model_sampling import DiscreteSampling
from diffusion.noise import initial_noise
from diffusion.samplers import SAMPLER_NAMES
from diffusion.schedules import SCHEDULER_NAMES, sampler_sigmas, scheduler_sigmas
from diffusion.timeline import TimelineRecorder
from diffusion.tokenizer import ClipTokenizer
from nodes.catalog import core_nodes
from nodes.conditioning import CLIPTextEncode
from nodes.context import RunContext
from nodes.inspect import DenoiseOnce, DenoisingTimeline, NoiseToTimestep, SchedulePlot, TrainingStep, sigma_curve
from nodes.inspect_frames import EPS_RANGE, InspectInputError, eps_image
from nodes.ksampler import SamplingRequest, sample
from nodes.image import to_pil
from nodes.latent import VAEDecode
from nodes.registry import Registry
from nodes.schedule_chart import COLOURS
from nodes.sampling import KSampler
from nodes.services import Services
from nodes.types import CondEntry, Conditioning, Latent
from server.config import REPO_ROOT, ServerConfig
from server.paths import ServerFolders
from tests.diffusion.tiny_checkpoint import write_tiny_sd1_checkpoint

BUILTIN = REPO_ROOT / "models" / "checkpoints" / "chisel-shapes.safetensors"
CARD = REPO_ROOT / "models" / "checkpoints" / "chisel-shapes.md"
INSPECT_NODES = ("DenoisingTimeline", "NoiseToTimestep", "DenoiseOnce", "SchedulePlot", "TrainingStep")
REF_KEYS = {"filename", "subfolder", "type"}


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> RunContext:
    config = ServerConfig(base_dir=tmp_path_factory.mktemp("inspect"), load_custom_nodes=False)
    folders = ServerFolders.from_config(config)
    folders.create_directories()
    services = Services(folders=folders, models=ModelManager(torch.device("cpu")))
    return RunContext(node_id="1", prompt_id="p", services=services)


def _load(path: Path):
    model, clip, vae = checkpoint_handles(load_checkpoint(path), tokenizer=ClipTokenizer(), latent_rgb=None)
    return model, clip, vae


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _load(write_tiny_sd1_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny.safetensors").path)


@pytest.fixture(scope="module")
def builtin():
    return _load(BUILTIN)


def _prompts(ctx, clip, text="a large red star in the center on a blue background"):
    return CLIPTextEncode.run(ctx, text, clip)[0], CLIPTextEncode.run(ctx, "", clip)[0]


def _is_temp_ref(ctx, ref) -> bool:
    return (isinstance(ref, dict) and set(ref) == REF_KEYS and ref["type"] == "temp"
            and (ctx.services.folders.directory("temp") / ref["subfolder"] / ref["filename"]).is_file())


def _png(ctx, ref) -> np.ndarray:
    return np.asarray(Image.open(ctx.services.folders.directory("temp") / ref["subfolder"] / ref["filename"]))


def _timeline(ctx, model, vae, positive, negative, latent, *, sampler="euler", scheduler="normal", steps=3,
              cfg=2.0, seed=7, denoise=1.0):
    return DenoisingTimeline.run(ctx, model, seed, steps, cfg, sampler, scheduler, positive, negative, latent,
                                 denoise, vae)


# ---- DenoisingTimeline ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_timeline_gives_ksamplers_latent_bit_for_bit(sampler, ctx, tiny):
    model, clip, vae = tiny
    positive, negative = _prompts(ctx, clip, "a red circle")
    latent = Latent(torch.zeros((1, 4, 4, 4)))
    expected = KSampler.run(ctx, model, 7, 3, 3.0, sampler, "karras", positive, negative, latent, 1.0)[0]
    result = _timeline(ctx, model, vae, positive, negative, latent, sampler=sampler, scheduler="karras", cfg=3.0)
    out, x_t, x0, eps = result.values
    assert torch.equal(out.samples, expected.samples)
    [timeline] = result.ui["timeline"]
    frames = timeline["frames"]
    assert timeline["steps"] == len(frames) == len(x_t) == len(x0) == len(eps) >= 1
    assert len(timeline["sigmas"]) == len(frames) + 1
    assert [f["step"] for f in frames] == list(range(len(frames)))
    assert [f["sigma"] for f in frames] == timeline["sigmas"][:-1]
    if sampler not in ("dpm_fast", "dpm_adaptive"):  # those choose their own steps between the schedule's ends
        sigmas = sampler_sigmas(model.sampling, "karras", 3, sampler_name=sampler)
        assert timeline["sigmas"] == [float(s) for s in sigmas] and len(frames) == 3


def test_timeline_of_an_img2img_batch_equals_ksampler_and_shows_the_first_item(ctx, tiny):
    model, clip, vae = tiny
    positive, negative = _prompts(ctx, clip, "a red circle")
    latent = Latent(torch.randn((2, 4, 4, 4), generator=torch.Generator().manual_seed(0)), batch_index=(3, 4))
    expected = KSampler.run(ctx, model, 5, 4, 2.0, "euler_ancestral", "normal", positive, negative, latent, 0.6)[0]
    result = _timeline(ctx, model, vae, positive, negative, latent, sampler="euler_ancestral", steps=4, seed=5,
                       denoise=0.6)
    assert torch.equal(result.values[0].samples, expected.samples) and result.values[0].batch_index == (3, 4)
    assert result.values[1].shape == (4, 32, 32, 3)


def test_timeline_ui_follows_the_editors_contract(ctx, tiny):
    model, clip, vae = tiny
    positive, negative = _prompts(ctx, clip, "a red circle")
    latent = Latent(torch.zeros((1, 4, 4, 4)))
    for cfg in (2.0, 1.0):
        result = _timeline(ctx, model, vae, positive, negative, latent, cfg=cfg, sampler="heun")
        json.dumps(result.ui)  # goes to the websocket and the history as it is
        [timeline] = result.ui["timeline"]
        assert set(timeline) == {"steps", "cfg", "sampler", "scheduler", "sigmas", "frames"}
        assert (timeline["steps"], timeline["cfg"], timeline["sampler"], timeline["scheduler"]) == (
            3, cfg, "heun", "normal")
        for i, frame in enumerate(timeline["frames"]):
            assert set(frame) == {"step", "sigma", "t", "x_t", "x0", "eps", "eps_cond", "eps_uncond", "x0_cond",
                                  "x0_uncond"}
            assert frame["step"] == i and frame["t"] == float(model.sampling.timestep(frame["sigma"]))
            for key in ("x_t", "x0", "eps", "eps_cond", "x0_cond"):
                assert _is_temp_ref(ctx, frame[key])
            for key in ("eps_uncond", "x0_uncond"):  # the negative is not evaluated at cfg 1
                assert frame[key] is None if cfg == 1.0 else _is_temp_ref(ctx, frame[key])


def test_timeline_frames_are_the_recorded_predictions(ctx, builtin):
    """x̂₀ at the last step is the decoded output; ε̂ frames are (x_t − x̂₀)/σ_t on the fixed ±3 map; x_t frames are
    x_t / sqrt(1 + σ²) decoded."""
    model, clip, vae = builtin
    positive, negative = _prompts(ctx, clip)
    latent = Latent(torch.zeros((1, 4, 8, 8)))
    result = _timeline(ctx, model, vae, positive, negative, latent, steps=3, cfg=2.0)
    out, x_t, x0, eps = result.values
    decoded = VAEDecode.run(ctx, out, vae)[0]
    assert (x0[-1] - decoded[0]).abs().max() < 2e-3  # euler's last step lands on x̂₀, up to float rounding

    recorder = TimelineRecorder()
    sigmas = sampler_sigmas(model.sampling, "normal", 3, sampler_name="euler")
    again = sample(models=ctx.services.models, model=model, latent=latent, positive=positive, negative=negative,
                   request=SamplingRequest(seed=7, cfg=2.0, sampler_name="euler", sigmas=sigmas),
                   progress=lambda *a: None, observer=recorder)
    assert torch.equal(again.samples, out.samples)
    scale = model.family.latent_scale_factor
    torch.testing.assert_close(recorder.records[-1].x0 / scale, out.samples[0], rtol=1e-5, atol=1e-5)
    frames = result.ui["timeline"][0]["frames"]
    for i, record in enumerate(recorder.records):
        expected_eps = (record.x - record.x0) / record.sigma
        assert torch.equal(record.eps, expected_eps)
        assert torch.equal(eps[i], eps_image(expected_eps, vae.downscale))
        assert np.array_equal(_png(ctx, frames[i]["eps_cond"]), np.asarray(to_pil(eps_image(record.eps_cond, 8))))
        view = (record.x / math.sqrt(1 + record.sigma**2) / scale)[None]
        torch.testing.assert_close(x_t[i], VAEDecode.run(ctx, Latent(view), vae)[0][0], rtol=0, atol=1e-5)
    # the map: 0 is mid grey, ±EPS_RANGE (and beyond) the ends
    probe = torch.tensor([0.0, EPS_RANGE, -2 * EPS_RANGE]).reshape(3, 1, 1)
    assert eps_image(probe, 2)[0, 0].tolist() == [0.5, 1.0, 0.0]


# ---- NoiseToTimestep and DenoiseOnce -------------------------------------------------------------------------------
def test_noise_to_timestep_is_ksamplers_forward_noising(ctx, tiny):
    model, clip, vae = tiny
    clean = Latent(torch.randn((1, 4, 4, 4), generator=torch.Generator().manual_seed(1)))
    steps, seed = 4, 9
    schedule = scheduler_sigmas(model.sampling, "karras", steps)
    noise = initial_noise((1, 4, 4, 4), seed)
    scale = model.family.latent_scale_factor

    start = NoiseToTimestep.run(ctx, model, seed, steps, "karras", vae, 0, 0.0, None, clean)
    assert start.values[0].samples is clean.samples  # step 0 returns the input
    [noising] = start.ui["noising"]
    assert set(noising) == {"steps", "sigmas", "selected", "frames"} and noising["selected"] == 0
    assert noising["steps"] == steps and noising["sigmas"] == [float(s) for s in schedule.flip(0)]
    assert [f["step"] for f in noising["frames"]] == list(range(steps + 1))
    assert all(set(f) == {"step", "sigma", "image"} and f["sigma"] == noising["sigmas"][f["step"]]
               and _is_temp_ref(ctx, f["image"]) for f in noising["frames"])

    # step `steps` is the first step of the full schedule: KSampler's noise_scaling from pure noise
    top = NoiseToTimestep.run(ctx, model, seed, steps, "karras", vae, steps, 0.0, None, clean).values[0]
    expected = model.sampling.noise_scaling(schedule[0], noise, clean.samples * scale, max_denoise=True)
    torch.testing.assert_close(top.samples * scale, expected, rtol=1e-6, atol=1e-5)
    # step k: the sigma with k steps still to go
    middle = NoiseToTimestep.run(ctx, model, seed, steps, "karras", vae, 2, 0.0, None, clean).values[0]
    torch.testing.assert_close(middle.samples * scale, clean.samples * scale + schedule[steps - 2] * noise,
                               rtol=1e-6, atol=1e-6)
    # a σ given directly wins, and the frame nearest to it is selected
    chosen = NoiseToTimestep.run(ctx, model, seed, steps, "karras", vae, 2, 1.0, None, clean)
    torch.testing.assert_close(chosen.values[0].samples * scale, clean.samples * scale + noise, rtol=1e-6,
                               atol=1e-6)
    levels = chosen.ui["noising"][0]["sigmas"]
    assert chosen.ui["noising"][0]["selected"] == int(np.argmin([abs(s - 1.0) for s in levels]))

    with pytest.raises(InspectInputError, match="past the schedule"):
        NoiseToTimestep.run(ctx, model, seed, steps, "karras", vae, steps + 1, 0.0, None, clean)
    with pytest.raises(InspectInputError, match="an image or a latent"):
        NoiseToTimestep.run(ctx, model, seed, steps, "karras", vae, 1)


def test_noise_to_timestep_of_an_image_starts_from_the_image_itself(ctx, tiny):
    model, clip, vae = tiny
    image = torch.from_numpy(np.asarray(Image.open(REPO_ROOT / "workflows" / "assets" / "chisel-example-shapes.png")
                                        .convert("RGB"), dtype=np.float32) / 255.0)[None]
    result = NoiseToTimestep.run(ctx, model, 3, 4, "normal", vae, 0, 0.0, image)
    latent, picture = result.values
    assert torch.equal(picture, image)
    assert np.array_equal(_png(ctx, result.ui["noising"][0]["frames"][0]["image"]), np.asarray(to_pil(image[0])))
    noisy = NoiseToTimestep.run(ctx, model, 3, 4, "normal", vae, 4, 0.0, image).values[1]
    assert noisy.shape == image.shape and not torch.equal(noisy, image)


def test_denoise_once_is_the_timelines_first_prediction(ctx, builtin):
    model, clip, vae = builtin
    positive, negative = _prompts(ctx, clip)
    empty = Latent(torch.zeros((1, 4, 8, 8)))
    steps = 5
    result = DenoiseOnce.run(ctx, model, 7, steps, 2.0, "normal", positive, negative, empty, vae, steps, "enable")
    x0, image = result.values
    recorder = TimelineRecorder()
    sample(models=ctx.services.models, model=model, latent=empty, positive=positive, negative=negative,
           request=SamplingRequest(seed=7, cfg=2.0, sampler_name="euler",
                                   sigmas=sampler_sigmas(model.sampling, "normal", steps, sampler_name="euler")),
           progress=lambda *a: None, observer=recorder)
    first = recorder.records[0]
    assert torch.equal(x0.samples[0], first.x0 / model.family.latent_scale_factor)
    assert image.shape == (1, 64, 64, 3)
    [once] = result.ui["denoise_once"]
    assert set(once) == {"sigma", "input", "x0", "eps"} and once["sigma"] == first.sigma
    assert result.ui["images"] == [once["x0"]] and all(_is_temp_ref(ctx, once[k]) for k in ("input", "x0", "eps"))

    # from NoiseToTimestep's latent (add_noise off) the prediction sees the same noisy input
    noised = NoiseToTimestep.run(ctx, model, 7, steps, "normal", vae, steps, 0.0, None, empty).values[0]
    again = DenoiseOnce.run(ctx, model, 7, steps, 2.0, "normal", positive, negative, noised, vae, steps, "disable")
    torch.testing.assert_close(again.values[0].samples, x0.samples, rtol=1e-4, atol=1e-4)
    with pytest.raises(InspectInputError, match="between 1 and 5"):
        DenoiseOnce.run(ctx, model, 7, steps, 2.0, "normal", positive, negative, empty, vae, 6, "enable")


# ---- SchedulePlot and the sigma curve ------------------------------------------------------------------------------
def test_schedule_plot_draws_every_schedulers_sigmas(ctx):
    result = SchedulePlot.run(ctx, 12, "eps", 1.0)
    [image] = result.values
    assert image.shape == (1, 500, 800, 3)
    [plot] = result.ui["schedule_plot"]
    assert plot["steps"] == 12 and plot["model_sampling"] == "eps" and list(plot["curves"]) == list(SCHEDULER_NAMES)
    table = DiscreteSampling.linear()
    for name, curve in plot["curves"].items():
        assert curve == [float(s) for s in sampler_sigmas(table, name, 12, sampler_name="euler")]
    [ref] = result.ui["images"]
    assert _is_temp_ref(ctx, ref) and _png(ctx, ref).shape == (500, 800, 3)
    pixels = (image[0] * 255).round().to(torch.uint8).reshape(-1, 3)
    colours = {tuple(p) for p in pixels.tolist()}
    assert all(colour in colours for colour in COLOURS[:len(SCHEDULER_NAMES)])  # one line per scheduler

    flow = SchedulePlot.run(ctx, 8, "flow", 1.0).ui["schedule_plot"][0]["curves"]
    assert all(curve[0] <= 1.0 and curve[-1] == 0.0 for curve in flow.values())
    assert flow["normal"] == pytest.approx([*(np.linspace(1000, 1, 8) / 1000).tolist(), 0.0], abs=1e-6)


def test_sigma_curve_is_ksamplers_schedule():
    table = DiscreteSampling.linear()
    assert sigma_curve("karras", 10, 0.5) == [float(s) for s in sampler_sigmas(table, "karras", 10, denoise=0.5,
                                                                                sampler_name="euler")]
    assert len(sigma_curve("normal", 10, sampler_name="dpm_2")) == 11  # the discard-penultimate rule
    assert sigma_curve("normal", 10, 0.0) == []
    assert sigma_curve("normal", 4, model_sampling="v") == sigma_curve("normal", 4, model_sampling="eps")
    for bad, match in (({"steps": 0}, "steps"), ({"denoise": 1.5}, "denoise"), ({"model_sampling": "x"}, "model"),
                       ({"steps": 100, "denoise": 0.001}, "steps / denoise")):
        with pytest.raises(InspectInputError, match=match):
            sigma_curve(**{"scheduler": "normal", "steps": 10, **bad})


# ---- TrainingStep --------------------------------------------------------------------------------------------------
def test_training_step_shows_the_noise_the_prediction_and_the_error(ctx, builtin):
    model, clip, vae = builtin
    positive, _ = _prompts(ctx, clip)
    image = torch.rand((1, 64, 64, 3), generator=torch.Generator().manual_seed(0))
    frames, mse = (result := TrainingStep.run(ctx, model, 3, positive, vae, image, 600)).values
    assert frames.shape == (4, 64, 64, 3) and isinstance(mse, float) and mse > 0
    [step] = result.ui["training_step"]
    assert set(step) == {"t", "sigma", "mse", "noisy", "noise", "predicted", "error"}
    assert step["t"] == 600 and step["sigma"] == float(model.sampling.sigmas[600]) and step["mse"] == mse
    assert result.ui["images"] == [step[k] for k in ("noisy", "noise", "predicted", "error")]
    assert all(_is_temp_ref(ctx, ref) for ref in result.ui["images"])
    noise = initial_noise((1, 4, 8, 8), 3)
    assert torch.equal(frames[1], eps_image(noise[0], 8))  # the true noise is the seed's KSampler noise
    assert float(frames[3].max()) == 1.0  # the error map: white = the frame's largest squared error
    with pytest.raises(InspectInputError, match="t must be"):
        TrainingStep.run(ctx, model, 3, positive, vae, image, 1000)


def _card_eps_mse() -> float:
    """The UNet's final eps MSE the model card reports from the training log (mean of its last logged steps)."""
    text = CARD.read_text()
    marker = "eps MSE"
    return float(text[text.index(marker) + len(marker):].split()[0])


def test_training_step_loss_on_the_training_data_is_what_training_logged(ctx, builtin):
    """Scenes of the training split with captions drawn as training drew them (parts left out, 10 % empty), t
    stratified over 0..999 (as training's uniform t, with less variance): TrainingStep's MSE equals the loss the
    training code (train/diffusion.py) computes on the same data, and its mean is within the training log's range."""
    from train.config import RunConfig
    from train.diffusion import add_noise, alphas_cumprod
    from train.scenes import render, sample_scene, split_combos
    from train.unet_stage import training_caption

    model, clip, vae = builtin
    schedule = RunConfig().diffusion
    rng = np.random.default_rng(2024)
    combos = split_combos("train")
    abar = alphas_cumprod(model.sampling)
    strata, batch = 12, 8
    losses = []
    for j in range(strata):
        t = int(rng.integers(j * 1000 // strata, (j + 1) * 1000 // strata))
        scenes = [sample_scene(rng, combos) for _ in range(batch)]
        image = torch.from_numpy(np.stack([render(s, 64) for s in scenes]).astype(np.float32) / 255.0)
        captions = [training_caption(s.combo, rng, schedule.caption_dropout, schedule.omit_part) for s in scenes]
        context = torch.cat([CLIPTextEncode.run(ctx, c, clip)[0].entries[0].cross_attn for c in captions])
        positive = Conditioning((CondEntry(cross_attn=context),))  # one caption per image
        _, mse = TrainingStep.run(ctx, model, j, positive, vae, image, t).values
        losses.append(mse)
        if j >= 3:
            continue
        # the training code's loss on the same latents, noise and t (for the first strata: the rest only costs time)
        with torch.inference_mode():
            x0 = vae.module.encode(image.movedim(-1, 1) * 2 - 1)[0] * model.family.latent_scale_factor
            noise = initial_noise(tuple(x0.shape), j)
            steps = torch.full((batch,), t)
            eps = model.unet(add_noise(x0, noise, steps, abar), steps.float(), context=context)
            train_mse = float((eps - noise).pow(2).mean())
        assert mse == pytest.approx(train_mse, rel=2e-3)
    logged = _card_eps_mse()
    assert logged == pytest.approx(0.0105)
    # The card's number is a mean of 20 logged batch means (64 samples each, uniform t) of the weights being
    # trained; 96 stratified samples of the exported EMA weights must land within half of it either way
    # (measured: 0.0107).
    assert 0.5 * logged <= float(np.mean(losses)) <= 1.5 * logged, losses


# ---- registration --------------------------------------------------------------------------------------------------
def test_inspect_nodes_are_registered_output_nodes_with_descriptions_and_tooltips():
    registry = Registry()
    registry.add_all(core_nodes())
    for name in INSPECT_NODES:
        info = registry.object_info(name)[name]
        assert info["category"] == "sampling/inspect" and info["output_node"] is True and info["description"]
        for section in ("required", "optional"):
            for input_name, schema in info["input"].get(section, {}).items():
                assert len(schema) == 2 and schema[1].get("tooltip"), f"{name}.{input_name} has no tooltip"
    ksampler = list(registry.object_info("KSampler")["KSampler"]["input"]["required"])
    timeline = registry.object_info("DenoisingTimeline")["DenoisingTimeline"]["input"]["required"]
    assert list(timeline) == [*ksampler, "vae"]
    assert registry.object_info("DenoisingTimeline")["DenoisingTimeline"]["output"] == [
        "LATENT", "IMAGE", "IMAGE", "IMAGE"]
    assert registry.object_info("TrainingStep")["TrainingStep"]["output"] == ["IMAGE", "FLOAT"]
