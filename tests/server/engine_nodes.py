"""Tiny test nodes for the engine tests (no torch): integers flowing through chains, lists, lazy switches,
slow/failing nodes. Each node records its calls in `ctx.services.calls`, so tests can count what ran while the nodes
themselves stay stateless."""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodes.context import Preview, RunContext
from nodes.inputs import Boolean, Combo, Float, Int, Link, String
from nodes.registry import Node, Output, Registry, Result
from server.engine.cache import OutputCache
from server.engine.executor import Executor


@dataclass
class Calls:
    """The services object of the test context: a thread-safe log of (node type, node id) calls."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, ctx: Any, kind: str) -> None:
        with self.lock:
            self.calls.append((kind, ctx.node_id))

    def ids(self, kind: str | None = None) -> list[str]:
        with self.lock:
            return [node_id for k, node_id in self.calls if kind is None or k == kind]

    def clear(self) -> None:
        with self.lock:
            self.calls.clear()


class Const(Node):
    value = Int(0, min=-1000, max=1000)
    outputs = (Output("INT"),)

    @classmethod
    def run(cls, ctx, value):
        ctx.services.record(ctx, "Const")
        return (value,)


class Add(Node):
    a = Link("INT")
    b = Int(1, min=-1000, max=1000)
    outputs = (Output("INT"),)

    @classmethod
    def run(cls, ctx, a, b):
        ctx.services.record(ctx, "Add")
        return (a + b,)


class Pair(Node):
    """Two outputs: the value and its negation."""

    a = Link("INT")
    outputs = (Output("INT"), Output("INT", name="negated"))

    @classmethod
    def run(cls, ctx, a):
        ctx.services.record(ctx, "Pair")
        return (a, -a)


class Show(Node):
    """An output node: its ui lists the value it got."""

    output_node = True
    value = Link("INT")

    @classmethod
    def run(cls, ctx, value):
        ctx.services.record(ctx, "Show")
        return Result(ui={"values": [value]})


class ShowText(Node):
    output_node = True
    text = Link("STRING")

    @classmethod
    def run(cls, ctx, text):
        ctx.services.record(ctx, "ShowText")
        return Result(ui={"text": [text]})


class Pick(Node):
    """Widget types for validation tests."""

    number = Int(5, min=0, max=10)
    ratio = Float(0.5, min=0.0, max=1.0)
    mode = Combo(["fast", "slow"])
    label = String("x")
    flag = Boolean(False, optional=True)
    outputs = (Output("INT"),)

    @classmethod
    def run(cls, ctx, number, ratio, mode, label, flag=False):
        ctx.services.record(ctx, "Pick")
        return (number,)


class ToText(Node):
    a = Link("INT")
    outputs = (Output("STRING"),)

    @classmethod
    def run(cls, ctx, a):
        ctx.services.record(ctx, "ToText")
        return (str(a),)


class Even(Node):
    """Custom validation: the value must be even."""

    value = Int(0)
    outputs = (Output("INT"),)

    @classmethod
    def validate(cls, value):
        return None if value % 2 == 0 else f"value {value} is odd"

    @classmethod
    def run(cls, ctx, value):
        return (value,)


class Broken(Node):
    """Its validate hook raises."""

    value = Int(0)
    outputs = (Output("INT"),)

    @classmethod
    def validate(cls, value):
        raise RuntimeError("validator bug")

    @classmethod
    def run(cls, ctx, value):
        return (value,)


class Switch(Node):
    """Lazy inputs: only the branch that `choose_a` picks is evaluated."""

    choose_a = Boolean(True)
    a = Link("INT", lazy=True)
    b = Link("INT", lazy=True)
    outputs = (Output("INT"),)

    @classmethod
    def check_lazy(cls, ctx, choose_a, a=None, b=None):
        return ["a"] if choose_a else ["b"]

    @classmethod
    def run(cls, ctx, choose_a, a=None, b=None):
        ctx.services.record(ctx, "Switch")
        return (a if choose_a else b,)


class Range(Node):
    """A list output: count items 0..count-1."""

    count = Int(3, min=0, max=100)
    outputs = (Output("INT", is_list=True),)

    @classmethod
    def run(cls, ctx, count):
        ctx.services.record(ctx, "Range")
        return (list(range(count)),)


class Sum(Node):
    """input_is_list: gets whole lists in one call."""

    input_is_list = True
    values = Link("INT")
    outputs = (Output("INT"),)

    @classmethod
    def run(cls, ctx, values):
        ctx.services.record(ctx, "Sum")
        return (sum(values),)


class Slow(Node):
    """Reports progress every few milliseconds for `steps` steps (interrupt tests)."""

    a = Link("INT")
    steps = Int(1000, min=1, max=100000)
    outputs = (Output("INT"),)

    @classmethod
    def run(cls, ctx, a, steps):
        ctx.services.record(ctx, "Slow")
        for step in range(steps):
            time.sleep(0.002)
            ctx.progress(step + 1, steps, Preview(b"\xff\xd8jpeg", "JPEG") if step == 0 else None)
        return (a,)


class Fail(Node):
    a = Link("INT")
    outputs = (Output("INT"),)

    @classmethod
    def run(cls, ctx, a):
        ctx.services.record(ctx, "Fail")
        raise ValueError(f"cannot handle {a}")


class Stamp(Node):
    """always_run: runs on every prompt, and so does everything after it."""

    always_run = True
    a = Link("INT")
    outputs = (Output("INT"),)

    @classmethod
    def run(cls, ctx, a):
        ctx.services.record(ctx, "Stamp")
        return (a,)


class Versioned(Node):
    """fingerprint: the cache key follows a file's content (like LoadImage hashing its file)."""

    path = String("")
    outputs = (Output("INT"),)

    @classmethod
    def fingerprint(cls, ctx, path):
        return Path(path).read_text()

    @classmethod
    def run(cls, ctx, path):
        ctx.services.record(ctx, "Versioned")
        return (int(Path(path).read_text()),)


class WhoAmI(Node):
    """Reads hidden inputs."""

    output_node = True
    hidden = {"uid": "UNIQUE_ID", "prompt": "PROMPT", "pnginfo": "EXTRA_PNGINFO"}

    @classmethod
    def run(cls, ctx, uid, prompt, pnginfo):
        ctx.services.record(ctx, "WhoAmI")
        return Result(ui={"uid": [uid], "classes": sorted({n["class_type"] for n in prompt.values()}),
                          "pnginfo": [pnginfo]})


class WrongArity(Node):
    a = Link("INT")
    outputs = (Output("INT"), Output("INT"))

    @classmethod
    def run(cls, ctx, a):
        return (a,)


ALL = (Const, Add, Pair, Show, ShowText, Pick, ToText, Even, Broken, Switch, Range, Sum, Slow, Fail, Stamp,
       Versioned, WhoAmI, WrongArity)


def registry() -> Registry:
    reg = Registry()
    reg.add_all(ALL, source="core")
    return reg


def executor(reg: Registry, calls: Calls, cache: OutputCache | None = None, **kw: Any) -> Executor:
    return Executor(reg, cache if cache is not None else OutputCache(), functools.partial(RunContext, services=calls),
                    **kw)


# ---- prompt builders ------------------------------------------------------------------------------------------------
def chain(length: int, *, start: int = 0, prefix: str = "n") -> dict[str, Any]:
    """Const -> Add x length -> Show."""
    prompt: dict[str, Any] = {f"{prefix}0": {"class_type": "Const", "inputs": {"value": start}}}
    for i in range(1, length + 1):
        prompt[f"{prefix}{i}"] = {"class_type": "Add", "inputs": {"a": [f"{prefix}{i - 1}", 0], "b": 1}}
    prompt[f"{prefix}out"] = {"class_type": "Show", "inputs": {"value": [f"{prefix}{length}", 0]}}
    return prompt


def chains(count: int, length: int) -> dict[str, Any]:
    """`count` independent chains of `length` nodes each (Const, Adds, Show)."""
    prompt: dict[str, Any] = {}
    for c in range(count):
        prompt.update(chain(length - 2, start=c, prefix=f"c{c}_"))
    return prompt
