"""bench.cluster_throughput still runs and prints its table (tiny prompts, the single process and 2 Ray workers)."""

import subprocess
import sys

import pytest

from tests.cluster.conftest import REPO

pytest.importorskip("ray")
pytestmark = pytest.mark.slow


def test_cluster_throughput_prints_its_table(tmp_path):
    saved = tmp_path / "report.txt"
    done = subprocess.run([sys.executable, "-m", "bench.cluster_throughput", "--prompts", "2", "--steps", "1",
                           "--batch", "1", "--workers", "2", "--save", str(saved)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if "|" in line]
    assert rows[0].startswith("case") and len(rows) == 3  # header, 2 cases
    assert rows[1].startswith("single process") and "1.00x" in rows[1]
    assert rows[2].startswith("--ray local, 2 workers") and "head-1" in rows[2] and " ms" in rows[2]
    assert saved.read_text().startswith("date: ")
