"""The output cache: LRU eviction by bytes, separate CPU and GPU budgets, stats, thread safety."""

import threading
from dataclasses import dataclass

import pytest

from server.engine.cache import OutputCache, walk_sizeof


@dataclass(frozen=True)
class Blob:
    """Stands in for a tensor: `nbytes` on `device`."""

    nbytes: int
    device: str = "cpu"


def blob_size(obj):
    if isinstance(obj, Blob):
        return (obj.nbytes, 0) if obj.device == "cpu" else (0, obj.nbytes)
    return None


sizeof = walk_sizeof(blob_size)


def test_get_returns_what_was_put_and_counts_hits_and_misses():
    cache = OutputCache(sizeof=sizeof)
    cache.put("a", Blob(10))
    assert cache.get("a") == Blob(10) and cache.get("b") is None
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.entries, stats.cpu_bytes) == (1, 1, 1, 10)


def test_least_recently_used_entries_are_evicted_by_bytes():
    cache = OutputCache(sizeof=sizeof, cpu_budget=100)
    for key in "abc":
        cache.put(key, Blob(40))  # c pushes a out (120 > 100)
    assert "a" not in cache and "b" in cache and "c" in cache
    cache.get("b")  # b is now the most recent
    cache.put("d", Blob(40))
    assert "c" not in cache and {"b", "d"} <= {k for k in "bd" if k in cache}
    stats = cache.stats()
    assert stats.evictions == 2 and stats.cpu_bytes == 80


def test_cpu_and_gpu_budgets_are_separate():
    cache = OutputCache(sizeof=sizeof, cpu_budget=100, gpu_budget=50)
    cache.put("cpu1", Blob(60))
    cache.put("gpu1", Blob(40, "cuda"))
    cache.put("gpu2", Blob(40, "cuda"))  # over the GPU budget: only a GPU entry goes
    assert "cpu1" in cache and "gpu1" not in cache and "gpu2" in cache
    stats = cache.stats()
    assert (stats.cpu_bytes, stats.gpu_bytes) == (60, 40)


def test_entry_larger_than_the_budget_is_not_kept():
    cache = OutputCache(sizeof=sizeof, cpu_budget=100)
    cache.put("small", Blob(10))
    assert cache.put("huge", Blob(1000)) is False
    assert "huge" not in cache and "small" in cache and cache.stats().rejected == 1


def test_walk_sizeof_counts_nested_values_once():
    shared = Blob(7)
    value = (shared, [shared, {"x": Blob(3, "cuda")}], Blob(5))
    assert sizeof(value) == (12, 3)


def test_replacing_a_key_updates_accounting():
    cache = OutputCache(sizeof=sizeof)
    cache.put("a", Blob(10))
    cache.put("a", Blob(30))
    assert cache.stats().cpu_bytes == 30 and len(cache) == 1


def test_clear_empties_the_cache():
    cache = OutputCache(sizeof=sizeof)
    cache.put("a", Blob(10, "cuda"))
    cache.clear()
    stats = cache.stats()
    assert (stats.entries, stats.cpu_bytes, stats.gpu_bytes) == (0, 0, 0)


def test_shrinking_budgets_evicts_at_once():
    cache = OutputCache(sizeof=sizeof, cpu_budget=100)
    for key in "abcd":
        cache.put(key, Blob(20))
    cache.set_budgets(cpu_budget=40)
    assert [k for k in "abcd" if k in cache] == ["c", "d"]


def test_max_entries_bounds_the_count():
    cache = OutputCache(max_entries=2)
    for key in "abc":
        cache.put(key, key)
    assert len(cache) == 2 and "a" not in cache


def test_negative_budget_is_refused():
    with pytest.raises(ValueError):
        OutputCache(cpu_budget=-1)


def test_concurrent_puts_keep_the_books_balanced():
    cache = OutputCache(sizeof=sizeof, cpu_budget=1000)

    def writer(offset):
        for i in range(500):
            cache.put((offset, i % 50), Blob(10))
            cache.get((offset, (i * 7) % 50))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = cache.stats()
    assert stats.cpu_bytes == 10 * stats.entries <= 1000
