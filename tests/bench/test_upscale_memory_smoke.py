"""bench.upscale_memory still runs end to end (tiny ESRGAN, 64² image, real worker processes) and prints its
table with a tiled row, two untiled rows and the extrapolated one."""

from __future__ import annotations

from bench import upscale_memory


def test_the_upscale_memory_benchmark_prints_its_table(capsys):
    assert upscale_memory.main(["--size", "64", "--nf", "8", "--nb", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line.split("|")[0].strip() for line in out.splitlines() if "|" in line]
    assert rows[1:] == ["tiled 64²", "untiled 16²", "untiled 32²", "untiled 64² (extrapolated)"]
    assert "256x256" in out and "tiled 64² peak:" in out
