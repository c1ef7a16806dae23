"""Shared helpers of the model benchmarks: isolated worker processes, peak memory, timing summaries, tables.

A benchmark that compares two ways of doing something runs each one in a fresh worker process (`run_worker`), so
the peak resident memory of one never hides inside the other's and neither inherits the other's warm caches. The
worker is the same module started with `--worker '<json spec>'`; it prints one `BENCH_RESULT {json}` line.
`run_inline` calls the same function in this process instead (seconds cheaper: the smoke tests use it); memory
figures are then increases measured from a reset peak, not whole-process peaks.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

RESULT_TAG = "BENCH_RESULT "
Isolation = Literal["subprocess", "inline"]
GiB = 1024**3
MiB = 1024**2


class WorkerError(RuntimeError):
    """A benchmark worker process failed; carries its exit code and the end of its stderr."""


# ---------------------------------------------------------------------------------------------------------------
# Memory


def _status_bytes(field: str) -> int | None:
    """A `kB` field of /proc/self/status (VmRSS, VmHWM) in bytes; None where /proc is not there."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def current_rss() -> int | None:
    """Resident set size of this process now, in bytes (None when unknown)."""
    return _status_bytes("VmRSS")


def peak_rss() -> int:
    """Peak resident set size of this process (since start or the last `reset_peak_rss`), in bytes.

    Why not tracemalloc: torch allocates its tensors outside Python's allocator, so only the kernel's count sees them.
    """
    hwm = _status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS, kB on Linux


def reset_peak_rss() -> bool:
    """Set the peak RSS back to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs). False if refused."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


@dataclass(frozen=True)
class MemoryMark:
    """RSS figures around one phase of a worker."""

    start: int | None
    """RSS when the phase began (bytes)."""
    peak: int | None
    """Peak RSS during the phase (bytes); None when the peak could not be reset for it (inline mode off Linux)."""


def phase_start() -> tuple[int | None, bool]:
    """Begin a memory phase: (current RSS, whether the peak was reset to it)."""
    return current_rss(), reset_peak_rss()


def phase_end(start: tuple[int | None, bool], *, whole_process: bool) -> MemoryMark:
    """The phase's peak: a reset peak, or the whole-process peak when this process exists only for the phase."""
    rss, was_reset = start
    return MemoryMark(rss, peak_rss() if (was_reset or whole_process) else None)


class RssSampler:
    """Peak anonymous and file-backed RSS over a block, sampled from /proc/self/status every `interval` seconds.

    Why: the kernel's own peak (VmHWM) adds memory-mapped file pages, which the kernel can drop again under
    pressure, to the process's private memory, which it cannot; a loader reading through mmap looks as heavy as
    one copying the whole file unless the two are told apart. Peaks between samples can be missed (short spikes).
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak_anon: int | None = None
        self.peak_file: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        anon, file = _status_bytes("RssAnon"), _status_bytes("RssFile")
        if anon is not None:
            self.peak_anon = max(self.peak_anon or 0, anon)
        if file is not None:
            self.peak_file = max(self.peak_file or 0, file)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


# ---------------------------------------------------------------------------------------------------------------
# Workers


def run_worker(module: str, spec: dict[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
    """Run `python -m <module> --worker '<spec json>'` in a fresh process and return its result dict."""
    command = [sys.executable, "-m", module, "--worker", json.dumps(spec)]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=root)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    tail = (done.stderr or done.stdout)[-3000:]
    raise WorkerError(f"{module} worker {spec.get('name', spec)} exited with {done.returncode}:\n{tail}")


def worker_main(function: Callable[[dict[str, Any]], dict[str, Any]], spec_json: str) -> int:
    """The worker side: run `function(spec)` and print its result as the tagged JSON line."""
    result = function(json.loads(spec_json))
    print(RESULT_TAG + json.dumps(result), flush=True)
    return 0


def run_inline(function: Callable[[dict[str, Any]], dict[str, Any]], spec: dict[str, Any]) -> dict[str, Any]:
    """Run a worker function in this process (no isolation: memory figures are increases, not peaks)."""
    return json.loads(json.dumps(function(spec)))  # the same JSON round trip as a worker's result


# ---------------------------------------------------------------------------------------------------------------
# Timing and formatting


@dataclass(frozen=True)
class Spread:
    """Median and range of repeated timings, in seconds."""

    median: float
    low: float
    high: float
    runs: int

    @staticmethod
    def of(times: Sequence[float]) -> Spread:
        if not times:
            raise ValueError("no timings to summarise")
        return Spread(statistics.median(times), min(times), max(times), len(times))

    def show(self) -> str:
        """'12.3 s (11.9-13.0, n=3)'."""
        return f"{seconds(self.median)} ({_bare(self.low)}-{_bare(self.high)}, n={self.runs})"


def _bare(value: float) -> str:
    return f"{value * 1e3:.1f}" if value < 1 else f"{value:.2f}"


def seconds(value: float) -> str:
    """A duration, in ms below one second."""
    return f"{value * 1e3:.1f} ms" if value < 1 else f"{value:.2f} s"


def size(value: int | None) -> str:
    """A byte count as GiB (or MiB below 1 GiB); '-' for unknown."""
    if value is None:
        return "-"
    if value >= GiB:
        return f"{value / GiB:.2f} GiB"
    return f"{value / MiB:.1f} MiB" if value < 10 * MiB else f"{value / MiB:.0f} MiB"


def ratio(ours: float, baseline: float) -> str:
    return f"{ours / baseline:.2f}x" if baseline > 0 else "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table with a header rule, columns padded to their widest cell."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    fmt = " | ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*headers), "-+-".join("-" * w for w in widths)]
    lines += [fmt.format(*row) for row in rows]
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _total_memory() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _git_state(paths: Sequence[str]) -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *paths], cwd=root, capture_output=True,
                               text=True, timeout=10).stdout.rstrip()  # rstrip: a status column may start with " "
    except (OSError, subprocess.SubprocessError):
        return "git: unknown"
    if not head:
        return "git: unknown"
    changed = ", ".join(line[3:] for line in dirty.splitlines())
    return f"git {head}" + (f" + uncommitted changes in {changed}" if changed else "")


def machine_description(code_paths: Sequence[str] = ()) -> str:
    """Date, machine, library versions and load: the header every saved result starts with."""
    import torch

    cores = os.cpu_count() or 0
    parts = [
        f"date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"machine: {_cpu_model()}, {cores} logical CPUs, {size(_total_memory())} RAM, {platform.system()} "
        f"{platform.release()}",
        f"python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} intra-op threads)",
    ]
    if torch.cuda.is_available():
        parts.append(f"GPU: {torch.cuda.get_device_name()}")
    if hasattr(os, "getloadavg"):
        parts.append("load average at start: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    parts.append(_git_state(code_paths))
    return "\n".join(parts)


def save_report(path: str | os.PathLike[str], text: str, *, header: str, module: str,
                argv: Sequence[str] | None) -> Path:
    """Write a report under its machine header and the command that made it (creating the folder); its path."""
    command = f"python -m {module} " + " ".join(argv if argv is not None else sys.argv[1:])
    body = f"{header}\ncommand: {command}\n\n{text}"
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(body if body.endswith("\n") else body + "\n", encoding="utf-8")
    return target
