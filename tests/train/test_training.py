"""A few-step run of the whole training pipeline on a tiny configuration: it trains, resumes to the same weights,
and exports a file the library detects and loads as SD1."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffusion.checkpoint import load_checkpoint
from diffusion.vae import AutoencoderKL, VAEConfig
from train.config import LATENT_SCALE, Architecture, DiffusionSchedule, RunConfig, VAESchedule
from train.export import export_checkpoint
from train.latents import encode_pool, fold_latent_affine
from train.state import load_state, optimizer_tensors, restore_optimizer, save_state
from train.unet_stage import train_unet
from train.vae_stage import train_vae

TINY = RunConfig(
    seed=0,
    arch=Architecture(image_size=32, text_width=64, text_layers=1, text_intermediate=128, unet_channels=32,
                      unet_mult=(1, 2), unet_transformer_depth=(0, 1), unet_transformer_depth_output=(1, 0),
                      vae_channels=32, vae_mult=(1, 1, 1, 1)),
    vae=VAESchedule(steps=4, batch=2, warmup=2, checkpoint_every=100, refine=((2, 5e-4),)),
    diffusion=DiffusionSchedule(steps=4, batch=4, warmup=2, pool_size=12, checkpoint_every=100, eval_every=0),
)


def _train(run_dir: Path, *, stop_vae: int | None = None, stop_unet: int | None = None):
    if stop_vae is not None:
        assert train_vae(run_dir, TINY, stop_at=stop_vae) is None  # mid main phase
    vae = train_vae(run_dir, TINY)
    vae, pool = encode_pool(run_dir, TINY, vae)
    if stop_unet is not None:
        assert train_unet(run_dir, TINY, vae, pool, stop_at=stop_unet) is None
    return vae, train_unet(run_dir, TINY, vae, pool)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight")
    vae, nets = _train(run_dir)
    return run_dir, vae, nets


def test_a_tiny_run_writes_loss_logs_and_final_weights(straight_run):
    run_dir, _, _ = straight_run
    vae_log = (run_dir / "vae" / "loss.csv").read_text().splitlines()
    unet_log = (run_dir / "unet" / "loss.csv").read_text().splitlines()
    assert vae_log[0].startswith("step,loss") and len(vae_log) >= 2
    assert unet_log[0].startswith("step,loss") and len(unet_log) >= 2
    assert (run_dir / "unet" / "final_ema.safetensors").exists()
    pool = load_file(str(run_dir / "pool.safetensors"))
    assert pool["mean"].shape == (12, 4, 4, 4) and pool["combo"].shape == (12,)


def test_an_interrupted_run_resumes_to_the_same_weights(straight_run, tmp_path):
    run_dir, _, _ = straight_run
    _train(tmp_path, stop_vae=2, stop_unet=2)
    for name in ("vae/final.safetensors", "unet/final_ema.safetensors"):
        a, b = load_file(str(run_dir / name)), load_file(str(tmp_path / name))
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=f"{name}: {key}")


def test_the_export_loads_as_sd1_through_detection(straight_run, tmp_path):
    run_dir, vae, nets = straight_run
    out = tmp_path / "tiny.safetensors"
    checks = export_checkpoint(out, TINY, vae=vae, nets=nets, run_dir=run_dir)
    loaded = load_checkpoint(out)
    assert loaded.family.name == "sd1"
    assert loaded.unet_config == TINY.arch.unet()
    assert loaded.vae_config == TINY.arch.vae()
    assert loaded.text_encoders["clip_l"].config == TINY.arch.text()
    assert checks["unet_max_abs_diff"] < 0.05


def test_folding_the_latent_scale_keeps_the_reconstruction_and_normalises_latents():
    torch.manual_seed(0)
    vae = AutoencoderKL(VAEConfig(ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1)).eval()
    x = torch.rand(6, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        mean, _ = vae.encode(x)
        m, s = mean.mean(dim=(0, 2, 3)), mean.std(dim=(0, 2, 3))
        folded = fold_latent_affine(vae, m, s)
        scaled = folded.encode(x)[0] * LATENT_SCALE
        torch.testing.assert_close(scaled.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-4, rtol=0)
        torch.testing.assert_close(scaled.std(dim=(0, 2, 3)), torch.ones(4), atol=1e-4, rtol=0)
        torch.testing.assert_close(folded.decode(folded.encode(x)[0]), vae.decode(mean), atol=1e-4, rtol=0)


def test_optimizer_state_round_trips_through_safetensors(tmp_path):
    def make():
        torch.manual_seed(1)
        net = torch.nn.Linear(3, 2)
        return net, torch.optim.AdamW(net.parameters(), lr=0.1)

    def step(net, opt, k):
        x = torch.full((4, 3), float(k))
        opt.zero_grad()
        net(x).pow(2).mean().backward()
        opt.step()

    net_a, opt_a = make()
    for k in range(4):
        step(net_a, opt_a, k)
    net_b, opt_b = make()
    for k in range(2):
        step(net_b, opt_b, k)
    tensors, meta = optimizer_tensors("opt.", opt_b)
    save_state(tmp_path / "s", {**{"model." + k: v for k, v in net_b.state_dict().items()}, **tensors}, {"opt": meta})
    loaded_tensors, loaded_meta = load_state(tmp_path / "s")
    net_c, opt_c = make()
    net_c.load_state_dict({k[6:]: v for k, v in loaded_tensors.items() if k.startswith("model.")})
    restore_optimizer("opt.", opt_c, loaded_tensors, loaded_meta["opt"])
    for k in range(2, 4):
        step(net_c, opt_c, k)
    for a, c in zip(net_a.parameters(), net_c.parameters()):
        torch.testing.assert_close(a, c, rtol=0, atol=0)


def test_a_style_lora_trains_on_the_export_and_loads_through_the_library(straight_run, tmp_path):
    from diffusion.lora import apply_lora, load_lora_file
    from train.eval import load_pipeline
    from train.lora_stage import LoraSchedule, train_lora

    run_dir, vae, nets = straight_run
    checkpoint = tmp_path / "tiny.safetensors"
    export_checkpoint(checkpoint, TINY, vae=vae, nets=nets, run_dir=run_dir)
    out = train_lora(tmp_path / "lora", checkpoint, tmp_path / "huge.safetensors",
                     LoraSchedule(rank=2, steps=3, batch=4, pool_size=8, checkpoint_every=100))
    lora = load_lora_file(out)
    assert lora.unet and lora.text and not lora.unreadable
    pipe = load_pipeline(checkpoint)
    model, clip, not_loaded = apply_lora(pipe.model, pipe.clip, lora, strength_model=1.0, strength_clip=1.0)
    assert not_loaded == []
    assert len(model.patches) == len(lora.unet) and len(clip.patches) == len(lora.text)
