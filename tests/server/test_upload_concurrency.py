"""Concurrent uploads of one file name (overwrite false) end as distinct, complete files: no upload is lost, none is
truncated, no two responses share a name."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest

from server.routes import files
from tests.server.conftest import png_bytes
from tests.server.test_files import upload_form

COUNT = 20


@pytest.fixture(params=["hard links", "no hard links"])
def link_support(request, monkeypatch):
    """Each test runs twice: with os.link, and as on a file system without hard links (the O_EXCL path), where the
    old code fell back to check-then-replace."""
    if request.param == "no hard links":
        def no_link(*_args, **_kwargs):
            raise OSError(errno.EPERM, "hard links not supported here")

        monkeypatch.setattr(os, "link", no_link)
    return request.param


def distinct_pngs(count: int) -> list[bytes]:
    """`count` valid PNGs of the same name-to-be, each different and a few hundred kB (an uncompressed text chunk)."""
    return [png_bytes(color=(n, 0, 0, 255), text={"padding": f"{n:03}" + "x" * 300_000}) for n in range(count)]


async def upload_all(client, contents: list[bytes]) -> list[dict[str, str]]:
    async def upload(data: bytes) -> dict[str, str]:
        response = await client.post("/upload/image", data=upload_form(data, name="same.png", overwrite="false"))
        body = await response.json()
        assert response.status == 200, body
        return body

    return await asyncio.gather(*(upload(data) for data in contents))


def assert_distinct_complete_files(config, contents: list[bytes], results: list[dict[str, str]]) -> None:
    names = [r["name"] for r in results]
    assert len(set(names)) == COUNT, names
    assert set(names) == {"same.png", *(f"same ({n}).png" for n in range(1, COUNT))}
    assert all(r["type"] == "input" and r["subfolder"] == "" for r in results)
    on_disk = sorted(p.name for p in config.input_dir.iterdir())
    assert on_disk == sorted(names), "a file is missing, or a temporary file was left behind"
    for data, name in zip(contents, names):
        assert (config.input_dir / name).read_bytes() == data, f"{name} is not the complete upload it was named for"


async def test_twenty_parallel_uploads_of_one_name_end_as_twenty_distinct_files(client, config, link_support):
    contents = distinct_pngs(COUNT)
    results = await upload_all(client, contents)
    assert_distinct_complete_files(config, contents, results)


async def test_the_uploads_really_overlap_and_still_get_distinct_names(client, config, monkeypatch, link_support):
    """Every upload's store holds at a barrier until all 20 have written their temp file (which only happens when
    the write runs off the event loop, in parallel), then all 20 race for the name at once."""
    # The default pool may have fewer threads than uploads; this loop's pool is closed with the loop.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=2 * COUNT))
    barrier = threading.Barrier(COUNT)
    real_stage = files.stage

    @contextmanager
    def stage_then_wait_for_all(*args, **kwargs):
        with real_stage(*args, **kwargs) as staged:
            barrier.wait(timeout=60)  # BrokenBarrierError (a 500) unless all 20 are in flight together
            yield staged

    monkeypatch.setattr(files, "stage", stage_then_wait_for_all)
    contents = distinct_pngs(COUNT)
    results = await upload_all(client, contents)
    assert_distinct_complete_files(config, contents, results)
