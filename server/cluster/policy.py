"""Which pending prompt an idle worker should take: model affinity with bounded waiting (pure; no threads, no I/O).

Seen from one idle worker W, over the first pending prompts in queue order (the lookahead window):
  1. W never takes a prompt naming a model file W lacks.
  2. A prompt passed over `max_skips` times (later prompts were taken before it) is taken first: affinity may
     reorder the queue, never starve a prompt.
  3. The first prompt whose model files W already holds (an affinity hit: no load).
  4. Else, in order, the first prompt that no other live worker able to run it holds the models of (new models go
     to whoever is free; prompts without model files too). A prompt held by an *idle* other worker is left to it;
     one held only by *busy* workers is taken once waiting for them would cost about `affinity_wait` seconds (the
     price of a load, roughly): when W has been idle that long, or when the holders' backlog (pending prompts
     with the same models, per holder, times `expected_run` seconds per prompt) is that long. Waiting a little for
     the holder beats loading a second copy; a long queue of one model spreads over every free worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    """A pending prompt: its id, the model files it names ("folder/name"), and how often it was passed over."""

    prompt_id: str
    models: frozenset[str]
    skips: int = 0


@dataclass(frozen=True)
class WorkerView:
    """What the policy knows of a worker: whether it is idle, the model files it holds loaded, and the files it
    has (None: its inventory is not known yet, assume it has everything)."""

    id: str
    idle: bool
    held: frozenset[str]
    files: frozenset[str] | None = None

    def can_run(self, candidate: Candidate) -> bool:
        return self.files is None or candidate.models <= self.files

    def holds(self, candidate: Candidate) -> bool:
        return bool(candidate.models) and candidate.models <= self.held


def choose(worker: WorkerView, candidates: Sequence[Candidate], others: Sequence[WorkerView], *,
           idle_for: float, affinity_wait: float, max_skips: int, expected_run: float = 0.0) -> Candidate | None:
    """The prompt `worker` should take now, or None (wait). `others`: the other live workers; `expected_run`:
    seconds a prompt takes, recently (0: unknown)."""
    runnable = [c for c in candidates if worker.can_run(c)]
    for candidate in runnable:
        if candidate.skips >= max_skips:
            return candidate
    for candidate in runnable:
        if worker.holds(candidate):
            return candidate
    for candidate in runnable:
        holders = [o for o in others if o.can_run(candidate) and o.holds(candidate)]
        if not holders:
            return candidate
        if any(o.idle for o in holders):
            continue
        backlog = sum(1 for c in runnable if c.models == candidate.models)
        if idle_for >= affinity_wait or backlog / len(holders) * expected_run >= affinity_wait:
            return candidate
    return None
