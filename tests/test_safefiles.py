"""safefiles: atomic overwrites, never-overwrite writes (race-free under threads), ComfyUI naming, path containment."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import safefiles
from safefiles import (PathRefused, atomic_path, numbered_names, real_path_inside, resolve_inside, stage, write_atomic,
                       write_new, write_unique)

ROOT = Path(__file__).resolve().parent.parent


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(params=["hard links", "no hard links"])
def link_support(request, monkeypatch):
    """Every never-overwrite test runs twice: with os.link, and on a file system without hard links (O_EXCL path)."""
    if request.param == "no hard links":
        def no_link(*_args, **_kwargs):
            raise OSError(errno.EPERM, "hard links not supported here")

        monkeypatch.setattr(os, "link", no_link)
    return request.param


# ---- overwrite ----------------------------------------------------------------------------------------------------
def test_write_atomic_replaces_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b"old")
    assert write_atomic(path, b"new") == path
    assert path.read_bytes() == b"new"
    assert _listing(tmp_path) == ["a.json"]


def test_write_atomic_accepts_streams_and_chunks(tmp_path):
    write_atomic(tmp_path / "stream.bin", io.BytesIO(b"x" * 3_000_000))
    write_atomic(tmp_path / "chunks.bin", (bytes([i]) * 1000 for i in range(3)))
    write_atomic(tmp_path / "view.bin", memoryview(b"abc"))
    assert (tmp_path / "stream.bin").read_bytes() == b"x" * 3_000_000
    assert (tmp_path / "chunks.bin").read_bytes() == b"\0" * 1000 + b"\1" * 1000 + b"\2" * 1000
    assert (tmp_path / "view.bin").read_bytes() == b"abc"
    with pytest.raises(TypeError):
        write_atomic(tmp_path / "text.txt", "not bytes")  # type: ignore[arg-type]
    assert not (tmp_path / "text.txt").exists()


def test_a_failed_write_keeps_the_old_content_and_removes_its_temp_file(tmp_path):
    path = tmp_path / "settings.json"
    path.write_bytes(b"old")

    def broken_chunks():
        yield b"half of the new"
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_atomic(path, broken_chunks())
    with pytest.raises(RuntimeError), atomic_path(path) as temp:
        temp.write_bytes(b"partial")
        raise RuntimeError("the writer failed")
    assert path.read_bytes() == b"old"
    assert _listing(tmp_path) == ["settings.json"]


def test_atomic_path_renames_the_finished_file_into_place(tmp_path):
    path = tmp_path / "model.safetensors"
    with atomic_path(path) as temp:
        assert temp.parent == tmp_path and temp.name.startswith(".model.safetensors.") and temp.exists()
        assert not path.exists()
        temp.write_bytes(b"weights")
    assert path.read_bytes() == b"weights" and _listing(tmp_path) == ["model.safetensors"]


def test_readers_see_the_old_or_the_new_content_never_a_mix(tmp_path):
    path = tmp_path / "big.bin"
    versions = [bytes([n]) * 2_000_000 for n in range(4)]
    write_atomic(path, versions[0], durable=False)
    seen: set[bytes] = set()
    stop = threading.Event()
    wrong: list[int] = []

    def read() -> None:
        while not stop.is_set():
            data = path.read_bytes()
            if data not in versions:
                wrong.append(len(data))
            seen.add(data[:1])

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for round_ in range(40):
            write_atomic(path, versions[round_ % 4], durable=False)
    finally:
        stop.set()
        reader.join()
    assert not wrong, f"a reader saw a partial file: {wrong[:5]}"
    assert _listing(tmp_path) == ["big.bin"]


def test_write_atomic_replaces_a_symlink_instead_of_writing_through_it(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"keep")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "link.txt").symlink_to(outside)
    write_atomic(folder / "link.txt", b"new")
    assert outside.read_bytes() == b"keep"
    assert not (folder / "link.txt").is_symlink() and (folder / "link.txt").read_bytes() == b"new"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_files_get_the_permissions_open_would_give(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    write_atomic(tmp_path / "a", b"x")
    write_new(tmp_path / "b", b"x")
    for name in ("a", "b"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask


# ---- never overwrite ------------------------------------------------------------------------------------------------
def test_write_new_never_overwrites(tmp_path, link_support):
    taken = tmp_path / "taken.png"
    taken.write_bytes(b"original")
    assert write_new(taken, b"intruder") is False
    assert taken.read_bytes() == b"original"
    assert write_new(tmp_path / "free.png", b"fresh") is True
    assert (tmp_path / "free.png").read_bytes() == b"fresh"
    assert _listing(tmp_path) == ["free.png", "taken.png"]


def test_write_new_refuses_folders_and_symlinks_even_dangling_ones(tmp_path, link_support):
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "dir.png").mkdir()
    (folder / "dangling.png").symlink_to(outside / "created-through-the-link.png")
    (folder / "link.png").symlink_to(outside / "real.png")
    (outside / "real.png").write_bytes(b"keep")
    for name in ("dir.png", "dangling.png", "link.png"):
        assert write_new(folder / name, b"x") is False
    assert _listing(outside) == ["real.png"] and (outside / "real.png").read_bytes() == b"keep"
    assert _listing(folder) == ["dangling.png", "dir.png", "link.png"]


def test_numbered_names_follow_comfyui_upload_naming():
    names = numbered_names("photo.final.png")
    assert [next(names) for _ in range(4)] == ["photo.final.png", "photo.final (1).png", "photo.final (2).png",
                                               "photo.final (3).png"]
    names = numbered_names("README")
    assert [next(names) for _ in range(2)] == ["README", "README (1)"]


def test_write_unique_takes_the_next_free_name(tmp_path, link_support):
    (tmp_path / "x.png").write_bytes(b"0")
    (tmp_path / "x (1).png").write_bytes(b"1")
    assert write_unique(tmp_path, b"2", numbered_names("x.png")) == "x (2).png"
    assert [(tmp_path / n).read_bytes() for n in ("x.png", "x (1).png", "x (2).png")] == [b"0", b"1", b"2"]
    with pytest.raises(FileExistsError):
        write_unique(tmp_path, b"3", ["x.png", "x (1).png"])
    assert _listing(tmp_path) == ["x (1).png", "x (2).png", "x.png"]


def test_twenty_threads_writing_one_name_get_twenty_distinct_complete_files(tmp_path, link_support):
    count = 20
    contents = [bytes([n]) * (300_000 + n) for n in range(count)]
    start = threading.Barrier(count)
    names: list[str | None] = [None] * count
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            start.wait(timeout=30)
            names[n] = write_unique(tmp_path, contents[n], numbered_names("same.png"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(set(names)) == count
    assert set(names) == {"same.png", *(f"same ({n}).png" for n in range(1, count))}
    for n, name in enumerate(names):
        assert (tmp_path / name).read_bytes() == contents[n], f"{name} is not writer {n}'s complete content"
    assert _listing(tmp_path) == sorted(names)  # no temp file left behind


def test_a_staged_file_is_published_once(tmp_path, link_support):
    with stage(tmp_path, b"data", prefix=".upload-") as staged:
        assert staged.temp.name.startswith(".upload-") and staged.temp.read_bytes() == b"data"
        assert staged.link_as("a.png")
        with pytest.raises(RuntimeError, match="already published"):
            staged.link_as("b.png")
    assert _listing(tmp_path) == ["a.png"]


def test_stage_replace_overwrites_atomically(tmp_path):
    (tmp_path / "a.png").write_bytes(b"old")
    with stage(tmp_path, b"new") as staged:
        staged.replace("a.png")
    assert (tmp_path / "a.png").read_bytes() == b"new" and _listing(tmp_path) == ["a.png"]


# ---- containment ----------------------------------------------------------------------------------------------------
@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.png").write_bytes(b"a")
    (tmp_path / "secret.txt").write_text("secret")
    return root


@pytest.mark.parametrize("name", ["..", "../secret.txt", "sub/../../secret.txt", "sub/..", "..\\secret.txt"])
def test_dot_dot_is_refused(root, name):
    with pytest.raises(PathRefused, match="'..' component"):
        resolve_inside(root, name, field="filename")


@pytest.mark.parametrize("name", ["/etc/passwd", "\\\\host\\share\\x", "C:\\Windows\\x", "c:x"])
def test_absolute_paths_are_refused(root, name):
    with pytest.raises(PathRefused, match="absolute"):
        resolve_inside(root, name, field="filename")


def test_symlinks_escaping_the_root_are_refused(root, tmp_path):
    (root / "file-link.txt").symlink_to(tmp_path / "secret.txt")
    (root / "dir-link").symlink_to(tmp_path)
    (root / "sub" / "up").symlink_to("../..")
    for parts in (("file-link.txt",), ("dir-link", "secret.txt"), ("sub/up/secret.txt",), ("sub", "up")):
        with pytest.raises(PathRefused, match="resolves outside its folder") as caught:
            resolve_inside(root, *parts, field="filename")
        assert caught.value.field == "filename" and isinstance(caught.value, ValueError)


def test_symlinks_staying_inside_the_root_are_followed(root):
    (root / "alias").symlink_to(root / "sub")
    assert resolve_inside(root, "alias", "a.png", field="f") == (root / "sub" / "a.png").resolve()
    assert resolve_inside(root, "sub\\a.png", field="f") == (root / "sub" / "a.png").resolve()


def test_the_root_itself_only_when_allowed(root):
    with pytest.raises(PathRefused, match="the folder itself"):
        resolve_inside(root, "", field="subfolder")
    assert resolve_inside(root, "", field="subfolder", allow_root=True) == root.resolve()
    assert resolve_inside(root, "sub/.", field="subfolder", allow_root=True) == (root / "sub").resolve()


@pytest.mark.parametrize("name", ["a\0b", "a\nb", 7, "x" * 256])
def test_bad_names_are_refused(root, name):
    with pytest.raises(PathRefused):
        resolve_inside(root, name, field="filename")  # type: ignore[arg-type]


def test_real_path_inside_checks_only_the_real_path(root, tmp_path):
    assert real_path_inside(root, "sub", field="f") == (root / "sub").resolve()
    assert real_path_inside(root, "", field="f") == root.resolve()
    with pytest.raises(PathRefused, match="outside"):
        real_path_inside(root, "..", field="f")


def test_server_security_re_exports_the_same_helpers():
    from server import security

    assert security.PathRefused is safefiles.PathRefused
    assert security.resolve_inside is safefiles.resolve_inside
    assert security.clean_relative_name is safefiles.clean_relative_name


def test_importing_safefiles_loads_only_the_standard_library():
    code = ("import sys; before = set(sys.modules); import safefiles; "
            "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
            "print(sorted(m for m in new if m != 'safefiles' and m not in sys.stdlib_module_names))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
