"""Flux ControlNets (diffusion/controlnet_flux.py): a tiny random file in XLabs' key layout loads through
load_control_file and the ControlNetLoader node, its residuals reach the tiny Flux model's double blocks and change
the sampled latent, strength 0 is bit for bit no control, the start/end window is respected, and the layouts not
supported (InstantX / union, MistoLine) or unknown are refused with a clear error."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from diffusion.checkpoint import CheckpointMismatch, UnknownCheckpoint
from diffusion.controlnet import (
    HINT_COMPRESSION,
    AppliedControl,
    ControlNetError,
    ControlResiduals,
    load_control_file,
)
from diffusion.controlnet_flux import (
    MAIN_DOUBLE_BLOCKS,
    MAIN_SINGLE_BLOCKS,
    FluxControlNet,
    FluxControlNetConfig,
    FluxControlNetModel,
    LoadedFluxControlNet,
    instantx_names,
)
from diffusion.flow_sampling import FluxSampling
from diffusion.flux import Flux, patchify
from diffusion.guidance import GuidedDenoiser, prepare_conditioning
from diffusion.memory import ModelManager
from diffusion.model_sampling import Denoiser
from diffusion.noise import initial_noise
from diffusion.sampling_pipeline import sample_latent
from diffusion.schedules import scheduler_sigmas
from diffusion.values import CondEntry, Conditioning
from nodes.context import RunContext
from server.compose import build_registry, build_services
from server.config import ServerConfig
from server.engine.cache import OutputCache, walk_sizeof
from server.engine.executor import Executor
from server.engine.graph import validate_prompt
from server.paths import ServerFolders
from tests.diffusion.tiny_flow_models import TEXT_WIDTH, TINY_FLUX, _randomize, write_tiny_flux_parts

# XLabs' released nets: the trunk's widths, 2 double blocks, no single blocks, guidance_in.
TINY_XLABS = FluxControlNetConfig(flux=dataclasses.replace(TINY_FLUX, depth=2, depth_single_blocks=0))
SAMPLING = FluxSampling()
LATENT = 8  # 8x8 latent: 64x64 hint pixels


def random_flux_controlnet(config: FluxControlNetConfig = TINY_XLABS, seed: int = 3) -> FluxControlNetModel:
    net = FluxControlNetModel(config).eval()
    _randomize(net, seed)
    return net


def write_flux_controlnet(path: Path, net: FluxControlNetModel) -> Path:
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    return path


@pytest.fixture(scope="module")
def flux() -> Flux:
    model = Flux(TINY_FLUX).eval()
    _randomize(model, 0)
    return model


@pytest.fixture(scope="module")
def control_net(tmp_path_factory) -> FluxControlNet:
    path = write_flux_controlnet(tmp_path_factory.mktemp("fcn") / "flux-canny-tiny.safetensors",
                                 random_flux_controlnet())
    loaded = load_control_file(path)
    assert isinstance(loaded, LoadedFluxControlNet)
    return FluxControlNet(model=loaded.model, name="tiny", owner=loaded)


def _hint() -> torch.Tensor:
    """[1, 3, 64, 64]: a white square outline in the top-left quarter."""
    hint = torch.zeros(1, 3, 8 * LATENT, 8 * LATENT)
    hint[..., 4:28, 4:6] = hint[..., 4:28, 26:28] = hint[..., 4:6, 4:28] = hint[..., 26:28, 4:28] = 1.0
    return hint


def _entry(seed: int, control: AppliedControl | None) -> CondEntry:
    gen = torch.Generator().manual_seed(seed)
    return CondEntry(cross_attn=torch.randn(1, 5, TEXT_WIDTH, generator=gen),
                     pooled=torch.randn(1, TEXT_WIDTH, generator=gen), control=control)


def _extra_conds(entry: CondEntry, latent: torch.Tensor) -> dict:
    return {"y": entry.pooled, "guidance": torch.tensor([3.5])}


def _with(control: AppliedControl | None) -> tuple[Conditioning, Conditioning]:
    return Conditioning((_entry(1, control),)), Conditioning((_entry(2, control),))


def _sample(flux: Flux, positive: Conditioning, negative: Conditioning) -> torch.Tensor:
    shape = (1, 16, LATENT, LATENT)
    with torch.inference_mode():
        return sample_latent(apply_model=flux, sampling=SAMPLING, latent=torch.zeros(shape),
                             noise=initial_noise(shape, 4), sigmas=scheduler_sigmas(SAMPLING, "simple", 3),
                             positive=positive, negative=negative, cfg=2.0, sampler_name="euler", seed=4,
                             extra_conds=_extra_conds)


def test_the_file_loads_with_its_exact_weights(tmp_path):
    net = random_flux_controlnet(seed=5)
    loaded = load_control_file(write_flux_controlnet(tmp_path / "xlabs.safetensors", net))
    assert isinstance(loaded, LoadedFluxControlNet) and loaded.config == TINY_XLABS
    expected = net.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in loaded.model.state_dict().items())
    assert loaded.model.state_dict().keys() == expected.keys()


def test_residuals_are_cycled_to_the_released_depths():
    net = random_flux_controlnet()
    with_single = random_flux_controlnet(dataclasses.replace(
        TINY_XLABS, flux=dataclasses.replace(TINY_XLABS.flux, depth_single_blocks=3)))
    gen = torch.Generator().manual_seed(0)
    x, context, y = (torch.randn(1, 16, 4, 6, generator=gen), torch.randn(1, 5, TEXT_WIDTH, generator=gen),
                     torch.randn(1, TEXT_WIDTH, generator=gen))
    with torch.inference_mode():
        out = net(x, torch.rand(1, 3, 32, 48), torch.tensor([0.7]), context, y, torch.tensor([3.5]))
        both = with_single(x, torch.rand(1, 3, 32, 48), torch.tensor([0.7]), context, y, torch.tensor([3.5]))
    assert len(out.input) == MAIN_DOUBLE_BLOCKS and out.output == () and out.middle == ()
    assert out.input[0].shape == (1, 2 * 3, TINY_FLUX.hidden_size)
    assert out.input[2] is out.input[0] and out.input[3] is out.input[1] and out.input[18] is out.input[0]
    assert not torch.equal(out.input[0], out.input[1])
    assert len(both.output) == MAIN_SINGLE_BLOCKS and both.output[3] is both.output[0]


def test_the_control_changes_the_sampled_latent(flux, control_net):
    plain = _sample(flux, *_with(None))
    controlled = _sample(flux, *_with(AppliedControl(net=control_net, hint=_hint())))
    blank = _sample(flux, *_with(AppliedControl(net=control_net, hint=torch.zeros(1, 3, 64, 64))))
    assert torch.isfinite(controlled).all()
    assert (controlled - plain).abs().max() > 1e-2
    assert (controlled - blank).abs().max() > 1e-3  # the hint itself matters, not only the net


def test_strength_zero_is_bit_for_bit_no_control(flux, control_net):
    plain = _sample(flux, *_with(None))
    zero = _sample(flux, *_with(AppliedControl(net=control_net, hint=_hint(), strength=0.0)))
    assert torch.equal(plain, zero)


def test_outside_start_end_percent_the_control_does_nothing(flux, control_net):
    calls: list[int] = []
    hook = control_net.model.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    try:
        early = AppliedControl(net=control_net, hint=_hint(), start_percent=0.0, end_percent=0.5)
        x = torch.randn(1, 16, LATENT, LATENT, generator=torch.Generator().manual_seed(9))
        with torch.inference_mode():
            def guided(pos: Conditioning, neg: Conditioning) -> GuidedDenoiser:
                entries = prepare_conditioning(pos, neg, latent=x, sampling=SAMPLING, extra_conds=_extra_conds)
                return GuidedDenoiser(denoiser=Denoiser(apply_model=flux, sampling=SAMPLING), entries=entries,
                                      cfg=2.0)

            inside, outside = 0.99, SAMPLING.percent_to_sigma(0.5) * 0.9
            plain, controlled = guided(*_with(None)), guided(*_with(early))
            assert torch.equal(controlled(x, torch.tensor([outside])), plain(x, torch.tensor([outside])))
            assert calls == []
            assert not torch.allclose(controlled(x, torch.tensor([inside])), plain(x, torch.tensor([inside])))
            assert calls == [2]  # positive and negative share the control: one batched call
    finally:
        hook.remove()


def test_a_flux_controlnet_on_an_sd_model_is_refused(control_net):
    prepared = AppliedControl(net=control_net, hint=_hint()).prepared(SAMPLING)  # SD inputs: 4 channels, no y
    with pytest.raises(ControlNetError, match="is for a Flux model"):
        prepared(torch.zeros(2, 4, LATENT, LATENT), torch.tensor([0.5, 0.5]), {"context": torch.zeros(2, 7, 768)}, 2)


def _partial_instantx_keys() -> dict[str, torch.Tensor]:
    return {"controlnet_x_embedder.weight": torch.zeros(8, 64), "controlnet_blocks.0.weight": torch.zeros(8, 8),
            "controlnet_single_blocks.0.weight": torch.zeros(8, 8),
            "transformer_blocks.0.attn.to_q.weight": torch.zeros(8, 8),
            "single_transformer_blocks.0.proj_out.weight": torch.zeros(8, 8)}


@pytest.mark.parametrize("tensors, message", [
    (_partial_instantx_keys(), "InstantX Flux ControlNet without img_in.weight"),
    ({"controlnet_blocks.0.linear.weight": torch.zeros(4, 4)}, "MistoLine"),
    ({"controlnet_blocks.0.weight": torch.zeros(4, 4), "something.else": torch.zeros(2)},
     "nor a Flux ControlNet"),
])
def test_layouts_not_supported_or_unknown_are_refused_clearly(tmp_path, tensors, message):
    path = tmp_path / "cn.safetensors"
    save_file(tensors, path)
    with pytest.raises(UnknownCheckpoint, match=message):
        load_control_file(path)


def test_a_stray_tensor_is_named(tmp_path):
    sd = {k: v.contiguous() for k, v in random_flux_controlnet().state_dict().items()}
    sd["controlnet_blocks.0.extra"] = torch.zeros(3)
    path = tmp_path / "stray.safetensors"
    save_file(sd, path)
    with pytest.raises(CheckpointMismatch, match="controlnet_blocks.0.extra"):
        load_control_file(path)


# ---- through the nodes ------------------------------------------------------------------------------------------


def _tensor_bytes(value):
    if isinstance(value, torch.Tensor):
        return value.nelement() * value.element_size(), 0
    return None


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    config = ServerConfig(base_dir=tmp_path_factory.mktemp("flux_cn"), load_custom_nodes=False,
                          bundled_models_dir=None)
    parts = write_tiny_flux_parts(tmp_path_factory.mktemp("parts"))
    for folder, path in (("diffusion_models", parts.flux_path), ("vae", parts.vae_path),
                         ("text_encoders", parts.clip_l_path), ("text_encoders", parts.t5_path)):
        (config.models_dir / folder).mkdir(parents=True, exist_ok=True)
        (config.models_dir / folder / path.name).write_bytes(path.read_bytes())
    (config.models_dir / "controlnet").mkdir(parents=True, exist_ok=True)
    write_flux_controlnet(config.models_dir / "controlnet" / "flux-canny-controlnet-tiny.safetensors",
                          random_flux_controlnet())
    write_instantx(config.models_dir / "controlnet" / "flux-union-tiny.safetensors", random_instantx())
    folders = ServerFolders.from_config(config)
    folders.create_directories()
    hint = np.zeros((64, 64, 3), dtype=np.uint8)
    hint[8:40, 8:40] = 255
    Image.fromarray(hint).save(config.input_dir / "square.png")
    registry, _ = build_registry(config, folders)
    services = build_services(config, folders, models=ModelManager(torch.device("cpu")))
    executor = Executor(registry, OutputCache(cpu_budget=1 << 30, gpu_budget=0, sizeof=walk_sizeof(_tensor_bytes)),
                        functools.partial(RunContext, services=services))

    def run(prompt: dict, *, fails: bool = False) -> np.ndarray | str:
        outcome = executor.execute(validate_prompt(prompt, registry), prompt_id="p")
        if fails:
            assert outcome.status != "success"
            return str(outcome.error)
        assert outcome.status == "success", outcome.error
        image = outcome.outputs["9"]["images"][0]
        return np.asarray(Image.open(config.output_dir / image["subfolder"] / image["filename"]).convert("RGB"))

    return run


def _prompt(strength: float | None, end_percent: float = 1.0) -> dict:
    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "tiny-flux1-dev.safetensors",
                                                     "weight_dtype": "default"}},
        "2": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "tiny-clip_l.safetensors",
                                                         "clip_name2": "tiny-t5xxl_fp16.safetensors", "type": "flux"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "tiny-ae.safetensors"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox", "clip": ["2", 0]}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 0]}},
        "7": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "8": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 3, "cfg": 1.0, "sampler_name": "euler",
                                                   "scheduler": "simple", "denoise": 1.0, "model": ["1", 0],
                                                   "positive": ["4", 0], "negative": ["6", 0],
                                                   "latent_image": ["7", 0]}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["3", 0]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "fluxcn"}},
    }
    if strength is not None:
        prompt["11"] = {"class_type": "ControlNetLoader",
                        "inputs": {"control_net_name": "flux-canny-controlnet-tiny.safetensors"}}
        prompt["12"] = {"class_type": "LoadImage", "inputs": {"image": "square.png"}}
        prompt["13"] = {"class_type": "ControlNetApplyAdvanced",
                        "inputs": {"positive": ["4", 0], "negative": ["6", 0], "control_net": ["11", 0],
                                   "image": ["12", 0], "strength": strength, "start_percent": 0.0,
                                   "end_percent": end_percent, "vae": ["3", 0]}}
        prompt["8"]["inputs"]["positive"] = ["13", 0]
        prompt["8"]["inputs"]["negative"] = ["13", 1]
    return prompt


def test_controlnet_loader_and_apply_change_the_flux_image(engine):
    plain = engine(_prompt(None))
    controlled = engine(_prompt(1.0))
    assert not np.array_equal(plain, controlled)
    assert np.array_equal(engine(_prompt(0.0)), plain)
    half = engine(_prompt(1.0, end_percent=0.5))  # the control acts in the first steps only
    assert not np.array_equal(half, plain) and not np.array_equal(half, controlled)


def test_flux_adds_the_residuals_after_their_blocks_to_the_image_tokens(flux):
    """control["input"][i] after double block i, control["output"][i] after single block i on the image part only:
    the same as block patches adding them there."""
    gen = torch.Generator().manual_seed(2)
    x, context, y = (torch.randn(1, 16, 4, 4, generator=gen), torch.randn(1, 5, TEXT_WIDTH, generator=gen),
                     torch.randn(1, TEXT_WIDTH, generator=gen))
    tokens = 4  # 2x2 patches
    double, single = torch.randn(1, tokens, 64, generator=gen), torch.randn(1, tokens, 64, generator=gen)

    def add_double(args: dict, extra: dict) -> dict:
        out = extra["original_block"](args)
        return {"img": out["img"] + double, "txt": out["txt"]}

    def add_single(args: dict, extra: dict) -> dict:
        joint = extra["original_block"](args)["img"]
        return {"img": torch.cat((joint[:, :-tokens], joint[:, -tokens:] + single), dim=1)}

    patches = {"patches_replace": {"dit": {("double_block", 0): add_double, ("single_block", 1): add_single}}}
    with torch.inference_mode():
        patched = flux(x, torch.tensor([0.6]), context, y, torch.tensor([3.5]), transformer_options=patches)
        controlled = flux(x, torch.tensor([0.6]), context, y, torch.tensor([3.5]),
                          control=ControlResiduals(input=(double,) * MAIN_DOUBLE_BLOCKS,
                                                   output=(None, single, *(None,) * 36)))
        plain = flux(x, torch.tensor([0.6]), context, y, torch.tensor([3.5]))
    assert torch.allclose(controlled, patched, atol=1e-5)
    assert not torch.allclose(controlled, plain, atol=1e-3)


# ---- InstantX / union layout (diffusers' FluxControlNetModel) ----------------------------------------------------

UNION_MODES = 10
TINY_INSTANTX = FluxControlNetConfig(flux=dataclasses.replace(TINY_FLUX, depth=2, depth_single_blocks=2),
                                     latent_input=True)
TINY_UNION = dataclasses.replace(TINY_INSTANTX, union_modes=UNION_MODES)


def _fake_vae(pixels: torch.Tensor) -> torch.Tensor:
    """A stand-in VAE encoder: [B, 3, 8h, 8w] -> [B, 16, h, w] raw latents (deterministic, hint-dependent)."""
    pooled = torch.nn.functional.avg_pool2d(pixels * 2.0 - 1.0, HINT_COMPRESSION)
    return torch.cat([pooled * (1 + i / 4) for i in range(6)], dim=1)[:, :16]


def random_instantx(config: FluxControlNetConfig = TINY_UNION, seed: int = 7) -> FluxControlNetModel:
    net = FluxControlNetModel(config).eval()
    _randomize(net, seed)
    return net


def instantx_tensors(net: FluxControlNetModel) -> dict[str, torch.Tensor]:
    """Our module's weights in diffusers' InstantX key layout (the fused layers split back into q, k, v, MLP)."""
    ours = net.state_dict()
    cfg = net.config.flux
    counting = {f"transformer_blocks.{i}.x": () for i in range(cfg.depth)}
    counting.update({f"single_transformer_blocks.{i}.x": () for i in range(cfg.depth_single_blocks)})
    out: dict[str, torch.Tensor] = {}
    renamed: set[str] = set()
    for name, theirs in instantx_names(counting).items():
        if name not in ours:
            continue
        dim = cfg.hidden_size
        sizes = {1: [ours[name].shape[0]], 3: [dim] * 3, 4: [dim, dim, dim, cfg.mlp_hidden]}[len(theirs)]
        for key, part in zip(theirs, torch.split(ours[name], sizes)):
            out[key] = part.contiguous()
        renamed.add(name)
    out.update({k: v.contiguous() for k, v in ours.items() if k not in renamed})
    return out


def write_instantx(path: Path, net: FluxControlNetModel) -> Path:
    save_file(instantx_tensors(net), path)
    return path


@pytest.fixture(scope="module")
def union_net(tmp_path_factory) -> FluxControlNet:
    path = write_instantx(tmp_path_factory.mktemp("ix") / "flux-union-tiny.safetensors", random_instantx())
    loaded = load_control_file(path)
    assert isinstance(loaded, LoadedFluxControlNet)
    return FluxControlNet(model=loaded.model, name="union", owner=loaded).with_vae(_fake_vae, HINT_COMPRESSION)


def test_an_instantx_file_loads_renamed_with_its_exact_weights(tmp_path):
    for config in (TINY_INSTANTX, TINY_UNION):
        net = random_instantx(config, seed=11)
        tensors = instantx_tensors(net)
        assert "transformer_blocks.1.attn.add_k_proj.weight" in tensors
        assert "single_transformer_blocks.0.proj_mlp.bias" in tensors
        assert "double_blocks.0.img_mlp.0.weight" not in tensors
        loaded = load_control_file(write_instantx(tmp_path / "ix.safetensors", net))
        assert isinstance(loaded, LoadedFluxControlNet) and loaded.config == config
        expected = net.state_dict()
        assert loaded.model.state_dict().keys() == expected.keys()
        assert all(torch.equal(v, expected[k]) for k, v in loaded.model.state_dict().items())


def test_instantx_residuals_equal_diffusers_flux_controlnet(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    cfg = TINY_UNION.flux
    reference = diffusers.FluxControlNetModel(
        patch_size=1, in_channels=cfg.in_channels * 4, num_layers=cfg.depth, num_single_layers=cfg.depth_single_blocks,
        attention_head_dim=cfg.head_dim, num_attention_heads=cfg.num_heads, joint_attention_dim=cfg.context_in_dim,
        pooled_projection_dim=cfg.vec_in_dim, guidance_embeds=True, axes_dims_rope=list(cfg.rope_axes),
        num_mode=UNION_MODES).eval()
    _randomize(reference, 13)
    with torch.no_grad():  # RMSNorm scales near 1 (_randomize takes 1-D weights for biases)
        for name, p in reference.named_parameters():
            if ".norm_" in name:
                p.copy_(1.0 + 0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))))
    path = tmp_path / "diffusers-union.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, path)
    loaded = load_control_file(path)
    assert isinstance(loaded, LoadedFluxControlNet) and loaded.config == TINY_UNION

    gen = torch.Generator().manual_seed(0)
    x, hint = torch.randn(1, 16, 4, 6, generator=gen), torch.randn(1, 16, 4, 6, generator=gen)
    context, y = torch.randn(1, 5, TEXT_WIDTH, generator=gen), torch.randn(1, TEXT_WIDTH, generator=gen)
    tokens, ids = patchify(x)
    with torch.inference_mode():
        ours = loaded.model(x, hint, torch.tensor([0.7]), context, y, torch.tensor([3.5]), control_type=(2,))
        theirs = reference(hidden_states=tokens, controlnet_cond=patchify(hint)[0], controlnet_mode=torch.tensor([[2]]),
                           encoder_hidden_states=context, pooled_projections=y, timestep=torch.tensor([0.7]),
                           img_ids=ids[0], txt_ids=torch.zeros(5, 3), guidance=torch.tensor([3.5]), return_dict=False)
    double, single = theirs
    assert len(ours.input) == MAIN_DOUBLE_BLOCKS and len(ours.output) == MAIN_SINGLE_BLOCKS
    # InstantX residuals are repeated in place: 10 x c0 then 9 x c1; 19 x s0 then 19 x s1.
    for i, expected in ((0, double[0]), (9, double[0]), (10, double[1]), (18, double[1])):
        assert torch.allclose(ours.input[i], expected, atol=1e-4), i
    for i, expected in ((0, single[0]), (18, single[0]), (19, single[1]), (37, single[1])):
        assert torch.allclose(ours.output[i], expected, atol=1e-4), i
    assert (ours.input[0] - double[0]).abs().max() < 1e-4 < ours.input[0].abs().max()


def test_the_union_mode_embedding_goes_before_the_text():
    net = random_instantx()
    gen = torch.Generator().manual_seed(1)
    args = (torch.randn(1, 16, 4, 4, generator=gen), torch.randn(1, 16, 4, 4, generator=gen), torch.tensor([0.5]),
            torch.randn(1, 5, TEXT_WIDTH, generator=gen), torch.randn(1, TEXT_WIDTH, generator=gen),
            torch.tensor([3.5]))
    with torch.inference_mode():
        auto, canny, depth = (net(*args, control_type=t).input[0] for t in ((), (3,), (1,)))
        with pytest.raises(ControlNetError, match="out of range"):
            net(*args, control_type=(UNION_MODES,))
    assert not torch.allclose(auto, canny) and not torch.allclose(canny, depth)


def test_instantx_control_changes_the_sampled_latent(flux, union_net):
    plain = _sample(flux, *_with(None))
    controlled = _sample(flux, *_with(AppliedControl(net=union_net, hint=_hint())))
    blank = _sample(flux, *_with(AppliedControl(net=union_net, hint=torch.zeros(1, 3, 64, 64))))
    canny = _sample(flux, *_with(AppliedControl(net=union_net.with_union_type((3,)), hint=_hint())))
    assert torch.isfinite(controlled).all()
    assert (controlled - plain).abs().max() > 1e-2
    assert (controlled - blank).abs().max() > 1e-3
    assert (canny - controlled).abs().max() > 1e-4  # the union mode matters
    zero = _sample(flux, *_with(AppliedControl(net=union_net, hint=_hint(), strength=0.0)))
    assert torch.equal(plain, zero)


def test_an_instantx_net_without_a_vae_says_so(flux, union_net):
    bare = dataclasses.replace(union_net, encode_hint=None)
    prepared = AppliedControl(net=bare, hint=_hint()).prepared(SAMPLING)
    entry = _entry(1, None)
    with pytest.raises(ControlNetError, match="no VAE was given"):
        prepared(torch.zeros(1, 16, LATENT, LATENT), torch.tensor([0.5]),
                 {"context": entry.cross_attn, "y": entry.pooled, "guidance": torch.tensor([3.5])}, 1)


def test_instantx_inpainting_nets_are_refused_clearly(tmp_path):
    tensors = instantx_tensors(random_instantx(TINY_INSTANTX))
    tensors["controlnet_x_embedder.weight"] = torch.zeros(64, 17 * 4)
    save_file(tensors, tmp_path / "inpaint.safetensors")
    with pytest.raises(UnknownCheckpoint, match="17-channel latent hint"):
        load_control_file(tmp_path / "inpaint.safetensors")


def _union_prompt(strength: float, union_type: str = "canny/lineart/anime_lineart/mlsd", vae: bool = True) -> dict:
    prompt = _prompt(strength)
    prompt["11"]["inputs"]["control_net_name"] = "flux-union-tiny.safetensors"
    prompt["14"] = {"class_type": "SetUnionControlNetType", "inputs": {"control_net": ["11", 0], "type": union_type}}
    prompt["13"]["inputs"]["control_net"] = ["14", 0]
    if not vae:
        del prompt["13"]["inputs"]["vae"]
    return prompt


def test_an_instantx_union_net_through_the_nodes(engine):
    plain = engine(_prompt(None))
    canny = engine(_union_prompt(1.0))
    assert not np.array_equal(plain, canny)
    assert not np.array_equal(engine(_union_prompt(1.0, union_type="depth")), canny)
    assert np.array_equal(engine(_union_prompt(0.0)), plain)
    assert "no VAE was given" in engine(_union_prompt(1.0, vae=False), fails=True)
