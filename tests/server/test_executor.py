"""The executor with tiny test nodes: caching, lazy inputs, list semantics, interrupt, errors, events, hidden inputs."""

import threading
import time

import pytest

from server.engine.cache import OutputCache
from server.messages import EventRecorder, history_meta
from server.engine.graph import validate_prompt
from tests.server import engine_nodes as E


@pytest.fixture
def reg():
    return E.registry()


@pytest.fixture
def calls():
    return E.Calls()


def run(ex, reg, prompt, prompt_id="p", **kw):
    return ex.execute(validate_prompt(prompt, reg), prompt_id=prompt_id, **kw)


def test_chain_runs_in_order_and_reports_ui(reg, calls):
    outcome = run(E.executor(reg, calls), reg, E.chain(3, start=10))
    assert outcome.status == "success" and outcome.ok
    assert outcome.executed == ("n0", "n1", "n2", "n3", "nout")
    assert outcome.outputs == {"nout": {"values": [13]}}
    assert history_meta(outcome.outputs)["nout"] == {"node_id": "nout", "display_node": "nout", "parent_node": None,
                                                     "real_node_id": "nout"}
    assert set(outcome.timings) == set(outcome.executed)


def test_requeueing_an_unchanged_graph_runs_no_node(reg, calls):
    ex = E.executor(reg, calls)
    run(ex, reg, E.chains(3, 6))
    calls.clear()
    rec = EventRecorder()
    outcome = run(ex, reg, E.chains(3, 6), prompt_id="again", events=rec)
    assert calls.calls == [] and outcome.executed == ()
    assert len(outcome.cached) == 18
    assert rec.of_type("execution_cached")[0]["nodes"] == list(outcome.cached)
    # cached output nodes re-send their ui, and the history gets it
    assert [e["node"] for e in rec.of_type("executed")] == ["c0_out", "c1_out", "c2_out"]
    assert outcome.outputs["c2_out"] == {"values": [2 + 4]}


def test_changing_one_widget_reruns_only_that_node_and_its_descendants(reg, calls):
    ex = E.executor(reg, calls)
    prompt = {**E.chain(5, prefix="a"), **E.chain(5, prefix="b")}
    run(ex, reg, prompt)
    calls.clear()
    prompt["a3"]["inputs"]["b"] = 7
    outcome = run(ex, reg, prompt, prompt_id="changed")
    assert calls.ids() == ["a3", "a4", "a5", "aout"]
    assert outcome.outputs["aout"] == {"values": [11]}
    assert {"a0", "a1", "a2", "b0", "bout"} <= set(outcome.cached)


def test_cache_keys_are_content_addressed_so_identical_subgraphs_share_entries(reg, calls):
    ex = E.executor(reg, calls)
    run(ex, reg, E.chain(3, prefix="x"))
    calls.clear()
    run(ex, reg, E.chain(3, prefix="y"), prompt_id="renamed")
    assert calls.calls == []


def test_eviction_during_a_run_does_not_lose_needed_outputs(reg, calls):
    # a cache that keeps nothing: the run still has every input it needs
    cache = OutputCache(sizeof=lambda v: (1, 0), cpu_budget=0)
    outcome = run(E.executor(reg, calls, cache), reg, E.chain(20))
    assert outcome.ok and outcome.outputs["nout"] == {"values": [20]}
    assert cache.stats().entries == 0 and cache.stats().rejected == 22


def test_lazy_input_evaluates_only_the_chosen_branch(reg, calls):
    prompt = {"a": {"class_type": "Const", "inputs": {"value": 1}},
              "b": {"class_type": "Const", "inputs": {"value": 2}},
              "s": {"class_type": "Switch", "inputs": {"choose_a": False, "a": ["a", 0], "b": ["b", 0]}},
              "out": {"class_type": "Show", "inputs": {"value": ["s", 0]}}}
    outcome = run(E.executor(reg, calls), reg, prompt)
    assert outcome.outputs["out"] == {"values": [2]}
    assert "a" not in calls.ids() and calls.ids("Const") == ["b"]
    assert calls.ids("Switch") == ["s"]


def test_lazy_input_from_the_cache_is_reused(reg, calls):
    ex = E.executor(reg, calls)
    prompt = {"a": {"class_type": "Const", "inputs": {"value": 1}},
              "b": {"class_type": "Const", "inputs": {"value": 2}},
              "s": {"class_type": "Switch", "inputs": {"choose_a": True, "a": ["a", 0], "b": ["b", 0]}},
              "out": {"class_type": "Show", "inputs": {"value": ["s", 0]}}}
    run(ex, reg, prompt)
    prompt["s"]["inputs"]["choose_a"] = False
    calls.clear()
    assert run(ex, reg, prompt, prompt_id="2").outputs["out"] == {"values": [2]}
    assert calls.ids() == ["b", "s", "out"]
    prompt["s"]["inputs"]["choose_a"] = True
    calls.clear()
    prompt["out"] = {"class_type": "Show", "inputs": {"value": ["s", 0]}, "_meta": {"title": "other"}}
    assert run(ex, reg, prompt, prompt_id="3").outputs["out"] == {"values": [1]}
    assert calls.ids() == []  # same keys as the first run


def test_list_output_maps_the_next_node_once_per_item(reg, calls):
    prompt = {"r": {"class_type": "Range", "inputs": {"count": 4}},
              "add": {"class_type": "Add", "inputs": {"a": ["r", 0], "b": 10}},
              "out": {"class_type": "Show", "inputs": {"value": ["add", 0]}}}
    outcome = run(E.executor(reg, calls), reg, prompt)
    assert calls.ids("Add") == ["add"] * 4 and calls.ids("Show") == ["out"] * 4
    # ui of list-mapped calls is merged key by key
    assert outcome.outputs["out"] == {"values": [10, 11, 12, 13]}


def test_input_is_list_node_gets_the_whole_list_in_one_call(reg, calls):
    prompt = {"r": {"class_type": "Range", "inputs": {"count": 5}},
              "sum": {"class_type": "Sum", "inputs": {"values": ["r", 0]}},
              "out": {"class_type": "Show", "inputs": {"value": ["sum", 0]}}}
    outcome = run(E.executor(reg, calls), reg, prompt)
    assert calls.ids("Sum") == ["sum"] and outcome.outputs["out"] == {"values": [10]}


def test_empty_list_means_no_call(reg, calls):
    prompt = {"r": {"class_type": "Range", "inputs": {"count": 0}},
              "add": {"class_type": "Add", "inputs": {"a": ["r", 0], "b": 1}},
              "out": {"class_type": "Show", "inputs": {"value": ["add", 0]}}}
    outcome = run(E.executor(reg, calls), reg, prompt)
    assert outcome.ok and calls.ids("Add") == [] and outcome.outputs == {}


def test_interrupt_stops_a_slow_node_within_one_progress_step(reg, calls):
    interrupt = threading.Event()
    rec = EventRecorder()
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 1}},
              "2": {"class_type": "Slow", "inputs": {"a": ["1", 0], "steps": 5000}},
              "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
    graph = validate_prompt(prompt, reg)
    ex = E.executor(reg, calls)
    result = {}
    thread = threading.Thread(target=lambda: result.update(o=ex.execute(graph, prompt_id="slow", events=rec,
                                                                         interrupt=interrupt)))
    thread.start()
    while len(rec.of_type("progress")) < 3:
        time.sleep(0.001)
    interrupt.set()
    set_at = len(rec.of_type("progress"))
    thread.join(5)
    outcome = result["o"]
    assert outcome.status == "interrupted"
    assert len(rec.of_type("progress")) <= set_at + 1  # stopped at the next progress call
    assert outcome.error.node_id == "2" and outcome.error.node_type == "Slow"
    assert outcome.error.executed == ["1"]
    assert rec.types()[-1] == "execution_interrupted" and "3" not in calls.ids()
    assert [m.name for m in outcome.messages] == ["execution_start", "execution_cached", "execution_interrupted"]


def test_interrupt_set_before_a_node_stops_before_it_runs(reg, calls):
    interrupt = threading.Event()
    interrupt.set()
    outcome = run(E.executor(reg, calls), reg, E.chain(2), interrupt=interrupt)
    assert outcome.status == "interrupted" and calls.calls == [] and outcome.error.node_id == "n0"


def test_node_exception_gives_execution_error_in_comfyui_shape(reg, calls):
    seen = []
    ex = E.executor(reg, calls, on_error=lambda exc: seen.append(exc) or "Try a smaller image.")
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 4}},
              "2": {"class_type": "Fail", "inputs": {"a": ["1", 0]}},
              "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
    rec = EventRecorder()
    outcome = run(ex, reg, prompt, events=rec, extra_data={"client_id": "me"})
    assert outcome.status == "error"
    error = outcome.error.fields()
    assert set(error) == {"prompt_id", "node_id", "node_type", "executed", "exception_message", "exception_type",
                          "traceback", "current_inputs", "current_outputs", "timestamp"}
    assert (error["node_id"], error["node_type"], error["executed"]) == ("2", "Fail", ["1"])
    assert error["exception_type"] == "ValueError"
    assert error["exception_message"] == "cannot handle 4\nTry a smaller image."
    assert isinstance(error["traceback"], list) and all(isinstance(t, str) for t in error["traceback"])
    assert error["current_inputs"] == {"a": [4]} and error["current_outputs"] == ["1"]
    assert len(seen) == 1 and isinstance(seen[0], ValueError)
    assert rec.items[-1].event == "execution_error" and rec.items[-1].client_id == "me"
    # the next prompt on the same executor runs normally
    assert run(ex, reg, E.chain(1), prompt_id="next").ok


def test_wrong_number_of_returned_values_is_an_execution_error(reg, calls):
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 4}},
              "2": {"class_type": "WrongArity", "inputs": {"a": ["1", 0]}},
              "3": {"class_type": "Show", "inputs": {"value": ["2", 1]}}}
    outcome = run(E.executor(reg, calls), reg, prompt)
    assert outcome.status == "error" and "declares 2 outputs" in outcome.error.exception_message


def test_exception_raised_after_interrupt_counts_as_interruption(reg, calls):
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 4}},
              "2": {"class_type": "Fail", "inputs": {"a": ["1", 0]}},
              "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
    graph = validate_prompt(prompt, reg)

    class SetWhenAsked:
        """Clear when checked before nodes 1 and 2; set when node 2's exception is examined."""

        def __init__(self):
            self.asked = 0

        def is_set(self):
            self.asked += 1
            return self.asked > 2

    outcome = E.executor(reg, calls).execute(graph, prompt_id="x", interrupt=SetWhenAsked())
    assert outcome.status == "interrupted" and outcome.error.node_id == "2"


def test_events_for_one_prompt_come_in_comfyui_order(reg, calls):
    rec = EventRecorder()
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 1}},
              "2": {"class_type": "Slow", "inputs": {"a": ["1", 0], "steps": 2}},
              "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
    run(E.executor(reg, calls), reg, prompt, prompt_id="ev", events=rec, extra_data={"client_id": "c"})
    assert rec.types() == ["execution_start", "execution_cached",
                           "executing", "executing", "progress", "progress_state", "preview", "progress",
                           "progress_state", "executing", "executed", "execution_success"]
    assert all(item.client_id == "c" for item in rec.items)
    executing = rec.of_type("executing")
    assert executing[1] == {"node": "2", "display_node": "2", "prompt_id": "ev"}
    assert rec.of_type("progress")[0] == {"value": 1, "max": 2, "prompt_id": "ev", "node": "2"}
    preview = [i for i in rec.items if i.kind == "preview"][0]
    assert preview.data["node_id"] == "2" and preview.data["prompt_id"] == "ev"
    assert preview.preview.data.startswith(b"\xff\xd8")
    assert rec.of_type("executed")[0] == {"node": "3", "display_node": "3", "output": {"values": [1]},
                                          "prompt_id": "ev"}


def test_prompt_without_client_id_broadcasts(reg, calls):
    rec = EventRecorder()
    run(E.executor(reg, calls), reg, E.chain(1), events=rec)
    assert {item.client_id for item in rec.items} == {None}


def test_always_run_node_and_its_descendants_run_every_time(reg, calls):
    ex = E.executor(reg, calls)
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 1}},
              "2": {"class_type": "Stamp", "inputs": {"a": ["1", 0]}},
              "3": {"class_type": "Add", "inputs": {"a": ["2", 0], "b": 1}},
              "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}}}
    run(ex, reg, prompt)
    calls.clear()
    run(ex, reg, prompt, prompt_id="again")
    assert calls.ids() == ["2", "3", "4"]


def test_fingerprint_change_reruns_the_node(reg, calls, tmp_path):
    ex = E.executor(reg, calls)
    source = tmp_path / "version.txt"
    source.write_text("1")
    prompt = {"1": {"class_type": "Versioned", "inputs": {"path": str(source)}},
              "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
    run(ex, reg, prompt)
    calls.clear()
    run(ex, reg, prompt, prompt_id="same")
    assert calls.ids() == []
    source.write_text("5")
    outcome = run(ex, reg, prompt, prompt_id="changed")
    assert calls.ids() == ["1", "2"] and outcome.outputs["2"] == {"values": [5]}


def test_failing_fingerprint_means_the_node_runs_and_reports_its_error(reg, calls, tmp_path):
    prompt = {"1": {"class_type": "Versioned", "inputs": {"path": str(tmp_path / "missing.txt")}},
              "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
    outcome = run(E.executor(reg, calls), reg, prompt)
    assert outcome.status == "error" and outcome.error.exception_type == "FileNotFoundError"


def test_hidden_inputs_reach_the_node(reg, calls):
    prompt = {"me": {"class_type": "WhoAmI", "inputs": {}}, **E.chain(1)}
    outcome = run(E.executor(reg, calls), reg, prompt, extra_data={"extra_pnginfo": {"workflow": {"id": "w"}}})
    assert outcome.outputs["me"] == {"uid": ["me"], "classes": ["Add", "Const", "Show", "WhoAmI"],
                                     "pnginfo": [{"workflow": {"id": "w"}}]}


def test_outputs_run_in_prompt_order_one_branch_at_a_time(reg, calls):
    outcome = run(E.executor(reg, calls), reg, E.chains(2, 4))
    assert outcome.executed == ("c0_0", "c0_1", "c0_2", "c0_out", "c1_0", "c1_1", "c1_2", "c1_out")


def test_shared_ancestor_runs_once_for_several_consumers(reg, calls):
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 3}},
              "2": {"class_type": "Pair", "inputs": {"a": ["1", 0]}},
              "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
              "4": {"class_type": "Show", "inputs": {"value": ["2", 1]}}}
    outcome = run(E.executor(reg, calls), reg, prompt)
    assert calls.ids("Pair") == ["2"]
    assert outcome.outputs == {"3": {"values": [3]}, "4": {"values": [-3]}}


def test_ten_thousand_deep_chain_runs_and_reruns_from_cache(reg, calls):
    ex = E.executor(reg, calls)
    graph = validate_prompt(E.chain(10_000), reg)
    outcome = ex.execute(graph, prompt_id="deep")
    assert outcome.ok and outcome.outputs["nout"] == {"values": [10_000]}
    started = time.perf_counter()
    again = ex.execute(graph, prompt_id="deep2")
    assert again.executed == () and time.perf_counter() - started < 1.0


def test_graph_from_another_registry_is_refused(reg, calls):
    graph = validate_prompt(E.chain(1), E.registry())
    outcome = E.executor(reg, calls).execute(graph, prompt_id="stale")
    assert outcome.status == "error" and "validate the prompt again" in outcome.error.exception_message
