"""Async nodes (`async def run`): awaited on the run's event loop in the worker thread; independent ones await
together; interrupts cancel them; progress, errors, list mapping and expansion work as for other nodes."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from nodes.inputs import Float, Int, Link
from nodes.registry import GraphBuilder, Node, Output, Result
from server.engine.events import EventLog, Progress
from server.engine.graph import validate_prompt
from tests.server import engine_nodes as E


class Wait(Node):
    """Sleeps `seconds` (awaiting), reporting progress in 4 steps, then passes `a` + 1 on."""

    a = Link("INT")
    seconds = Float(0.0, min=0.0, max=60.0)
    outputs = (Output("INT"),)

    @classmethod
    async def run(cls, ctx, a, seconds):
        ctx.services.record(ctx, "Wait")
        for step in range(4):
            await asyncio.sleep(seconds / 4)
            ctx.progress(step + 1, 4)
        return (a + 1,)


class Explode(Node):
    a = Link("INT")
    outputs = (Output("INT"),)

    @classmethod
    async def run(cls, ctx, a):
        await asyncio.sleep(0.01)
        raise ValueError("boom after awaiting")


class Spread(Node):
    """A list output: 0..n-1 (to map an async node over)."""

    n = Int(3, min=1, max=100)
    outputs = (Output("INT", is_list=True),)

    @classmethod
    def run(cls, ctx, n):
        return (list(range(n)),)


class AsyncExpand(Node):
    """Awaits, then expands into a Wait node."""

    a = Link("INT")
    outputs = (Output("INT"),)

    @classmethod
    async def run(cls, ctx, a):
        await asyncio.sleep(0.01)
        graph = GraphBuilder()
        inner = graph.node("Wait", a=a, seconds=0.0)  # a value handed to a linked input
        return Result(values=(inner.out(0),), expand=graph.finalize())


@pytest.fixture
def reg():
    registry = E.registry()
    registry.add_all([Wait, Explode, Spread, AsyncExpand], source="core")
    return registry


def run(ex, reg, prompt, prompt_id="p", **kw):
    return ex.execute(validate_prompt(prompt, reg), prompt_id=prompt_id, **kw)


def branches(count: int, seconds: float) -> dict:
    prompt = {"c": {"class_type": "Const", "inputs": {"value": 1}}}
    for i in range(count):
        prompt[f"w{i}"] = {"class_type": "Wait", "inputs": {"a": ["c", 0], "seconds": seconds}}
        prompt[f"out{i}"] = {"class_type": "Show", "inputs": {"value": [f"w{i}", 0]}}
    return prompt


def test_independent_async_nodes_await_together(reg):
    calls = E.Calls()
    log = EventLog()
    started = time.perf_counter()
    outcome = run(E.executor(reg, calls), reg, branches(4, 0.4), events=log)
    elapsed = time.perf_counter() - started
    assert outcome.ok, outcome.error
    assert [outcome.outputs[f"out{i}"] for i in range(4)] == [{"values": [2]}] * 4
    assert elapsed < 1.2  # four 0.4 s waits, one after the other, would take 1.6 s
    progress = log.of(Progress)
    assert {(p.node, p.value) for p in progress} == {(f"w{i}", v) for i in range(4) for v in (1, 2, 3, 4)}


def test_an_async_node_runs_on_the_worker_thread_loop(reg):
    seen = []

    class Where(Node):
        outputs = (Output("INT"),)
        output_node = True

        @classmethod
        async def run(cls, ctx):
            seen.append((threading.get_ident(), asyncio.get_running_loop()))
            return Result(values=(1,), ui={"ok": [True]})

    reg.add(Where, source="core")
    outcome = run(E.executor(reg, E.Calls()), reg, {"w": {"class_type": "Where", "inputs": {}}})
    assert outcome.ok and seen[0][0] == threading.get_ident() and seen[0][1].is_closed()  # closed after the run


def test_interrupt_cancels_awaiting_nodes_at_once(reg):
    interrupt = threading.Event()
    threading.Timer(0.2, interrupt.set).start()
    started = time.perf_counter()
    outcome = run(E.executor(reg, E.Calls()), reg, branches(2, 30.0), interrupt=interrupt)
    assert outcome.status == "interrupted"
    assert time.perf_counter() - started < 3
    assert outcome.error.node_id in ("w0", "w1")


def test_an_async_failure_is_the_node_error(reg):
    prompt = {"c": {"class_type": "Const", "inputs": {"value": 1}},
              "x": {"class_type": "Explode", "inputs": {"a": ["c", 0]}},
              "out": {"class_type": "Show", "inputs": {"value": ["x", 0]}}}
    outcome = run(E.executor(reg, E.Calls()), reg, prompt)
    assert outcome.status == "error"
    assert (outcome.error.node_id, outcome.error.exception_type) == ("x", "ValueError")
    assert outcome.error.exception_message == "boom after awaiting" and outcome.error.current_inputs == {"a": [1]}


def test_an_async_node_maps_over_a_list_and_can_expand(reg):
    calls = E.Calls()
    prompt = {"s": {"class_type": "Spread", "inputs": {"n": 3}},
              "w": {"class_type": "Wait", "inputs": {"a": ["s", 0], "seconds": 0.2}},
              "e": {"class_type": "AsyncExpand", "inputs": {"a": ["w", 0]}},
              "out": {"class_type": "Show", "inputs": {"value": ["e", 0]}}}
    started = time.perf_counter()
    outcome = run(E.executor(reg, calls), reg, prompt)
    assert outcome.ok, outcome.error
    assert outcome.outputs["out"] == {"values": [2, 3, 4]}
    assert time.perf_counter() - started < 0.55  # the three calls of `w` await together
    assert [n for n in calls.ids("Wait") if n.startswith("e.")]  # the expansion ran
