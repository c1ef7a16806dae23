"""Run a validated Graph: cache keys, cache reuse, node dispatch with ComfyUI's list semantics, lazy inputs,
per-prompt interrupt, and the engine's events (server/engine/events.py) in ComfyUI's order.

The executor knows nothing of torch or of any particular node: it calls `spec.call(ctx, inputs)` for the specs the
graph carries, builds each node's context with the injected `context_factory`, stores outputs in the injected cache
and reports through the injected event sink; the web layer turns those events into websocket messages.

Events for one prompt (to the prompt's client, or everyone when it has no client_id):
  ExecutionStart, ExecutionCached(nodes),
  per node: Executing(node), Progress(value, max, preview)..., Executed(node, output) (only when the node has a
            ui; cached output nodes re-send theirs),
  then ExecutionSuccess | ExecutionError | ExecutionInterrupted.
The worker emits the final Executing(node=None) after the history is written.

Cache key of a node = hash(its static signature from the graph (type, cast literals, link slots, its id if it reads
UNIQUE_ID), its fingerprint if the spec has one, the keys of the nodes it links to). Keys are digests computed once
per run in topological order, O(nodes). A node that is `always_run`, whose fingerprint fails or is NaN, or that
depends on such a node is volatile: it always runs and its outputs are not cached.

Graph expansion (ComfyUI's `{"result": ..., "expand": graph}`, our Result(expand=...)): the nodes a run adds are
validated against the registry (graph.validate_expansion), keyed like the prompt's own and run in the node's place;
the node's outputs are the expansion's outputs it returned as links, and it is cached like any node. Their events
carry a NodePlace (the node shown for them, their parent, the prompt node they come from).

Async nodes (a `run` / FUNCTION that is `async def`): their calls are tasks on the run's event loop, owned by the
worker thread; independent ones await together, an interrupt cancels them (see `launch`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import inspect
import logging
import math
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from nodes.registry import NodeSpec, Registry
from server.engine.cache import OutputCache
from server.engine.events import (
    Event,
    EventSink,
    Executed,
    ExecutionCached,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    Executing,
    NodePlace,
    NullSink,
    Progress,
    exception_type_name,
)
from server.engine.graph import Graph, GraphNode, is_link, validate_expansion

log = logging.getLogger(__name__)

Status = Literal["success", "error", "interrupted"]


class Interrupt(Protocol):
    """The per-prompt interrupt flag (a `threading.Event` is one)."""

    def is_set(self) -> bool: ...


@dataclass(frozen=True, eq=False)
class NodeOutput:
    """What one node produced in a run (and what the cache keeps): for each output slot the tuple of its items
    (one item unless lists flow, ComfyUI's list semantics), and the ui dict if any."""

    values: tuple[tuple[Any, ...], ...]
    ui: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Outcome:
    """The result of executing one prompt.

    outputs   ui dicts by node id (the history's "outputs"), for nodes that ran or were served from the cache
    executed  node ids that ran, in order; cached: node ids reused from the cache (as sent in ExecutionCached)
    error     the ExecutionError or ExecutionInterrupted event, else None
    messages  the events for the history's status.messages (start, cached, success | error | interrupted)
    timings   seconds per node that ran; duration: seconds for the whole prompt
    """

    prompt_id: str
    status: Status
    outputs: Mapping[str, Mapping[str, Any]]
    executed: tuple[str, ...]
    cached: tuple[str, ...]
    error: ExecutionError | ExecutionInterrupted | None
    messages: tuple[Event, ...]
    timings: Mapping[str, float] = field(default_factory=dict)
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "success"


ContextFactory = Callable[..., Any]
"""context_factory(node_id=, prompt_id=, hidden=, report_progress=, is_interrupted=) -> the node's RunContext"""


class Executor:
    """Executes validated graphs. One executor serves the whole server; each `execute` call is independent.

    registry         the node registry (specs come from the graph; the registry is used to check they are current)
    cache            the OutputCache shared across prompts
    context_factory  builds each node call's context (the app passes functools.partial(RunContext, services=...))
    on_error         called with a node's exception before it is reported; returns an extra hint for the message
                     (the app detects GPU OOM there and frees memory) or None
    clock            wall clock in seconds (timestamps in messages are its milliseconds)
    """

    def __init__(self, registry: Registry, cache: OutputCache, context_factory: ContextFactory, *,
                 on_error: Callable[[BaseException], str | None] | None = None,
                 clock: Callable[[], float] = time.time):
        self.registry = registry
        self.cache = cache
        self.context_factory = context_factory
        self.on_error = on_error
        self.clock = clock

    def execute(self, graph: Graph, *, prompt_id: str, extra_data: Mapping[str, Any] | None = None,
                events: EventSink | None = None, interrupt: Interrupt | None = None) -> Outcome:
        """Run `graph` as prompt `prompt_id`. Never raises for a node's failure: the Outcome says what happened.

        extra_data  the prompt's extra_data: client_id routes the events, extra_pnginfo feeds EXTRA_PNGINFO
        events      where events go (default: nowhere)
        interrupt   the prompt's interrupt flag; checked before each node call and by ctx.progress
        """
        run = _Run(self, graph, prompt_id, extra_data or {}, events or NullSink(), interrupt or threading.Event())
        return run.go()


class _Stopped(Exception):
    def __init__(self, node_id: str | None):
        self.node_id = node_id


class _Failed(Exception):
    def __init__(self, node_id: str, error: BaseException, inputs: Mapping[str, Any]):
        self.node_id, self.error, self.inputs = node_id, error, inputs


class _Run:
    """The state of one prompt's execution (never shared between prompts)."""

    def __init__(self, executor: Executor, graph: Graph, prompt_id: str, extra_data: Mapping[str, Any],
                 events: EventSink, interrupt: Interrupt):
        self.x = executor
        self.graph = graph
        self.prompt_id = prompt_id
        self.events = events
        self.interrupt = interrupt
        self.nodes: dict[str, GraphNode] = dict(graph.nodes)  # the graph's nodes, and those expansions add
        self.parent: dict[str, str] = {}  # expansion node -> the node that added it
        self.roots: dict[str, str] = {}  # expansion node -> the prompt node it comes from
        self.added: dict[str, Mapping[str, Any]] = {}  # expansion node -> its prompt entry (ids as renamed)
        self.display: dict[str, str] = {}  # expansion node -> the prompt node shown for it
        self.pending: dict[str, _Expansion] = {}  # nodes that expanded, until their expansion's outputs exist
        self.expansions = 0  # expansions so far (they number the ids of the nodes they add)
        self.stacked: set[str] = set()  # nodes on the run's stack waiting for sources above them
        self.loop: asyncio.AbstractEventLoop | None = None  # the run's event loop, made for its first async node
        self.flying: dict[str, _Flight] = {}  # async nodes whose calls are in flight
        self.parked: dict[str, None] = {}  # nodes that wait only for nodes in flight (in the order they parked)
        self.client_id = extra_data.get("client_id")
        self.hidden_base = {"PROMPT": graph.prompt, "DYNPROMPT": DynamicPrompt(self),
                            "EXTRA_PNGINFO": extra_data.get("extra_pnginfo")}
        self.keys: dict[str, bytes] = {}
        self.volatile: set[str] = set()
        self.results: dict[str, NodeOutput] = {}  # outputs this run holds (cache eviction cannot lose them)
        self.to_run: set[str] = set()
        self.hits: list[str] = []
        self.hit_set: set[str] = set()
        self.output_set = frozenset(graph.outputs)
        self.cached: list[str] = []
        self.executed: list[str] = []
        self.requested: dict[str, set[str]] = {}  # lazy inputs a node asked for
        self.waiting: dict[str, int] = {}  # consumers still to run, per source node
        self.holds: dict[str, set[str]] = {}  # the sources each node to run is counted as waiting on
        self.ui: dict[str, Mapping[str, Any]] = {}
        self.timings: dict[str, float] = {}
        self.messages: list[Event] = []
        self.current: str | None = None

    # ---- the run -------------------------------------------------------------------------------------------------
    def go(self) -> Outcome:
        started = time.perf_counter()
        self.message(ExecutionStart(self.prompt_id, self.now()))
        status: Status
        error: ExecutionError | ExecutionInterrupted | None = None
        try:
            self.check_specs()
            self.compute_keys()
            self.plan()
            self.message(ExecutionCached(tuple(self.cached), self.prompt_id, self.now()))
            self.produce(self.graph.outputs)
        except _Stopped as stop:
            status = "interrupted"
            node_id = stop.node_id
            error = ExecutionInterrupted(self.prompt_id, node_id, self.node_type(node_id), self.done_ids(),
                                         self.now())
            self.message(error)
        except _Failed as failure:
            status = "error"
            error = self.error_event(failure.node_id, failure.error, failure.inputs)
            self.message(error)
        except Exception as exc:  # a fault outside any node (a sizeof, a context factory...): still an answer
            log.exception("prompt %s failed outside a node", self.prompt_id)
            status = "error"
            error = self.error_event(self.current, exc, {})
            self.message(error)
        else:
            status = "success"
            self.message(ExecutionSuccess(self.prompt_id, self.now()))
        finally:
            self.close_loop()
        return Outcome(prompt_id=self.prompt_id, status=status, outputs=dict(self.ui),
                       executed=tuple(self.executed), cached=tuple(self.cached), error=error,
                       messages=tuple(self.messages), timings=dict(self.timings),
                       duration=time.perf_counter() - started)

    def check_specs(self) -> None:
        for node in self.graph.nodes.values():
            if self.x.registry.get(node.class_type) is not node.spec:
                raise RuntimeError(f"node '{node.id}' ({node.class_type}) was validated against another registry "
                                   "version; validate the prompt again")

    def compute_keys(self, order: tuple[str, ...] | None = None, *, expansion: bool = False) -> None:
        """The cache key of each node of `order` (default: the graph's), sources first. A node an expansion handed
        a value other than a link or a widget literal is volatile (ComfyUI: an unhashable input)."""
        keys, volatile, nodes = self.keys, self.volatile, self.nodes
        for node_id in self.graph.order if order is None else order:
            node = nodes[node_id]
            digest = hashlib.blake2b(node.signature, digest_size=16)
            unstable = node.spec.always_run or (expansion and any(
                not node.spec.input(name).is_widget for name in node.literals))
            for link in node.links.values():
                digest.update(keys[link.source])
                unstable = unstable or link.source in volatile
            if node.spec.fingerprint is not None and not unstable:
                fingerprint = self.fingerprint(node_id)
                if fingerprint is _VOLATILE:
                    unstable = True
                else:
                    digest.update(fingerprint)
            if unstable:
                volatile.add(node_id)
            keys[node_id] = digest.digest()

    def fingerprint(self, node_id: str) -> Any:
        node = self.nodes[node_id]
        try:
            value = node.spec.fingerprint(self.context(node_id, _no_progress), dict(node.literals))
        except Exception as exc:
            log.warning("fingerprint of node %s (%s) failed, so it will run: %s", node_id, node.class_type, exc)
            return _VOLATILE
        if isinstance(value, float) and math.isnan(value):  # ComfyUI's IS_CHANGED idiom for "always changed"
            return _VOLATILE
        return repr(value).encode()

    def plan(self) -> None:
        """Find what must run: walk back from the outputs, stopping at cache hits (whose values this run now holds)."""
        seen: set[str] = set()
        stack = list(reversed(self.graph.outputs))
        while stack:
            node_id = stack.pop()
            if node_id in seen:
                continue
            seen.add(node_id)
            if self.lookup(node_id):
                continue
            stack.extend(self.schedule(node_id))
        hits = self.hit_set
        self.cached = [n for n in self.graph.order
                       if n in hits or (n not in seen and n not in self.volatile and self.x.cache.contains(self.keys[n]))]

    def lookup(self, node_id: str) -> bool:
        if node_id in self.volatile:
            return False
        value = self.x.cache.get(self.keys[node_id])
        if value is None:
            return False
        self.results[node_id] = value
        self.hits.append(node_id)
        self.hit_set.add(node_id)
        return True

    def schedule(self, node_id: str) -> list[str]:
        """Mark a node to run; returns the sources it needs now (lazy inputs wait until asked for)."""
        self.to_run.add(node_id)
        node = self.nodes[node_id]
        lazy = node.spec.lazy_inputs
        sources = list(dict.fromkeys(link.source for name, link in node.links.items() if name not in lazy))
        self.holds[node_id] = set(sources)
        for source in sources:
            self.waiting[source] = self.waiting.get(source, 0) + 1
        return sources

    def produce(self, targets: tuple[str, ...]) -> None:
        """Run the outputs in order (or serve them from the cache), each with what it needs first: an iterative DFS.

        A node that expanded stays on the stack until the outputs of its expansion exist (so loops built from
        expansions that expand again never recurse). An async node leaves the stack while its calls are in flight;
        a node that needs only nodes in flight is parked, and the DFS goes on with the next output, so independent
        async nodes await together. Once nothing else can start, the loop runs until a call lands, and the parked
        nodes come back."""
        results, nodes, stacked, parked = self.results, self.nodes, self.stacked, self.parked
        queue = list(reversed(targets))
        stack: list[str] = []
        while True:
            if not stack:
                if queue:
                    target = queue.pop()
                    if target in self.hit_set:
                        self.resend_ui(target)
                    else:
                        stack.append(target)
                    continue
                if self.flying:
                    self.land_any()
                stack.extend(reversed(parked))
                parked.clear()
                stack.extend(t for t in reversed(targets) if t not in results and t not in self.flying)
                if not stack and not self.flying:
                    return
                continue
            node_id = stack[-1]
            if node_id in results:
                stack.pop()
                stacked.discard(node_id)
                continue
            if node_id in self.flying or node_id in parked:  # whoever needs it waits for it to land
                stack.pop()
                continue
            expansion = self.pending.get(node_id)
            if expansion is not None:
                missing = [source for source in expansion.needs if source not in results]
                if missing:
                    self.push(node_id, missing, stack)
                else:
                    self.finish(node_id, self.resolve(node_id, expansion))
                continue
            if node_id not in self.to_run:  # asked for lazily (or released and needed again)
                if self.lookup(node_id):
                    stack.pop()
                    continue
                self.schedule(node_id)
            node = nodes[node_id]
            lazy = node.spec.lazy_inputs
            asked = self.requested.get(node_id, ())
            missing = [link.source for name, link in node.links.items()
                       if (name not in lazy or name in asked) and link.source not in results]
            if missing:
                self.push(node_id, missing, stack)
                continue
            if lazy and self.ask_lazy(node_id):
                continue
            self.run_node(node_id)  # it stays on the stack if it expanded or went in flight

    def push(self, node_id: str, missing: list[str], stack: list[str]) -> None:
        """Put the sources `node_id` waits for on the stack; when all of them are in flight (or parked), park it.
        Only an expansion can link back to a node waiting for it (a prompt's cycles are refused when it is
        validated): that is an error of the expanding node."""
        grounded = [source for source in missing if source not in self.flying and source not in self.parked]
        if not grounded:
            stack.pop()
            self.stacked.discard(node_id)
            self.parked[node_id] = None
            return
        for source in grounded:
            if source in self.stacked:
                origin = self.parent.get(node_id, node_id)
                raise _Failed(origin, RuntimeError(
                    f"dependency cycle: node '{node_id}' needs node '{source}', which waits for it (a graph "
                    "expansion links back to a node that waits for the expansion)"), {})
        self.stacked.add(node_id)
        stack.extend(grounded)

    def ask_lazy(self, node_id: str) -> bool:
        """Ask the node which lazy inputs it needs; True if new ones were requested (so it must wait)."""
        node = self.nodes[node_id]
        linked_lazy = [name for name in node.links if name in node.spec.lazy_inputs]
        asked = self.requested.setdefault(node_id, set())
        open_names = [name for name in linked_lazy if name not in asked]
        if not open_names:
            return False
        if node.spec.check_lazy is None:
            wanted = open_names  # no check_lazy: every lazy input is needed (ComfyUI v3 default)
        else:
            inputs = self.gather(node_id)
            wanted = []
            ctx = self.context(node_id, _no_progress)
            for call in self.calls(node.spec, inputs, {}):
                # the values check_lazy sees: evaluated inputs, None for lazy ones not evaluated yet
                try:
                    names = node.spec.check_lazy(ctx, call)
                except Exception as exc:
                    if self.interrupt.is_set():
                        raise _Stopped(node_id) from exc
                    raise _Failed(node_id, exc, inputs) from exc
                wanted.extend(n for n in names if n in open_names and n not in wanted)
        if not wanted:
            return False
        holds = self.holds.setdefault(node_id, set())
        for name in wanted:
            asked.add(name)
            source = node.links[name].source
            if source not in holds:
                holds.add(source)
                self.waiting[source] = self.waiting.get(source, 0) + 1
        return True

    def run_node(self, node_id: str) -> None:
        if self.interrupt.is_set():
            raise _Stopped(node_id)
        self.current = node_id
        self.stacked.discard(node_id)  # its inputs are there
        node = self.nodes[node_id]
        spec = node.spec
        self.send(Executing(node_id, self.prompt_id, self.place(node_id)))
        inputs = self.gather(node_id)
        hidden = {arg: self.hidden_value(kind, node_id) for arg, kind in spec.hidden.items()}
        ctx = self.context(node_id, self.reporter(node_id))
        started = time.perf_counter()
        try:
            returned = self.call(node_id, spec, ctx, inputs, hidden)
        except Exception as exc:
            if self.interrupt.is_set():
                raise _Stopped(node_id) from exc
            raise _Failed(node_id, exc, inputs) from exc
        if any(inspect.isawaitable(result) for result in returned):
            self.launch(node_id, returned, inputs, started)  # an async node: it runs while others do
            return
        self.settle(node_id, returned, inputs, started)

    def settle(self, node_id: str, returned: list[Any], inputs: Mapping[str, Any], started: float) -> None:
        """A node's calls have returned: its outputs, or the expansion it runs in its place."""
        try:
            output = self.outputs(node_id, self.nodes[node_id].spec, returned)
        except Exception as exc:
            raise _Failed(node_id, exc, inputs) from exc
        self.timings[node_id] = time.perf_counter() - started
        if isinstance(output, _Expansion):
            self.pending[node_id] = output
            return
        self.finish(node_id, output)

    def finish(self, node_id: str, output: NodeOutput) -> None:
        """A node's outputs exist (it ran, or its expansion did): keep them, cache them, show its ui."""
        self.results[node_id] = output
        self.stacked.discard(node_id)
        self.executed.append(node_id)
        if node_id not in self.volatile:
            self.x.cache.put(self.keys[node_id], output)
        if output.ui is not None:
            self.ui[node_id] = output.ui
            self.send(Executed(node_id, output.ui, self.prompt_id, self.place(node_id)))
        self.release(self.holds.pop(node_id, ()))

    def gather(self, node_id: str) -> dict[str, tuple[Any, ...]]:
        """The node's inputs as item tuples; a lazy input not evaluated (yet) is None, as in ComfyUI."""
        node = self.nodes[node_id]
        results = self.results
        inputs: dict[str, tuple[Any, ...]] = {name: (value,) for name, value in node.literals.items()}
        for name, link in node.links.items():
            output = results.get(link.source)
            inputs[name] = (None,) if output is None else output.values[link.slot]
        return inputs

    def calls(self, spec: NodeSpec, inputs: Mapping[str, tuple[Any, ...]],
              hidden: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The keyword arguments of each call (ComfyUI list semantics: one call per item, shorter lists repeat their
        last item; an empty list means no call; input_is_list nodes get whole lists in one call)."""
        if spec.input_is_list:
            return [{**{k: list(v) for k, v in inputs.items()}, **{k: [v] for k, v in hidden.items()}}]
        longest = 1
        for items in inputs.values():
            if len(items) != 1:
                if not items:
                    return []
                longest = max(longest, len(items))
        if longest == 1:
            return [{**{k: v[0] for k, v in inputs.items()}, **hidden}]
        return [{**{k: v[i] if i < len(v) else v[-1] for k, v in inputs.items()}, **hidden} for i in range(longest)]

    def call(self, node_id: str, spec: NodeSpec, ctx: Any, inputs: Mapping[str, tuple[Any, ...]],
             hidden: Mapping[str, Any]) -> list[Any]:
        """What each call returned: a Result, or an awaitable of one (an async node)."""
        returned: list[Any] = []
        for index, kwargs in enumerate(self.calls(spec, inputs, hidden)):
            if index and self.interrupt.is_set():
                raise _Stopped(node_id)
            returned.append(spec.call(ctx, kwargs))
        return returned

    def outputs(self, node_id: str, spec: NodeSpec, results: list[Any]) -> NodeOutput | _Expansion:
        slots = spec.outputs
        returned: list[tuple[tuple[Any, ...], Mapping[str, Any] | None]] = []
        uis: list[Mapping[str, Any]] = []
        for result in results:
            values = tuple(result.values)
            if len(values) != len(slots):
                raise TypeError(f"{spec.name} returned {len(values)} value{'s' if len(values) != 1 else ''}; "
                                f"it declares {len(slots)} output{'s' if len(slots) != 1 else ''} "
                                f"({', '.join(o.type for o in slots) or 'none'})")
            returned.append((values, getattr(result, "expand", None)))
            if result.ui is not None:
                uis.append(result.ui)
        if any(expand is not None for _, expand in returned):
            return self.expand(node_id, returned, _merge_ui(uis))
        return NodeOutput(values=_collect(spec, [values for values, _ in returned]), ui=_merge_ui(uis))

    # ---- async nodes -----------------------------------------------------------------------------------------------
    # An async node's calls become one task on the run's event loop (owned by the worker thread). The node leaves
    # the stack while its task is in flight, so the nodes that do not depend on it run meanwhile (several async nodes
    # await together, as in ComfyUI); a node that needs it lands it: the loop runs until one task in flight is done.
    # An interrupt cancels every task in flight.
    def launch(self, node_id: str, returned: list[Any], inputs: Mapping[str, Any], started: float) -> None:
        async def calls() -> list[Any]:
            awaited = iter(await asyncio.gather(*[r for r in returned if inspect.isawaitable(r)]))
            return [next(awaited) if inspect.isawaitable(r) else r for r in returned]

        loop = self.event_loop()
        if loop is None:  # a thread that already runs a loop: await here, in a helper thread
            async def alone() -> Any:
                task = asyncio.ensure_future(calls())
                await self.first_done({task})
                return task

            with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
                self.flying[node_id] = _Flight(pool.submit(asyncio.run, alone()).result(), inputs, started)
            self.land(node_id)
            return
        task = loop.create_task(calls())
        self.flying[node_id] = _Flight(task, inputs, started)
        loop.run_until_complete(asyncio.sleep(0))  # let it start (it may even be done at once)
        if task.done():
            self.land(node_id)

    def land_any(self) -> None:
        """Run the loop until a task in flight is done; settle the nodes whose tasks are."""
        loop = self.event_loop()
        tasks = {flight.task: node_id for node_id, flight in self.flying.items()}
        assert loop is not None and tasks
        loop.run_until_complete(self.first_done(set(tasks)))
        for task, node_id in tasks.items():
            if task.done():
                self.land(node_id)

    async def first_done(self, tasks: set[Any]) -> None:
        """Wait until one of `tasks` is done; on an interrupt, cancel them all (landing them then stops the run)."""
        while True:
            done, _ = await asyncio.wait(tasks, timeout=INTERRUPT_POLL_SECONDS, return_when=asyncio.FIRST_COMPLETED)
            if done:
                return
            if self.interrupt.is_set():
                for task in tasks:
                    task.cancel()
                await asyncio.wait(tasks)
                return

    def land(self, node_id: str) -> None:
        flight = self.flying.pop(node_id)
        self.current = node_id
        try:
            returned = flight.task.result()
        except BaseException as exc:  # CancelledError included: the interrupt cancelled it
            if self.interrupt.is_set():
                raise _Stopped(node_id) from exc
            if isinstance(exc, asyncio.CancelledError):  # cancelled by the node's own code
                exc = RuntimeError(f"the call of node {node_id} was cancelled")
            elif not isinstance(exc, Exception):
                raise
            raise _Failed(node_id, exc, flight.inputs) from exc
        self.settle(node_id, returned, flight.inputs, flight.started)

    def event_loop(self) -> asyncio.AbstractEventLoop | None:
        """The run's event loop (made when the first async node runs); None in a thread already running one."""
        if self.loop is None:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                self.loop = asyncio.new_event_loop()
            else:
                return None
        return self.loop

    def close_loop(self) -> None:
        loop, self.loop = self.loop, None
        if loop is None:
            return
        try:
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in pending:  # tasks a node started and left behind end with the run
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    # ---- graph expansion -----------------------------------------------------------------------------------------
    def expand(self, node_id: str, returned: list[tuple[tuple[Any, ...], Mapping[str, Any] | None]],
               ui: Mapping[str, Any] | None) -> _Expansion:
        """Add the graphs a node's calls returned to the run, in the node's place (ComfyUI's graph expansion).

        Ids: an id under the node's own (`<node>.<...>`, as ComfyUI's GraphBuilder makes them) is kept, one starting
        with "." is taken as relative to it (a GraphBuilder prefix whose root was left empty); any other is placed
        under the prompt node the expansion comes from, as `<prompt node>.<n>.<id>` (n counts this run's
        expansions, so ids stay short in loops that expand again). Links inside a graph follow its renames; other
        links name nodes of the run. The node waits for the expansion's outputs it returns as links, and for the
        expansion's output nodes."""
        root = self.roots.get(node_id, node_id)
        display = self.display.get(node_id, node_id)
        calls: list[tuple[Any, ...]] = []
        needs: dict[str, None] = {}
        for values, graph in returned:
            if graph is None:
                calls.append(values)
                continue
            if not isinstance(graph, Mapping):
                raise TypeError(f"node {node_id} returned an expansion that is a {type(graph).__name__}, not a "
                                "graph (an object of nodes by id)")
            self.expansions += 1
            names = {local: _inner_id(local, node_id, f"{root}.{self.expansions}.") for local in graph}
            for new_id in names.values():
                if new_id in self.nodes:
                    raise RuntimeError(f"node {node_id} expanded into a node with the id '{new_id}', which the run "
                                       "already has: expansion ids must be unique (GraphBuilder makes them so)")
            prompt = {names[local]: _renamed(info, names) for local, info in graph.items()}
            inner, order = validate_expansion(prompt, self.x.registry, self.nodes)
            for local, new_id in names.items():
                self.nodes[new_id] = inner[new_id]
                self.added[new_id] = prompt[new_id]
                self.parent[new_id] = node_id
                self.roots[new_id] = root
                override = graph[local].get("override_display_id")
                self.display[new_id] = self.display.get(override, override) if isinstance(override, str) else display
                if inner[new_id].spec.output_node:
                    needs[new_id] = None
            self.compute_keys(order, expansion=True)
            values = tuple(_renamed_value(value, names) for value in values)
            for value in values:
                if is_link(value) and value[0] in self.nodes:
                    needs[value[0]] = None
            calls.append(values)
        holds = self.holds.setdefault(node_id, set())
        for source in needs:
            if source not in holds:
                holds.add(source)
                self.waiting[source] = self.waiting.get(source, 0) + 1
        return _Expansion(calls=tuple(calls), needs=tuple(needs), ui=ui)

    def resolve(self, node_id: str, expansion: _Expansion) -> NodeOutput:
        """The outputs of a node whose expansion has run: each link it returned replaced by the items of that
        output. The node is cached by its own key, as ComfyUI caches it, whatever its expansion held (values handed
        to linked inputs, nodes that always run): the same inputs expand the same way."""
        del self.pending[node_id]
        results, nodes = self.results, self.nodes
        calls: list[tuple[Any, ...]] = []
        for values in expansion.calls:
            resolved: list[Any] = []
            for value in values:
                if is_link(value) and value[0] in nodes:
                    resolved.append(_Items(results[value[0]].values[int(value[1])]))
                else:
                    resolved.append(value)
            calls.append(tuple(resolved))
        return NodeOutput(values=_collect(nodes[node_id].spec, calls), ui=expansion.ui)

    def release(self, sources: set[str] | tuple[()]) -> None:
        """Drop this run's hold on outputs no remaining node of the run needs (the cache may still keep them)."""
        for source in sources:
            left = self.waiting.get(source, 0) - 1
            self.waiting[source] = left
            if left <= 0 and source not in self.output_set:
                self.results.pop(source, None)

    def resend_ui(self, node_id: str) -> None:
        ui = self.results[node_id].ui
        if ui is not None:
            self.ui[node_id] = ui
            self.send(Executed(node_id, ui, self.prompt_id, self.place(node_id)))

    # ---- context, events, errors ---------------------------------------------------------------------------------
    def context(self, node_id: str, report: Callable[[int, int, Any], None]) -> Any:
        return self.x.context_factory(node_id=node_id, prompt_id=self.prompt_id,
                                      hidden={**self.hidden_base, "UNIQUE_ID": node_id},
                                      report_progress=report, is_interrupted=self.interrupt.is_set)

    def hidden_value(self, kind: str, node_id: str) -> Any:
        return node_id if kind == "UNIQUE_ID" else self.hidden_base.get(kind)

    def reporter(self, node_id: str) -> Callable[[int, int, Any], None]:
        prompt_id, client_id, events, place = self.prompt_id, self.client_id, self.events, self.place(node_id)

        def report(value: int, total: int, preview: Any = None) -> None:
            events.emit(Progress(value, total, prompt_id, node_id, preview, place), client_id=client_id)

        return report

    def place(self, node_id: str) -> NodePlace | None:
        """Where a node an expansion added belongs (None for the prompt's own nodes)."""
        parent = self.parent.get(node_id)
        if parent is None:
            return None
        return NodePlace(self.display[node_id], parent, self.roots[node_id])

    def send(self, event: Event) -> None:
        self.events.emit(event, client_id=self.client_id)

    def message(self, event: Event) -> None:
        """An event that also goes into the history's status.messages."""
        self.messages.append(event)
        self.send(event)

    def now(self) -> int:
        return int(self.x.clock() * 1000)

    def node_type(self, node_id: str | None) -> str | None:
        node = self.nodes.get(node_id) if node_id is not None else None
        return node.class_type if node is not None else None

    def done_ids(self) -> list[str]:
        return list(dict.fromkeys([*self.cached, *self.executed]))

    def error_event(self, node_id: str | None, exc: BaseException, inputs: Mapping[str, Any]) -> ExecutionError:
        message = str(exc) or type(exc).__name__
        if self.x.on_error is not None:
            try:
                hint = self.x.on_error(exc)
            except Exception:
                log.exception("on_error hook failed")
                hint = None
            if hint:
                message = f"{message}\n{hint}"
        return ExecutionError(
            prompt_id=self.prompt_id, node_id=node_id, node_type=self.node_type(node_id), executed=self.done_ids(),
            exception_message=message, exception_type=exception_type_name(exc),
            traceback=traceback.format_tb(exc.__traceback__),
            current_inputs={name: [_format(v) for v in items] for name, items in inputs.items()},
            current_outputs=list(self.results), timestamp=self.now())


_VOLATILE = object()
INTERRUPT_POLL_SECONDS = 0.02  # how often an awaiting async node checks for an interrupt


class DynamicPrompt:
    """The DYNPROMPT hidden input: the prompt as this run has it, expansions included (ComfyUI's
    comfy_execution.graph.DynamicPrompt; loop nodes read the nodes of their body through it)."""

    def __init__(self, run: _Run):
        self._run = run

    def get_node(self, node_id: str) -> Mapping[str, Any]:
        run = self._run
        if node_id in run.added:
            return run.added[node_id]
        if node_id in run.graph.prompt:
            return run.graph.prompt[node_id]
        raise KeyError(node_id)

    def has_node(self, node_id: str) -> bool:
        return node_id in self._run.added or node_id in self._run.graph.prompt

    def get_original_prompt(self) -> Mapping[str, Any]:
        return self._run.graph.prompt

    def all_node_ids(self) -> set[str]:
        return set(self._run.graph.prompt) | set(self._run.added)

    def get_real_node_id(self, node_id: str) -> str:
        return self._run.roots.get(node_id, node_id)

    def get_parent_node_id(self, node_id: str) -> str | None:
        return self._run.parent.get(node_id)

    def get_display_node_id(self, node_id: str) -> str:
        return self._run.display.get(node_id, node_id)


@dataclass(frozen=True)
class _Flight:
    """An async node in flight: the task of its calls, its inputs (for errors) and when it started."""

    task: Any
    inputs: Mapping[str, Any]
    started: float


@dataclass(frozen=True)
class _Expansion:
    """A node that expanded: the values of each of its calls (links into the expansion among them), the nodes
    whose outputs it waits for, and its ui."""

    calls: tuple[tuple[Any, ...], ...]
    needs: tuple[str, ...]
    ui: Mapping[str, Any] | None


class _Items(tuple):
    """All the items of one output of an expansion, standing for one returned value."""


def _collect(spec: NodeSpec, calls: list[tuple[Any, ...]]) -> tuple[tuple[Any, ...], ...]:
    """The items of each output slot over a node's calls (a list output's values are concatenated; a link to an
    expansion's output contributes all its items)."""
    per_slot: list[list[Any]] = [[] for _ in spec.outputs]
    for values in calls:
        for items, value, slot in zip(per_slot, values, spec.outputs):
            if isinstance(value, _Items):
                items.extend(value)
            elif slot.is_list:
                if not isinstance(value, (list, tuple)):
                    raise TypeError(f"{spec.name} output {slot.name or slot.type} is a list output; "
                                    f"the node returned {type(value).__name__}")
                items.extend(value)
            else:
                items.append(value)
    return tuple(tuple(items) for items in per_slot)


def _inner_id(local: Any, node_id: str, prefix: str) -> str:
    if isinstance(local, str):
        if local.startswith(node_id + "."):
            return local
        if local.startswith("."):
            return node_id + local
    return f"{prefix}{local}"


def _renamed(info: Any, names: Mapping[str, str]) -> Any:
    """An expansion node with its links to other nodes of the expansion renamed."""
    if not isinstance(info, Mapping) or not isinstance(info.get("inputs", {}), Mapping):
        return info  # validation reports it
    renamed = dict(info)
    renamed["inputs"] = {name: _renamed_value(value, names) for name, value in (info.get("inputs") or {}).items()}
    return renamed


def _renamed_value(value: Any, names: Mapping[str, str]) -> Any:
    if is_link(value) and value[0] in names:
        return [names[value[0]], value[1]]
    return value


def _no_progress(value: int, total: int, preview: Any = None) -> None:
    pass


def _merge_ui(uis: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """ComfyUI merges the ui of list-mapped calls key by key, concatenating lists."""
    if not uis:
        return None
    if len(uis) == 1:
        return uis[0]
    merged: dict[str, Any] = {}
    for ui in uis:
        for key, value in ui.items():
            items = merged.setdefault(key, [])
            if isinstance(value, (list, tuple)):
                items.extend(value)
            else:
                items.append(value)
    return merged


def _format(value: Any) -> Any:
    """An input value as shown in execution_error: primitives as they are, anything else described briefly
    (never str() of a tensor: it is slow, large, and leaks data to the browser)."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value if len(value) <= 200 else value[:197] + "..."
    shape = getattr(value, "shape", None)
    kind = type(value).__qualname__
    if shape is not None:
        try:
            return f"{kind}(shape={list(shape)}, dtype={getattr(value, 'dtype', '?')})"
        except TypeError:
            pass
    if isinstance(value, (list, tuple)):
        return f"{kind} of {len(value)} items"
    return kind
