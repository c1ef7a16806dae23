"""Hypernetwork files (A1111 layout, random weights written here) load into k/v patches that compute
k + mlp_k(k)·strength and v + mlp_v(v)·strength, walked as ComfyUI builds the MLPs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from diffusion.hypernetwork import HypernetworkError, HypernetworkPatch, load_hypernetwork


def _mlp_state(width: int, seed: int, *, layer_norm: bool) -> dict[str, torch.Tensor]:
    """A1111's Sequential keys: Linear, [activation], [LayerNorm] per layer (only modules with weights appear; with
    layer_norm every Linear, the last one too, is followed by a LayerNorm)."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    index = 0
    for fan_in, fan_out in ((width, 2 * width), (2 * width, width)):
        state[f"linear.{index}.weight"] = torch.randn(fan_out, fan_in, generator=g) * 0.1
        state[f"linear.{index}.bias"] = torch.randn(fan_out, generator=g) * 0.1
        index += 2  # the activation's slot
        if layer_norm:
            state[f"linear.{index}.weight"] = 1 + torch.randn(fan_out, generator=g) * 0.1
            state[f"linear.{index}.bias"] = torch.randn(fan_out, generator=g) * 0.1
            index += 1
    return state


def write_hypernetwork(path, width: int = 32, *, activation: str = "relu", layer_norm: bool = False) -> dict:
    """A random .pt hypernetwork in the real layout: {width: [key MLP, value MLP], options...}."""
    content = {width: [_mlp_state(width, 1, layer_norm=layer_norm), _mlp_state(width, 2, layer_norm=layer_norm)],
               "activation_func": activation, "is_layer_norm": layer_norm, "use_dropout": False,
               "activate_output": False, "last_layer_dropout": False, "name": "test", "step": 10}
    torch.save(content, path)
    return content


def write_hypernetwork_safetensors(path, width: int = 32) -> None:
    """The same random hypernetwork as .safetensors (tensors under "{width}.{0|1}.{layer}", options as metadata):
    the form Chisel's model folders list (they list no pickles)."""
    content = write_hypernetwork(path.with_suffix(".pt"), width)
    flat = {f"{width}.{i}.{name}": t.contiguous() for i in (0, 1) for name, t in content[width][i].items()}
    save_file(flat, str(path), metadata={"activation_func": '"relu"', "is_layer_norm": "false"})
    path.with_suffix(".pt").unlink()


def _manual(state: dict, x: torch.Tensor, *, layer_norm: bool) -> torch.Tensor:
    tensors = list(state.values())  # weight, bias pairs in layer order
    pairs = [(tensors[i], tensors[i + 1]) for i in range(0, len(tensors), 2)]
    step = 2 if layer_norm else 1
    h = x
    for n, index in enumerate(range(0, len(pairs), step)):
        h = F.linear(h, *pairs[index])
        # not after the last linear (activate_output off) -- unless there are LayerNorms: ComfyUI counts them when
        # it decides which linear is last, so then every linear gets the activation
        if n == 0 or layer_norm:
            h = F.relu(h)
        if layer_norm:
            h = F.layer_norm(h, h.shape[-1:], *pairs[index + 1])
    return h


@pytest.mark.parametrize("layer_norm", [False, True])
def test_the_patch_adds_each_mlp_to_keys_and_values(tmp_path, layer_norm):
    content = write_hypernetwork(tmp_path / "h.pt", layer_norm=layer_norm)
    patch = HypernetworkPatch(network=load_hypernetwork(tmp_path / "h.pt"), strength=0.5)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 7, 32, generator=g) for _ in range(3))
    q2, k2, v2 = patch(q, k, v, {})
    assert q2 is q
    assert torch.allclose(k2, k + _manual(content[32][0], k, layer_norm=layer_norm) * 0.5, atol=1e-6)
    assert torch.allclose(v2, v + _manual(content[32][1], v, layer_norm=layer_norm) * 0.5, atol=1e-6)
    other = torch.randn(2, 7, 48, generator=g)  # a width without an MLP passes through
    assert patch(q, other, other, {})[1] is other


def test_safetensors_layout_loads_the_same_mlps(tmp_path):
    content = write_hypernetwork(tmp_path / "h.pt")
    flat = {f"32.{i}.{name}": t.contiguous() for i in (0, 1) for name, t in content[32][i].items()}
    save_file(flat, str(tmp_path / "h.safetensors"), metadata={"activation_func": '"relu"'})
    k = torch.randn(1, 3, 32)
    a = HypernetworkPatch(load_hypernetwork(tmp_path / "h.pt"), 1.0)(k, k, k, {})
    b = HypernetworkPatch(load_hypernetwork(tmp_path / "h.safetensors"), 1.0)(k, k, k, {})
    assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])


def test_bad_files_are_refused_with_the_file_and_the_reason(tmp_path):
    write_hypernetwork(tmp_path / "odd.pt", activation="gelu-ish")
    with pytest.raises(HypernetworkError, match="odd.pt.*gelu-ish"):
        load_hypernetwork(tmp_path / "odd.pt")
    torch.save({"activation_func": "relu"}, tmp_path / "empty.pt")
    with pytest.raises(HypernetworkError, match="empty.pt: no MLPs"):
        load_hypernetwork(tmp_path / "empty.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    with pytest.raises(HypernetworkError, match="junk.pt: cannot be read"):
        load_hypernetwork(tmp_path / "junk.pt")
