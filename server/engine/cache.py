"""Node outputs kept between prompts, by signature, under a byte budget with LRU eviction.

Sizes come from an injected `sizeof(value) -> (cpu_bytes, gpu_bytes)`: the app passes a torch-aware one (built with
`walk_sizeof`), tests pass a simple one; nothing here imports torch. CPU and GPU bytes have separate budgets and
separate accounting: a GPU tensor stays where it is, and when the GPU budget is exceeded only entries holding GPU
bytes are evicted (oldest first), likewise for the CPU. An entry larger than a budget on its own is not kept
(counted as `rejected`). Thread-safe: the worker fills it while HTTP handlers read stats or clear it.

The executor holds the outputs a running prompt still needs itself, so eviction never loses them mid-run.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

Sizeof = Callable[[Any], "tuple[int, int]"]


def no_size(value: Any) -> tuple[int, int]:
    """A sizeof that counts nothing (only `max_entries` then bounds the cache)."""
    return (0, 0)


def walk_sizeof(leaf: Callable[[Any], tuple[int, int] | None]) -> Sizeof:
    """A sizeof that walks tuples, lists, sets, dict values and dataclass fields (iteratively, each object once)
    and asks `leaf(obj)` for the size of everything else; `leaf` returns None for "nothing to count, look inside"
    (containers) or for objects that hold no memory worth counting."""

    def sizeof(value: Any) -> tuple[int, int]:
        cpu = gpu = 0
        seen: set[int] = set()
        stack = [value]
        while stack:
            obj = stack.pop()
            if id(obj) in seen or obj is None or isinstance(obj, (str, bytes, int, float, bool)):
                continue
            seen.add(id(obj))
            size = leaf(obj)
            if size is not None:
                cpu += size[0]
                gpu += size[1]
            elif isinstance(obj, (tuple, list, set, frozenset)):
                stack.extend(obj)
            elif isinstance(obj, Mapping):
                stack.extend(obj.values())
            elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
                stack.extend(getattr(obj, f.name) for f in dataclasses.fields(obj))
        return cpu, gpu

    return sizeof


@dataclass(frozen=True)
class CacheStats:
    entries: int
    hits: int
    misses: int
    evictions: int
    rejected: int
    cpu_bytes: int
    gpu_bytes: int
    cpu_budget: int
    gpu_budget: int

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass
class _Entry:
    value: Any
    cpu: int
    gpu: int


class OutputCache:
    """LRU cache of node outputs by key, bounded by CPU and GPU byte budgets (and optionally an entry count).

    get(key)        the value (marks it recently used) or None; counts a hit or a miss
    contains(key)   whether the key is cached, without touching recency or stats
    put(key, value) keep a value; returns False if it alone exceeds a budget
    clear()         drop everything (POST /free {"free_memory": true})
    """

    def __init__(self, *, cpu_budget: int = 4 << 30, gpu_budget: int = 2 << 30, sizeof: Sizeof = no_size,
                 max_entries: int | None = None):
        if cpu_budget < 0 or gpu_budget < 0:
            raise ValueError("cache budgets must be >= 0 bytes")
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._sizeof = sizeof
        self._cpu_budget, self._gpu_budget = cpu_budget, gpu_budget
        self._max_entries = max_entries
        self._cpu = self._gpu = 0
        self._hits = self._misses = self._evictions = self._rejected = 0

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self._misses += 1
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return entry.value

    def contains(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def __contains__(self, key: Hashable) -> bool:
        return self.contains(key)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def put(self, key: Hashable, value: Any) -> bool:
        cpu, gpu = self._sizeof(value)  # outside the lock: may walk a large structure
        with self._lock:
            self._remove(key)
            if cpu > self._cpu_budget or gpu > self._gpu_budget:
                self._rejected += 1
                return False
            self._entries[key] = _Entry(value, cpu, gpu)
            self._cpu += cpu
            self._gpu += gpu
            self._evict()
            return True

    def discard(self, key: Hashable) -> None:
        with self._lock:
            self._remove(key)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._cpu = self._gpu = 0

    def set_budgets(self, *, cpu_budget: int | None = None, gpu_budget: int | None = None) -> None:
        with self._lock:
            if cpu_budget is not None:
                self._cpu_budget = cpu_budget
            if gpu_budget is not None:
                self._gpu_budget = gpu_budget
            self._evict()

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(entries=len(self._entries), hits=self._hits, misses=self._misses,
                              evictions=self._evictions, rejected=self._rejected, cpu_bytes=self._cpu,
                              gpu_bytes=self._gpu, cpu_budget=self._cpu_budget, gpu_budget=self._gpu_budget)

    # ---- under the lock --------------------------------------------------------------------------------------------
    def _remove(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._cpu -= entry.cpu
            self._gpu -= entry.gpu

    def _evict(self) -> None:
        if self._cpu > self._cpu_budget:
            self._evict_while(lambda removed: self._cpu > self._cpu_budget, lambda e: e.cpu > 0)
        if self._gpu > self._gpu_budget:
            self._evict_while(lambda removed: self._gpu > self._gpu_budget, lambda e: e.gpu > 0)
        limit = self._max_entries
        if limit is not None and len(self._entries) > limit:
            self._evict_while(lambda removed: len(self._entries) - removed > limit, lambda e: True)

    def _evict_while(self, over: Callable[[int], bool], holds: Callable[[_Entry], bool]) -> None:
        victims = []
        for key, entry in self._entries.items():  # oldest first
            if not over(len(victims)):
                break
            if holds(entry):
                victims.append(key)
                self._cpu -= entry.cpu
                self._gpu -= entry.gpu
        for key in victims:
            del self._entries[key]
        self._evictions += len(victims)
