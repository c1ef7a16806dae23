"""Executor overhead: validation + execution of graphs of trivial nodes, first run and cached re-run, in-process.

    python -m bench.executor_overhead [--repeat N] [--quick]

The nodes do almost nothing (an int flows down chains: Const -> Step ... -> Show), so the times are the engine's own
cost: validation, cache keys, scheduling, context creation, cache writes and events (serialised to JSON by the real
EventHub for one connected client, drained on an event-loop thread as the websocket side would). No torch needed.

The baseline column is ComfyUI 0.8.0 measured on this kind of machine (2 cores, CPU) from outside over HTTP
(reference/anchors-performance-security-demand.md, A5). Those figures include HTTP and websocket costs ours do not,
so the ratio overstates our lead by a few milliseconds per prompt; the HTTP-level benchmark is the app's.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nodes.context import RunContext
from nodes.inputs import Int, Link
from nodes.registry import Node, Output, Registry, Result
from server.engine.cache import OutputCache
from server.hub import EventHub
from server.engine.executor import Executor
from server.engine.graph import validate_prompt


class Const(Node):
    value = Int(0, min=-(10**9), max=10**9)
    outputs = (Output("INT"),)

    @classmethod
    def run(cls, ctx, value):
        return (value,)


class Step(Node):
    a = Link("INT")
    outputs = (Output("INT"),)

    @classmethod
    def run(cls, ctx, a):
        return (a + 1,)


class Show(Node):
    output_node = True
    value = Link("INT")

    @classmethod
    def run(cls, ctx, value):
        return Result(ui={"values": [value]})


def chains(count: int, length: int) -> dict[str, Any]:
    """`count` chains of `length` nodes: Const, length-2 Steps, Show (like A5's EmptyImage -> Invert... -> Preview)."""
    prompt: dict[str, Any] = {}
    for c in range(count):
        prompt[f"{c}:0"] = {"class_type": "Const", "inputs": {"value": c}}
        for i in range(1, length - 1):
            prompt[f"{c}:{i}"] = {"class_type": "Step", "inputs": {"a": [f"{c}:{i - 1}", 0]}}
        prompt[f"{c}:out"] = {"class_type": "Show", "inputs": {"value": [f"{c}:{length - 2}", 0]}}
    return prompt


class _Listener:
    """One websocket-like client: an event loop thread draining its hub channel."""

    def __init__(self, hub: EventHub):
        self.loop = asyncio.new_event_loop()
        self.frames = 0
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            self.channel = hub.connect("bench", self.loop)
            ready.set()
            self.loop.run_until_complete(self._drain())

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        ready.wait()

    async def _drain(self) -> None:
        while await self.channel.get() is not None:
            self.frames += 1

    def close(self, hub: EventHub) -> None:
        hub.disconnect(self.channel)
        self.thread.join(5)
        self.loop.close()


@dataclass(frozen=True)
class Case:
    name: str
    prompt: dict[str, Any]
    comfy_first: str
    comfy_cached: str
    target_first: float | None  # seconds
    target_cached: float | None


@dataclass(frozen=True)
class Row:
    case: str
    chisel: str
    target: str
    comfyui: str
    ok: bool | None


def _median_time(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(repeat: int = 5, quick: bool = False) -> list[Row]:
    registry = Registry()
    registry.add_all((Const, Step, Show), source="core")
    hub = EventHub()
    listener = _Listener(hub)
    context = functools.partial(RunContext, services=None)
    cases = [
        Case("1,000 nodes as 20 chains of 50", chains(20, 50), "3.2-3.5 s", "0.27-0.62 s", 0.3, 0.05),
        Case("one chain 500 deep", chains(1, 500), "3.8-5.2 s", "2.2-2.8 s", None, None),
        Case("one chain 1,000 deep", chains(1, 1000), "refused (recursion)", "refused", None, None),
    ]
    if not quick:
        cases.append(Case("one chain 10,000 deep", chains(1, 10_000), "refused (recursion)", "refused", None, None))
    rows: list[Row] = []
    dispatch_us: float | None = None
    try:
        for case in cases:
            runs = max(1, repeat if len(case.prompt) <= 1000 else min(repeat, 3))

            def first() -> None:
                executor = Executor(registry, OutputCache(), context)  # a fresh, empty cache each time
                graph = validate_prompt(case.prompt, registry)
                outcome = executor.execute(graph, prompt_id="first", events=hub)
                assert outcome.ok and len(outcome.executed) == len(case.prompt), outcome.error

            warm = Executor(registry, OutputCache(), context)
            warm.execute(validate_prompt(case.prompt, registry), prompt_id="warm", events=hub)

            def cached() -> None:
                outcome = warm.execute(validate_prompt(case.prompt, registry), prompt_id="again", events=hub)
                assert outcome.ok and outcome.executed == (), outcome.executed

            t_first = _median_time(first, runs)
            t_cached = _median_time(cached, runs)
            rows.append(_row(f"{case.name}: first run (validate + execute)", t_first, case.target_first,
                             case.comfy_first))
            rows.append(_row(f"{case.name}: queued again, all cached", t_cached, case.target_cached,
                             case.comfy_cached))
            if len(case.prompt) == 1000 and dispatch_us is None:
                graph = validate_prompt(case.prompt, registry)

                def execute_only() -> None:
                    Executor(registry, OutputCache(), context).execute(graph, prompt_id="dispatch", events=hub)

                dispatch_us = _median_time(execute_only, runs) / len(case.prompt) * 1e6
        prompt = cases[0].prompt
        per_prompt = _median_time(lambda: validate_prompt(prompt, registry), max(repeat, 5) * 4)
        rows.append(Row("per-node dispatch (execute only, 1,000-node graph)", f"{dispatch_us:.1f} us",
                        "< 100 us", "~3,000 us (3.2 s / 1,000 nodes, incl. HTTP)", dispatch_us < 100))
        rows.append(Row("validation of the 1,000-node prompt", f"{1 / per_prompt:,.0f} prompts/s "
                        f"({per_prompt * 1e3:.1f} ms)", "-", "POST /prompt 6-8 ms (validate + enqueue)", None))
    finally:
        listener.close(hub)
    return rows


def _row(name: str, seconds: float, target: float | None, comfy: str) -> Row:
    shown = f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"
    goal = "-" if target is None else (f"< {target * 1e3:.0f} ms" if target < 1 else f"< {target:g} s")
    return Row(name, shown, goal, comfy, None if target is None else seconds < target)


def table(rows: list[Row]) -> str:
    headers = ("case", "Chisel (in-process)", "target", "ComfyUI 0.8.0 (A5, over HTTP)", "met")
    body = [(r.case, r.chisel, r.target, r.comfyui, "-" if r.ok is None else ("yes" if r.ok else "NO")) for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in body)) for i, h in enumerate(headers)]
    fmt = " | ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*headers), "-+-".join("-" * w for w in widths)]
    lines += [fmt.format(*line) for line in body]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (the median is shown)")
    parser.add_argument("--quick", action="store_true", help="skip the 10,000-deep chain")
    args = parser.parse_args(argv)
    rows = measure(repeat=args.repeat, quick=args.quick)
    print(table(rows))
    return 0 if all(r.ok is not False for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
