"""Graph expansion (ComfyUI's `{"result": ..., "expand": graph}`): a node's run adds nodes that run in its place,
each cached on its own; expansions that expand again make loops without recursion."""

from __future__ import annotations

import time

import pytest

from nodes.inputs import Int, Link
from nodes.registry import GraphBuilder, Node, Output, Result
from server.engine.events import EventLog, Executing
from server.engine.graph import validate_prompt
from tests.server import engine_nodes as E

BIG = 10**9


class Num(Node):
    value = Int(0, min=-BIG, max=BIG)
    outputs = (Output("INT"),)

    @classmethod
    def run(cls, ctx, value):
        ctx.services.record(ctx, "Num")
        return (value,)


class Inc(Node):
    a = Link("INT")
    by = Int(1, min=-BIG, max=BIG)
    outputs = (Output("INT"),)

    @classmethod
    def run(cls, ctx, a, by):
        ctx.services.record(ctx, "Inc")
        return (a + by,)


class Ladder(Node):
    """Expands into Num(start) -> Inc x (rungs - 1); the rung at `bump_at` adds `bump` instead of 1."""

    start = Int(0, min=-BIG, max=BIG)
    rungs = Int(100, min=1, max=10_000)
    bump_at = Int(50, min=0, max=10_000)
    bump = Int(1, min=-BIG, max=BIG)
    outputs = (Output("INT"),)

    @classmethod
    def run(cls, ctx, start, rungs, bump_at, bump):
        ctx.services.record(ctx, "Ladder")
        graph = GraphBuilder()
        last = graph.node("Num", value=start)
        for rung in range(1, rungs):
            last = graph.node("Inc", a=last.out(0), by=bump if rung == bump_at else 1)
        return Result(values=(last.out(0),), expand=graph.finalize())


class Loop(Node):
    """A node-level loop: while `remaining` > 0, expand into value + 1 and a new Loop with one less."""

    value = Link("INT")
    remaining = Int(0, min=0, max=BIG)
    outputs = (Output("INT"),)

    @classmethod
    def run(cls, ctx, value, remaining):
        ctx.services.record(ctx, "Loop")
        if remaining <= 0:
            return (value,)
        graph = GraphBuilder()
        step = graph.node("Inc", a=graph.node("Num", value=value).out(0), by=1)
        again = graph.node("Loop", value=step.out(0), remaining=remaining - 1)
        return Result(values=(again.out(0),), expand=graph.finalize())


class ShowInside(Node):
    """Expands into an output node (it runs, and its ui is the run's) and passes its input through."""

    value = Link("INT")
    outputs = (Output("INT"),)

    @classmethod
    def run(cls, ctx, value):
        graph = GraphBuilder()
        shown = graph.node("Show", value=value)  # a value handed straight to a linked input
        shown.set_override_display_id("outer")
        return Result(values=(value,), expand=graph.finalize())


class Faulty(Node):
    """Expands into what `mode` names: an unknown node type, a link back to itself, or ids it already used."""

    mode = Int(0, min=0, max=3)
    outputs = (Output("INT"),)

    @classmethod
    def run(cls, ctx, mode):
        if mode == 0:
            return Result(values=(["x", 0],), expand={"x": {"class_type": "NoSuchNode", "inputs": {}}})
        if mode == 1:
            return Result(values=(["x", 0],), expand={"x": {"class_type": "Inc",
                                                            "inputs": {"a": [ctx.node_id, 0], "by": 1}}})
        # ComfyUI-style ids under the node's own id, but the same ones as a prompt node
        return Result(values=([f"{ctx.node_id}.0.0.1", 0],),
                      expand={f"{ctx.node_id}.0.0.1": {"class_type": "Num", "inputs": {"value": 1}}})


@pytest.fixture
def reg():
    registry = E.registry()
    registry.add_all([Num, Inc, Ladder, Loop, ShowInside, Faulty], source="core")
    return registry


@pytest.fixture
def calls():
    return E.Calls()


def run(ex, reg, prompt, prompt_id="p", **kw):
    return ex.execute(validate_prompt(prompt, reg), prompt_id=prompt_id, **kw)


def ladder(bump=1, start=0):
    return {"L": {"class_type": "Ladder", "inputs": {"start": start, "rungs": 100, "bump_at": 60, "bump": bump}},
            "out": {"class_type": "Show", "inputs": {"value": ["L", 0]}}}


def test_expansion_runs_in_the_node_place_and_its_outputs_become_the_node_outputs(reg, calls):
    log = EventLog()
    outcome = run(E.executor(reg, calls), reg, ladder(), events=log)
    assert outcome.ok, outcome.error
    assert outcome.outputs["out"] == {"values": [99]}
    assert len(calls.ids("Num")) == 1 and len(calls.ids("Inc")) == 99
    inner = calls.ids("Num") + calls.ids("Inc")
    assert all(node_id.startswith("L.") for node_id in inner) and len(set(inner)) == 100
    # the expanding node finishes after its expansion; Executing is sent for each inner node
    assert outcome.executed[-2:] == ("L", "out")
    assert {e.node for e in log.of(Executing)} >= set(inner)


def test_each_inner_node_is_cached_so_one_changed_input_reruns_only_what_it_affects(reg, calls):
    ex = E.executor(reg, calls)
    run(ex, reg, ladder())
    calls.clear()
    outcome = run(ex, reg, ladder(), prompt_id="same")
    assert calls.calls == [] and outcome.executed == ()  # the expanding node itself is a cache hit
    outcome = run(ex, reg, ladder(bump=5), prompt_id="changed")
    assert outcome.outputs["out"] == {"values": [103]}
    # the node expands again; of its 100 inner nodes only the bumped rung and the 39 after it run
    assert calls.ids("Ladder") == ["L"]
    assert len(calls.ids("Inc")) == 40 and calls.ids("Num") == []


def test_ten_thousand_iteration_loop_of_expansions_does_not_recurse(reg, calls):
    prompt = {"0": {"class_type": "Num", "inputs": {"value": 7}},
              "loop": {"class_type": "Loop", "inputs": {"value": ["0", 0], "remaining": 10_000}},
              "out": {"class_type": "Show", "inputs": {"value": ["loop", 0]}}}
    ex = E.executor(reg, calls)
    started = time.perf_counter()
    outcome = run(ex, reg, prompt)
    elapsed = time.perf_counter() - started
    assert outcome.ok, outcome.error
    assert outcome.outputs["out"] == {"values": [10_007]}
    assert len(calls.ids("Loop")) == 10_001 and len(calls.ids("Inc")) == 10_000
    assert max(len(node_id) for node_id in calls.ids()) < 20  # ids do not grow with the depth of the loop
    assert elapsed < 60
    calls.clear()
    assert run(ex, reg, prompt, prompt_id="again").outputs["out"] == {"values": [10_007]}
    assert calls.calls == []


def test_output_nodes_of_an_expansion_run_and_report_their_ui(reg, calls):
    prompt = {"0": {"class_type": "Num", "inputs": {"value": 3}},
              "outer": {"class_type": "ShowInside", "inputs": {"value": ["0", 0]}},
              "out": {"class_type": "Show", "inputs": {"value": ["outer", 0]}}}
    outcome = run(E.executor(reg, calls), reg, prompt)
    assert outcome.ok, outcome.error
    inner = [node_id for node_id in outcome.outputs if node_id.startswith("outer.")]
    assert len(inner) == 1 and outcome.outputs[inner[0]] == {"values": [3]}
    assert outcome.outputs["out"] == {"values": [3]}


@pytest.mark.parametrize("mode, says", [(0, "NoSuchNode"), (1, "dependency cycle"), (2, "already has")])
def test_a_broken_expansion_is_an_error_of_the_expanding_node(reg, calls, mode, says):
    prompt = {"f": {"class_type": "Faulty", "inputs": {"mode": mode}},
              "out": {"class_type": "Show", "inputs": {"value": ["f", 0]}}}
    if mode == 2:
        prompt["f.0.0.1"] = {"class_type": "Num", "inputs": {"value": 1}}
        prompt["out2"] = {"class_type": "Show", "inputs": {"value": ["f.0.0.1", 0]}}
    outcome = run(E.executor(reg, calls), reg, prompt)
    assert outcome.status == "error"
    assert outcome.error.node_id == "f" and outcome.error.node_type == "Faulty"
    assert says in outcome.error.exception_message


def test_events_of_inner_nodes_name_the_node_shown_for_them(reg, calls):
    from server.messages import comfy_messages

    log = EventLog()
    outcome = run(E.executor(reg, calls), reg, ladder(), events=log)
    assert outcome.ok
    inner = [e for e in log.of(Executing) if e.node.startswith("L.")]
    assert inner and all(e.place.display_node == "L" and e.place.parent_node == "L" and e.place.real_node == "L"
                         for e in inner)
    (kind, data), = comfy_messages(inner[0])
    assert kind == "executing" and data["node"] == inner[0].node and data["display_node"] == "L"
    assert [e.place for e in log.of(Executing) if e.node == "L"] == [None]


def test_dynprompt_shows_the_run_with_its_expansions(reg, calls):
    seen = {}

    class Peek(Node):
        """Reads the dynamic prompt once the ladder expanded (its input comes from the expansion)."""

        value = Link("INT")
        outputs = (Output("INT"),)
        hidden = {"dyn": "DYNPROMPT"}

        @classmethod
        def run(cls, ctx, value, dyn):
            inner = sorted(n for n in dyn.all_node_ids() if n.startswith("L."))
            seen.update(count=len(inner), node=dyn.get_node(inner[-1]), real=dyn.get_real_node_id(inner[-1]),
                        parent=dyn.get_parent_node_id(inner[-1]), display=dyn.get_display_node_id(inner[-1]),
                        original=sorted(dyn.get_original_prompt()), has=dyn.has_node("L"))
            return (value,)

    reg.add(Peek, source="core")
    prompt = {**ladder(), "peek": {"class_type": "Peek", "inputs": {"value": ["L", 0]}}}
    prompt["out"]["inputs"]["value"] = ["peek", 0]
    assert run(E.executor(reg, calls), reg, prompt).ok
    assert seen["count"] == 100 and seen["node"]["class_type"] in ("Inc", "Num")
    assert (seen["real"], seen["parent"], seen["display"], seen["has"]) == ("L", "L", "L", True)
    assert seen["original"] == ["L", "out", "peek"]
