"""Custom sampling as graphs through the real executor on a tiny random SD1-layout checkpoint: SamplerCustomAdvanced
(RandomNoise + CFGGuider + KSamplerSelect + BasicScheduler) and SamplerCustom give KSampler's latents bit for bit
for every sampler, SplitSigmas halves equal one run, and the NOISE / GUIDER / SAMPLER / SIGMAS nodes behave as
ComfyUI's."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import pytest
import torch

from diffusion import sigma_schedules
from diffusion.memory import ModelManager
from diffusion.samplers import SAMPLER_NAMES
from diffusion.model_sampling import DiscreteSampling
from diffusion.schedules import DISCARD_PENULTIMATE_SIGMA_SAMPLERS, sampler_sigmas
from nodes import custom_sampling, guiders, sampler_options, schedulers, sigmas
from nodes.catalog import core_nodes
from nodes.context import RunContext
from nodes.inputs import Link, String
from nodes.registry import Node, Result, spec_of
from server.compose import build_registry, build_services
from server.config import ServerConfig
from server.engine.cache import OutputCache, walk_sizeof
from server.engine.executor import Executor
from server.engine.graph import validate_prompt
from server.messages import EventRecorder
from server.paths import ServerFolders
from tests.diffusion.tiny_checkpoint import write_tiny_sd1_checkpoint

MODULES = (custom_sampling, guiders, schedulers, sigmas, sampler_options)
SAMPLING = DiscreteSampling.linear()
CAPTURED: dict[str, object] = {}


class Capture(Node):
    """Test-only output node: keeps the value it is given under `key` (always runs)."""

    output_node = True
    always_run = True
    key = String("")
    value = Link("*")

    @classmethod
    def run(cls, ctx, key, value):
        CAPTURED[key] = value
        return Result(ui={})


def _tensor_bytes(value):
    if isinstance(value, torch.Tensor):
        return value.nelement() * value.element_size(), 0
    return None


@dataclass
class Engine:
    executor: Executor
    registry: object

    def run(self, prompt: dict, *, ok: bool = True):
        events = EventRecorder()
        CAPTURED.clear()
        outcome = self.executor.execute(validate_prompt(prompt, self.registry), prompt_id="p", events=events)
        if ok:
            assert outcome.status == "success", outcome.error
        return outcome, events, dict(CAPTURED)


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Engine:
    base = tmp_path_factory.mktemp("chisel")
    config = ServerConfig(base_dir=base, load_custom_nodes=False)
    (config.models_dir / "checkpoints").mkdir(parents=True)
    write_tiny_sd1_checkpoint(config.models_dir / "checkpoints" / "tiny.safetensors")
    folders = ServerFolders.from_config(config)
    folders.create_directories()
    registry, _ = build_registry(config, folders, nodes=[*core_nodes(), Capture])
    services = build_services(config, folders, models=ModelManager(torch.device("cpu")))
    cache = OutputCache(cpu_budget=1 << 30, gpu_budget=0, sizeof=walk_sizeof(_tensor_bytes))
    return Engine(Executor(registry, cache, functools.partial(RunContext, services=services)), registry)


def graph(*, seed: int = 3, steps: int = 3, cfg: float = 2.5, sampler: str = "euler", scheduler: str = "normal",
          batch: int = 1, ksampler: bool = True) -> dict:
    """Checkpoint, prompts and an empty latent; KSampler "3" (captured as "ksampler") and the four custom-sampling
    inputs with the same settings: RandomNoise "20", CFGGuider "21", KSamplerSelect "22", BasicScheduler "23"."""
    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": batch}},
        "20": {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}},
        "21": {"class_type": "CFGGuider", "inputs": {"model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                                                    "cfg": cfg}},
        "22": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": sampler}},
        "23": {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": scheduler, "steps": steps,
                                                         "denoise": 1.0}},
    }
    if ksampler:
        prompt["3"] = {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler, "scheduler": scheduler, "denoise": 1.0,
            "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}}
        prompt["90"] = {"class_type": "Capture", "inputs": {"key": "ksampler", "value": ["3", 0]}}
    return prompt


def advanced(prompt: dict, node: str = "30", *, noise="20", guider="21", sampler="22", sigmas=("23", 0),
             latent=("5", 0), key: str = "custom") -> dict:
    """Add a SamplerCustomAdvanced and capture its two outputs as `key` and `key`-denoised."""
    prompt[node] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": [noise, 0], "guider": [guider, 0], "sampler": [sampler, 0], "sigmas": list(sigmas),
        "latent_image": list(latent)}}
    prompt[f"{node}c"] = {"class_type": "Capture", "inputs": {"key": key, "value": [node, 0]}}
    prompt[f"{node}d"] = {"class_type": "Capture", "inputs": {"key": f"{key}-denoised", "value": [node, 1]}}
    return prompt


def manual_sigmas(values: torch.Tensor) -> dict:
    return {"class_type": "ManualSigmas", "inputs": {"sigmas": ", ".join(repr(float(v)) for v in values)}}


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_sampler_custom_advanced_gives_ksamplers_latent_bit_for_bit(engine, name):
    prompt = advanced(graph(sampler=name, seed=5))
    prompt["24"] = {"class_type": "SamplerCustom", "inputs": {
        "model": ["4", 0], "add_noise": True, "noise_seed": 5, "cfg": 2.5, "positive": ["6", 0],
        "negative": ["7", 0], "sampler": ["22", 0], "sigmas": ["23", 0], "latent_image": ["5", 0]}}
    prompt["24c"] = {"class_type": "Capture", "inputs": {"key": "sampler-custom", "value": ["24", 0]}}
    if name in DISCARD_PENULTIMATE_SIGMA_SAMPLERS:
        # KSampler drops these samplers' penultimate sigma; BasicScheduler does not know the sampler, so in ComfyUI
        # too the graphs differ unless they are given KSampler's sigmas.
        ksampler_sigmas = sampler_sigmas(SAMPLING, "normal", 3, sampler_name=name)
        assert not torch.equal(sigma_schedules.basic(SAMPLING, "normal", 3), ksampler_sigmas)
        prompt["23"] = manual_sigmas(ksampler_sigmas)
    _, _, out = engine.run(prompt)
    expected = out["ksampler"].samples
    assert torch.equal(out["custom"].samples, expected)
    assert torch.equal(out["sampler-custom"].samples, expected)


def test_batches_keep_per_image_noise_as_ksampler(engine):
    _, _, out = engine.run(advanced(graph(sampler="euler_ancestral", batch=3, seed=9)))
    assert out["custom"].samples.shape[0] == 3
    assert torch.equal(out["custom"].samples, out["ksampler"].samples)


def test_split_sigmas_halves_in_two_samplers_equal_one_run(engine):
    for name in ("euler", "heun", "dpm_2"):
        prompt = advanced(graph(sampler=name, steps=4, seed=12, ksampler=False), key="whole")
        prompt["40"] = {"class_type": "SplitSigmas", "inputs": {"sigmas": ["23", 0], "step": 2}}
        prompt["41"] = {"class_type": "DisableNoise", "inputs": {}}
        advanced(prompt, "42", sigmas=("40", 0), key="high")
        advanced(prompt, "43", noise="41", sigmas=("40", 1), latent=("42", 0), key="low")
        _, _, out = engine.run(prompt)
        whole, low = out["whole"].samples, out["low"].samples
        # The same sigmas in two runs: equal up to the latent scale's round trip between them.
        torch.testing.assert_close(low, whole, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(out["high"].samples, whole, atol=1e-2)


def test_denoised_output_is_the_last_steps_prediction(engine):
    prompt = advanced(graph(steps=4, ksampler=False, sampler="lcm"))
    prompt["40"] = {"class_type": "SplitSigmas", "inputs": {"sigmas": ["23", 0], "step": 2}}
    advanced(prompt, "42", sigmas=("40", 0), key="high")
    _, _, out = engine.run(prompt)
    # LCM's last step to sigma 0 returns its prediction itself; stopping at sigma > 0 adds noise to it.
    assert torch.equal(out["custom-denoised"].samples, out["custom"].samples)
    assert not torch.allclose(out["high-denoised"].samples, out["high"].samples, atol=1e-3)


def test_no_sigmas_return_the_latent_unchanged_twice(engine):
    prompt = advanced(graph(ksampler=False))
    prompt["23"]["inputs"]["denoise"] = 0.0
    prompt["51"] = {"class_type": "Capture", "inputs": {"key": "input", "value": ["5", 0]}}
    _, _, out = engine.run(prompt)
    assert out["custom"] is out["input"] and out["custom-denoised"] is out["input"]


def test_custom_sampling_reports_progress_and_previews(engine):
    _, events, _ = engine.run(advanced(graph(steps=3, ksampler=False)))
    progress = [i.data for i in events.items if i.event == "progress" and i.data["node"] == "30"]
    assert [p["value"] for p in progress] == [1, 2, 3] and all(p["max"] == 3 for p in progress)
    previews = [i for i in events.items if i.kind == "preview"]
    assert previews and previews[-1].data["node_id"] == "30"


def test_sampler_custom_without_noise_uses_zeros_and_keeps_its_seed_for_step_noise(engine):
    prompt = graph(ksampler=False, sampler="euler_ancestral")
    for node, seed in (("24", 1), ("25", 2)):
        prompt[node] = {"class_type": "SamplerCustom", "inputs": {
            "model": ["4", 0], "add_noise": False, "noise_seed": seed, "cfg": 2.5, "positive": ["6", 0],
            "negative": ["7", 0], "sampler": ["22", 0], "sigmas": ["23", 0], "latent_image": ["5", 0]}}
        prompt[f"{node}c"] = {"class_type": "Capture", "inputs": {"key": node, "value": [node, 0]}}
    prompt["26"] = {"class_type": "DisableNoise", "inputs": {}}
    prompt["27"] = {"class_type": "Capture", "inputs": {"key": "zero", "value": ["26", 0]}}
    _, _, out = engine.run(prompt)
    assert not torch.equal(out["24"].samples, out["25"].samples)  # the seed still drives the ancestral noise
    assert out["zero"].seed == 0


def test_add_noise_noises_the_latent_to_the_sigmas_span(engine):
    prompt = graph(ksampler=False)
    prompt["50"] = {"class_type": "AddNoise", "inputs": {"model": ["4", 0], "noise": ["20", 0], "sigmas": ["23", 0],
                                                         "latent_image": ["5", 0]}}
    prompt["51"] = {"class_type": "Capture", "inputs": {"key": "noisy", "value": ["50", 0]}}
    prompt["52"] = {"class_type": "Capture", "inputs": {"key": "sigmas", "value": ["23", 0]}}
    _, _, out = engine.run(prompt)
    from diffusion.noise import initial_noise

    sigmas_ = out["sigmas"]
    expected = initial_noise((1, 4, 8, 8), 3) * (sigmas_[0] - sigmas_[-1]).abs() / 0.18215
    torch.testing.assert_close(out["noisy"].samples, expected)


def test_guider_nodes(engine):
    prompt = graph(ksampler=False, cfg=1.0)
    prompt["60"] = {"class_type": "BasicGuider", "inputs": {"model": ["4", 0], "conditioning": ["6", 0]}}
    prompt["61"] = {"class_type": "DualCFGGuider", "inputs": {
        "model": ["4", 0], "cond1": ["6", 0], "cond2": ["7", 0], "negative": ["7", 0], "cfg_conds": 4.0,
        "cfg_cond2_negative": 3.0, "style": "regular"}}
    prompt["62"] = {"class_type": "CFGGuider", "inputs": {"model": ["4", 0], "positive": ["6", 0],
                                                          "negative": ["7", 0], "cfg": 4.0}}
    prompt["63"] = {"class_type": "PerpNegGuider", "inputs": {
        "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "empty_conditioning": ["7", 0], "cfg": 4.0,
        "neg_scale": 1.0}}
    prompt["64"] = {"class_type": "PerpNeg", "inputs": {"model": ["4", 0], "empty_conditioning": ["7", 0],
                                                        "neg_scale": 1.0}}
    prompt["65"] = {"class_type": "CFGGuider", "inputs": {"model": ["64", 0], "positive": ["6", 0],
                                                          "negative": ["7", 0], "cfg": 4.0}}
    prompt["3"] = {"class_type": "KSampler", "inputs": {
        "seed": 3, "steps": 3, "cfg": 4.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
        "model": ["64", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}}
    prompt["3c"] = {"class_type": "Capture", "inputs": {"key": "perpneg-ksampler", "value": ["3", 0]}}
    for node, guider in (("70", "21"), ("71", "60"), ("72", "61"), ("73", "62"), ("74", "63"), ("75", "65")):
        advanced(prompt, node, guider=guider, key=guider)
    _, _, out = engine.run(prompt)
    # BasicGuider: the positive alone, as CFG at scale 1.
    assert torch.equal(out["60"].samples, out["21"].samples)
    # DualCFG with cond2 = the negative, and Perp-Neg with the negative as its empty prompt, are plain CFG.
    torch.testing.assert_close(out["61"].samples, out["62"].samples, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out["63"].samples, out["62"].samples, rtol=1e-4, atol=1e-4)
    # The PerpNeg model patch applies in CFGGuider and in KSampler alike (and differs from plain CFG).
    torch.testing.assert_close(out["65"].samples, out["63"].samples, rtol=1e-4, atol=1e-4)
    assert torch.equal(out["perpneg-ksampler"].samples, out["65"].samples)


def test_perp_neg_with_a_real_empty_prompt_changes_the_result(engine):
    prompt = graph(ksampler=False)
    prompt["8"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}}
    prompt["63"] = {"class_type": "PerpNegGuider", "inputs": {
        "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "empty_conditioning": ["8", 0], "cfg": 2.5,
        "neg_scale": 1.0}}
    advanced(prompt, "70", key="cfg")
    advanced(prompt, "71", guider="63", key="perpneg")
    _, _, out = engine.run(prompt)
    assert not torch.allclose(out["cfg"].samples, out["perpneg"].samples, atol=1e-4)


# ---- SAMPLER nodes ---------------------------------------------------------------------------------------------
def _with_sampler(node: dict, *, key: str = "custom", **graph_kw) -> dict:
    prompt = advanced(graph(**graph_kw), key=key)
    prompt["22"] = node
    return prompt


@pytest.mark.parametrize("node, name", [
    ({"class_type": "SamplerEulerAncestral", "inputs": {"eta": 1.0, "s_noise": 1.0}}, "euler_ancestral"),
    ({"class_type": "SamplerDPMPP_2S_Ancestral", "inputs": {"eta": 1.0, "s_noise": 1.0}}, "dpmpp_2s_ancestral"),
    ({"class_type": "SamplerLMS", "inputs": {"order": 4}}, "lms"),
    ({"class_type": "SamplerDPMPP_SDE", "inputs": {"eta": 1.0, "s_noise": 1.0, "r": 0.5, "noise_device": "cpu"}},
     "dpmpp_sde"),
    ({"class_type": "SamplerDPMPP_2M_SDE", "inputs": {"solver_type": "midpoint", "eta": 1.0, "s_noise": 1.0,
                                                      "noise_device": "gpu"}}, "dpmpp_2m_sde"),
    ({"class_type": "SamplerDPMPP_3M_SDE", "inputs": {"eta": 1.0, "s_noise": 1.0, "noise_device": "cpu"}},
     "dpmpp_3m_sde"),
    ({"class_type": "SamplerDPMAdaptative", "inputs": {
        "order": 3, "rtol": 0.05, "atol": 0.0078, "h_init": 0.05, "pcoeff": 0.0, "icoeff": 1.0, "dcoeff": 0.0,
        "accept_safety": 0.81, "eta": 0.0, "s_noise": 1.0}}, "dpm_adaptive"),
], ids=lambda v: v["class_type"] if isinstance(v, dict) else v)
def test_option_nodes_at_their_defaults_give_the_plain_samplers_latent(engine, node, name):
    _, _, out = engine.run(_with_sampler(node, sampler=name))
    assert torch.equal(out["custom"].samples, out["ksampler"].samples)


def test_option_values_change_the_result(engine):
    base = {"class_type": "SamplerEulerAncestral", "inputs": {"eta": 1.0, "s_noise": 1.0}}
    _, _, plain = engine.run(_with_sampler(base, sampler="euler_ancestral"))
    for change in ({"eta": 0.4}, {"s_noise": 0.5}):
        node = {"class_type": "SamplerEulerAncestral", "inputs": {**base["inputs"], **change}}
        _, _, out = engine.run(_with_sampler(node, ksampler=False))
        assert not torch.equal(out["custom"].samples, plain["custom"].samples), change
    heun = {"class_type": "SamplerDPMPP_2M_SDE", "inputs": {"solver_type": "heun", "eta": 1.0, "s_noise": 1.0,
                                                            "noise_device": "cpu"}}
    _, _, sde = engine.run(_with_sampler(heun, sampler="dpmpp_2m_sde"))
    assert not torch.equal(sde["custom"].samples, sde["ksampler"].samples)


def test_an_option_the_sampler_cannot_honour_fails_the_run_naming_it(engine):
    node = {"class_type": "SamplerDPMAdaptative", "inputs": {
        "order": 3, "rtol": 0.05, "atol": 0.0078, "h_init": 0.05, "pcoeff": 0.5, "icoeff": 1.0, "dcoeff": 0.0,
        "accept_safety": 0.81, "eta": 0.0, "s_noise": 1.0}}
    import inspect

    from diffusion.samplers import sample_dpm_adaptive

    if "pcoeff" in inspect.signature(sample_dpm_adaptive).parameters:
        pytest.skip("dpm_adaptive takes pcoeff now: nothing to refuse")
    outcome, _, _ = engine.run(_with_sampler(node, ksampler=False), ok=False)
    assert outcome.status == "error" and "pcoeff" in str(outcome.error)


def test_lcm_upscale_grows_the_latent(engine):
    node = {"class_type": "SamplerLCMUpscale", "inputs": {"scale_ratio": 1.5, "scale_steps": -1,
                                                          "upscale_method": "bislerp"}}
    _, _, out = engine.run(_with_sampler(node, ksampler=False, steps=4))
    assert out["custom"].samples.shape == (1, 4, 12, 12)


@pytest.mark.parametrize("node, name", [
    ({"class_type": "SamplerER_SDE", "inputs": {"solver_type": "ER-SDE", "max_stage": 3, "eta": 1.0,
                                                "s_noise": 1.0}}, "er_sde"),
    ({"class_type": "SamplerSEEDS2", "inputs": {"solver_type": "phi_1", "eta": 1.0, "s_noise": 1.0, "r": 0.5}},
     "seeds_2"),
    ({"class_type": "SamplerEulerAncestralCFGPP", "inputs": {"eta": 1.0, "s_noise": 1.0}}, "euler_ancestral_cfg_pp"),
    ({"class_type": "SamplerEulerCFGpp", "inputs": {"version": "regular"}}, "euler_cfg_pp"),
    ({"class_type": "SamplerSEEDS2", "inputs": {"solver_type": "phi_2", "eta": 0.0, "s_noise": 1.0, "r": 1.0}},
     "exp_heun_2_x0"),
], ids=lambda v: v["class_type"] if isinstance(v, dict) else v)
def test_option_nodes_of_the_newer_samplers(engine, node, name):
    _, _, out = engine.run(_with_sampler(node, sampler=name))
    assert torch.equal(out["custom"].samples, out["ksampler"].samples)


@pytest.mark.parametrize("use_pece, name", [(False, "sa_solver"), (True, "sa_solver_pece")])
def test_sa_solver_node_at_its_defaults_is_the_tables_sa_solver(engine, use_pece, name):
    node = {"class_type": "SamplerSASolver", "inputs": {
        "model": ["4", 0], "eta": 1.0, "sde_start_percent": 0.2, "sde_end_percent": 0.8, "s_noise": 1.0,
        "predictor_order": 3, "corrector_order": 4, "use_pece": use_pece, "simple_order_2": False}}
    _, _, out = engine.run(_with_sampler(node, sampler=name))
    assert torch.equal(out["custom"].samples, out["ksampler"].samples)
    node["inputs"]["eta"] = 0.0  # the ODE
    _, _, ode = engine.run(_with_sampler(node, ksampler=False))
    assert not torch.equal(ode["custom"].samples, out["custom"].samples)


def test_er_sde_solver_types(engine):
    results = {}
    for solver_type, eta in (("ER-SDE", 1.0), ("Reverse-time SDE", 1.0), ("Reverse-time SDE", 0.0), ("ODE", 1.0)):
        node = {"class_type": "SamplerER_SDE", "inputs": {"solver_type": solver_type, "max_stage": 3, "eta": eta,
                                                          "s_noise": 1.0}}
        _, _, out = engine.run(_with_sampler(node, ksampler=False))
        results[solver_type, eta] = out["custom"].samples
    assert torch.equal(results["Reverse-time SDE", 0.0], results["ODE", 1.0])  # eta 0: the ODE, as in ComfyUI
    assert not torch.equal(results["ER-SDE", 1.0], results["Reverse-time SDE", 1.0])
    assert not torch.equal(results["Reverse-time SDE", 1.0], results["ODE", 1.0])


def test_euler_cfg_pp_alternative_runs(engine):
    node = {"class_type": "SamplerEulerCFGpp", "inputs": {"version": "alternative"}}
    _, _, out = engine.run(_with_sampler(node, ksampler=False, cfg=1.5))
    _, _, regular = engine.run(_with_sampler({**node, "inputs": {"version": "regular"}}, ksampler=False, cfg=1.5))
    assert torch.isfinite(out["custom"].samples).all()
    assert not torch.equal(out["custom"].samples, regular["custom"].samples)


# ---- SIGMAS nodes through the graph ------------------------------------------------------------------------------
def test_scheduler_and_sigma_nodes_run_as_graph_values(engine):
    prompt = graph(ksampler=False)
    nodes = {
        "k": ("KarrasScheduler", {"steps": 5, "sigma_max": 14.614642, "sigma_min": 0.0291675, "rho": 7.0}),
        "e": ("ExponentialScheduler", {"steps": 5, "sigma_max": 14.614642, "sigma_min": 0.0291675}),
        "p": ("PolyexponentialScheduler", {"steps": 5, "sigma_max": 14.614642, "sigma_min": 0.0291675, "rho": 1.0}),
        "v": ("VPScheduler", {"steps": 5, "beta_d": 19.9, "beta_min": 0.1, "eps_s": 0.001}),
        "b": ("BetaSamplingScheduler", {"model": ["4", 0], "steps": 5, "alpha": 0.6, "beta": 0.6}),
        "l": ("LaplaceScheduler", {"steps": 5, "sigma_max": 14.614642, "sigma_min": 0.0291675, "mu": 0.0,
                                   "beta": 0.5}),
        "t": ("SDTurboScheduler", {"model": ["4", 0], "steps": 2, "denoise": 1.0}),
        "a": ("AlignYourStepsScheduler", {"model_type": "SD1", "steps": 5, "denoise": 1.0}),
        "g": ("GITSScheduler", {"coeff": 1.2, "steps": 5, "denoise": 1.0}),
        "o": ("OptimalStepsScheduler", {"model_type": "FLUX", "steps": 5, "denoise": 1.0}),
        "m": ("ManualSigmas", {"sigmas": "3, 2, 1, 0"}),
        "f": ("FlipSigmas", {"sigmas": ["m", 0]}),
        "s": ("SetFirstSigma", {"sigmas": ["m", 0], "sigma": 9.0}),
        "x": ("ExtendIntermediateSigmas", {"sigmas": ["m", 0], "steps": 2, "start_at_sigma": -1.0,
                                           "end_at_sigma": 0.0, "spacing": "linear"}),
        "d": ("SplitSigmasDenoise", {"sigmas": ["m", 0], "denoise": 0.34}),
        "q": ("SamplingPercentToSigma", {"model": ["4", 0], "sampling_percent": 0.0, "return_actual_sigma": True}),
    }
    for node, (kind, inputs) in nodes.items():
        prompt[node] = {"class_type": kind, "inputs": inputs}
        prompt[f"{node}c"] = {"class_type": "Capture", "inputs": {"key": node, "value": [node, 0]}}
    _, _, out = engine.run(prompt)
    for key in "kepvbago":
        assert out[key].ndim == 1 and len(out[key]) == 6 and float(out[key][-1]) == 0.0, key
    assert len(out["l"]) == 5 and len(out["t"]) == 3
    assert out["f"].tolist() == torch.tensor([0.0001, 1.0, 2.0, 3.0]).tolist()
    assert out["s"].tolist() == [9.0, 2.0, 1.0, 0.0]
    assert out["x"].tolist() == [3.0, 2.5, 2.0, 1.5, 1.0, 0.5, 0.0]
    assert out["d"].tolist() == [3.0, 2.0, 1.0]  # high part; the low part is [1, 0]
    assert out["q"] == pytest.approx(14.614641189575195)


def test_a_bad_gits_coefficient_fails_the_run(engine):
    prompt = graph(ksampler=False)
    prompt["23"] = {"class_type": "GITSScheduler", "inputs": {"coeff": 0.83, "steps": 10, "denoise": 1.0}}
    outcome, _, _ = engine.run(advanced(prompt), ok=False)
    assert outcome.status == "error" and "coeff" in str(outcome.error)


def test_schemas_list_the_samplers_and_value_types():
    info = {node.node_type: spec_of(node).info(lambda declared: None) for module in MODULES for node in module.NODES}
    assert len(info) == 42 and all(node in core_nodes() for module in MODULES for node in module.NODES)
    # Schema equality with ComfyUI is tests/nodes/test_object_info_parity.py's; here what is this build's own.
    assert info["KSamplerSelect"]["input"]["required"]["sampler_name"][1]["options"] == list(SAMPLER_NAMES)
    assert info["SamplerCustomAdvanced"]["output_name"] == ["output", "denoised_output"]
    assert info["SplitSigmas"]["output_name"] == ["high_sigmas", "low_sigmas"]
    assert all(entry["description"] == "" for name, entry in info.items() if name != "SamplerSEEDS2")

