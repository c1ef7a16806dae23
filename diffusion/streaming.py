"""Running a model that does not fit the compute device (ComfyUI's low-VRAM mode): its weights stay in CPU memory
and its blocks come to the device one at a time, for their own forward.

    with streamed(flux, torch.device("cuda"), budget_bytes=8 << 30) as plan:
        v = flux(x, t, context, y=y)       # each block is copied to the GPU just before it runs, dropped after
    plan.peak_bytes                        # the most weight bytes the device held at once

The units are the root's children, with every ModuleList (Flux's double_blocks / single_blocks, MMDiT's joint_blocks,
the UNet's input_blocks / output_blocks) split into its blocks; the root's own tensors (SD3's pos_embed) stay on the
device for the context. Units are made resident in order while they fit the budget less room for the largest
streamed unit; the rest stream: a forward pre-hook points each of the unit's parameters and buffers at a device copy
of its data, and the forward hook points them back at the CPU tensor, so nothing is ever copied back and the CPU
weights are never written. On exit every tensor is its CPU self again.

Storage dtypes travel as stored: an fp8 weight is copied in fp8 (half the bytes of bf16) and upcast by its Linear
for the one matmul, as without streaming. Patches compose: LoRA forward hooks move their factors to where the input
is; weights swapped in by a patch context opened inside this one are streamed like the originals.

Every unit must be called as a module (its forward), not read by its parent, which is true of the diffusion models
here; `can_stream` tells block networks from the rest.
On a device that is the CPU the copies are still made (copy=True): a budget on a CPU-only machine runs the same
code path, which is how the tests check that streamed output is bit-identical.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


@dataclass
class StreamPlan:
    """How one module runs streamed, and what it cost (filled in while the context is open)."""

    resident: list[str] = field(default_factory=list)
    """Units kept on the device for the whole context."""
    streamed: list[str] = field(default_factory=list)
    """Units copied to the device for each of their calls."""
    resident_bytes: int = 0
    peak_bytes: int = 0
    """The most weight bytes on the device at once (resident + the streamed units running)."""
    uploads: int = 0
    """Streamed unit calls (each copies that unit's weights to the device)."""
    uploaded_bytes: int = 0


def tensor_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in _tensors(module))


def _tensors(module: nn.Module) -> Iterator[Tensor]:
    yield from module.parameters()
    yield from module.buffers()


def can_stream(root: nn.Module) -> bool:
    """Whether `root` is a network of blocks: ModuleLists among its children hold at least half of its submodules'
    bytes (Flux, MMDiT, the UNet; not the VAE or the text encoders, which the manager moves whole). The root's own
    tensors (SD3's large pos_embed table) do not count: they stay on the device either way."""
    children = [tensor_bytes(child) for child in root.children()]
    blocks = sum(tensor_bytes(child) for child in root.children() if isinstance(child, nn.ModuleList))
    return blocks > 0 and 2 * blocks >= sum(children)


def stream_units(root: nn.Module) -> list[tuple[str, nn.Module]]:
    """The root's children, ModuleLists split into their elements, in the order they were registered."""
    units: list[tuple[str, nn.Module]] = []
    for name, child in root.named_children():
        if isinstance(child, nn.ModuleList):
            units += [(f"{name}.{i}", block) for i, block in enumerate(child)]
        else:
            units.append((name, child))
    return units


class _Swap:
    """Points tensors at device copies of their data and back at the originals (by identity: no copy back)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.saved: list[tuple[Tensor, Tensor]] = []

    def to_device(self, tensors: Iterator[Tensor]) -> int:
        moved = 0
        for tensor in tensors:
            original = tensor.data
            tensor.data = original.to(self.device, copy=True, non_blocking=True)
            self.saved.append((tensor, original))
            moved += original.numel() * original.element_size()
        return moved

    def restore(self) -> None:
        for tensor, original in reversed(self.saved):
            tensor.data = original
        self.saved.clear()


class _StreamHooks:
    """Pre-hook: the unit's tensors to the device; post-hook: back to their CPU data."""

    def __init__(self, device: torch.device, plan: StreamPlan, current: list[int]) -> None:
        self.device, self.plan, self.current = device, plan, current
        self.swaps: list[_Swap] = []  # a stack: a unit may run inside another's call (re-entrant blocks)

    def pre(self, module: nn.Module, args: tuple) -> None:
        swap = _Swap(self.device)
        moved = swap.to_device(_tensors(module))
        self.swaps.append(swap)
        self.current[0] += moved
        self.plan.uploads += 1
        self.plan.uploaded_bytes += moved
        self.plan.peak_bytes = max(self.plan.peak_bytes, self.current[0])

    def post(self, module: nn.Module, args: tuple, output: object) -> None:
        swap = self.swaps.pop()
        self.current[0] -= sum(o.numel() * o.element_size() for _, o in swap.saved)
        swap.restore()

    def restore_all(self) -> None:
        """After a forward that raised inside a unit (its post-hook never ran)."""
        while self.swaps:
            self.swaps.pop().restore()


@contextmanager
def streamed(root: nn.Module, device: torch.device | str, budget_bytes: int) -> Iterator[StreamPlan]:
    """Run `root` on `device` with at most about `budget_bytes` of its weights there at once (see the module
    docstring); yields the plan, whose counters fill in as the model runs."""
    device = torch.device(device)
    plan = StreamPlan()
    units = stream_units(root)
    sizes = {name: tensor_bytes(unit) for name, unit in units}
    largest = max(sizes.values(), default=0)
    own = [*root.parameters(recurse=False), *root.buffers(recurse=False)]
    room = budget_bytes - largest - sum(t.numel() * t.element_size() for t in own)
    resident = _Swap(device)
    current = [0]
    with ExitStack() as stack:
        stack.callback(resident.restore)
        current[0] += resident.to_device(iter(own))
        hooks = _StreamHooks(device, plan, current)
        stack.callback(hooks.restore_all)
        for name, unit in units:
            if sizes[name] <= room:
                room -= sizes[name]
                current[0] += resident.to_device(_tensors(unit))
                plan.resident.append(name)
            else:
                stack.callback(unit.register_forward_pre_hook(hooks.pre).remove)
                stack.callback(unit.register_forward_hook(hooks.post).remove)
                plan.streamed.append(name)
        plan.resident_bytes = plan.peak_bytes = current[0]
        yield plan


__all__ = ["StreamPlan", "can_stream", "stream_units", "streamed", "tensor_bytes"]
