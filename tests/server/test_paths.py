"""Folders: ComfyUI's layout, legacy folder names, extra_model_paths.yaml, cached listings, ModelNotFound."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from nodes.inputs import Files
from server.config import ServerConfig
from server.paths import ExtraPathsError, ModelNotFound, ServerFolders, UnknownFolder, read_extra_model_paths
from server.security import PathRefused

EXTRA_YAML = """
# a ComfyUI install and an A1111 one, as users write them
comfyui:
    base_path: {comfy}
    is_default: true
    checkpoints: models/checkpoints/
    clip: models/clip/
    controlnet: |
        models/controlnet/
        models/t2i_adapter/

a111:
    base_path: {a1111}
    checkpoints: models/Stable-diffusion
    loras: |
         models/Lora
         models/LyCORIS
    embeddings: embeddings

empty_section:
relative:
    vae: my_vaes
"""


def folders_for(tmp_path: Path, *yaml_files: Path) -> ServerFolders:
    # Without the repository's bundled models/ (the built-in model): these tests are about the folder mechanics.
    config = ServerConfig(base_dir=tmp_path / "base", extra_model_paths=yaml_files, bundled_models_dir=None)
    folders = ServerFolders.from_config(config)
    folders.create_directories()
    return folders


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_default_layout_is_comfyuis(tmp_path):
    folders = folders_for(tmp_path)
    base = (tmp_path / "base").resolve()
    assert folders.directory("input") == base / "input"
    assert folders.directory("output") == base / "output"
    assert folders.search_dirs("checkpoints")[0] == base / "models" / "checkpoints"
    assert folders.search_dirs("text_encoders")[:2] == (base / "models" / "text_encoders", base / "models" / "clip")
    assert folders.search_dirs("clip") == folders.search_dirs("text_encoders")  # legacy name
    assert folders.search_dirs("unet")[:2] == (base / "models" / "unet", base / "models" / "diffusion_models")
    for kind in ("checkpoints", "loras", "vae", "embeddings", "upscale_models", "vae_approx", "controlnet"):
        assert kind in folders.folder_kinds()
        assert (base / "models" / folders.search_dirs(kind)[0].name).is_dir()


def test_only_safetensors_are_listed_recursively_and_sorted(tmp_path):
    folders = folders_for(tmp_path)
    root = folders.search_dirs("checkpoints")[0]
    for name in ("b.safetensors", "a/x.safetensors", "old.ckpt", "notes.txt", ".hidden.safetensors", "c.sft"):
        touch(root / name)
    assert folders.model_files("checkpoints") == ["a/x.safetensors", "b.safetensors", "c.sft"]


def test_listing_is_cached_until_a_directory_changes(tmp_path):
    folders = folders_for(tmp_path)
    root = folders.search_dirs("loras")[0]
    touch(root / "one.safetensors")
    assert folders.model_files("loras") == ["one.safetensors"]
    first = folders.model_files("loras")
    time.sleep(0.01)
    touch(root / "deep" / "two.safetensors")  # a new subfolder changes the root's mtime
    assert folders.model_files("loras") == ["deep/two.safetensors", "one.safetensors"]
    time.sleep(0.01)
    touch(root / "deep" / "three.safetensors")  # only the subfolder's mtime changes
    assert "deep/three.safetensors" in folders.model_files("loras")
    assert first == ["one.safetensors"]


def test_model_path_finds_the_file_and_names_the_folders_when_missing(tmp_path):
    folders = folders_for(tmp_path)
    path = touch(folders.search_dirs("vae")[0] / "sub" / "v.safetensors")
    assert folders.model_path("vae", "sub/v.safetensors") == path.resolve()
    assert folders.model_path("vae", "sub\\v.safetensors") == path.resolve()  # a workflow saved on Windows
    with pytest.raises(ModelNotFound) as caught:
        folders.model_path("vae", "missing.safetensors")
    message = str(caught.value)
    assert "missing.safetensors" in message and str(folders.search_dirs("vae")[0]) in message
    assert caught.value.folder == "vae" and caught.value.searched_dirs == folders.search_dirs("vae")


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "a.ckpt", "x\x00.safetensors"])
def test_model_path_refuses_escapes_and_unlisted_formats(tmp_path, name):
    folders = folders_for(tmp_path)
    touch(folders.search_dirs("checkpoints")[0] / "a.ckpt")
    with pytest.raises(ModelNotFound):
        folders.model_path("checkpoints", name)


def test_unknown_folder_kind_is_a_typed_error(tmp_path):
    with pytest.raises(UnknownFolder, match="known folders"):
        folders_for(tmp_path).model_files("nonsense")


def test_extra_model_paths_yaml_adds_folders(tmp_path):
    comfy, a1111 = tmp_path / "ComfyUI", tmp_path / "sd-webui"
    yaml_file = tmp_path / "conf" / "extra_model_paths.yaml"
    touch(yaml_file, EXTRA_YAML.format(comfy=comfy, a1111=a1111).encode())
    touch(comfy / "models" / "checkpoints" / "comfy.safetensors")
    touch(a1111 / "models" / "Stable-diffusion" / "webui.safetensors")
    touch(a1111 / "models" / "LyCORIS" / "lyco.safetensors")
    touch(comfy / "models" / "t2i_adapter" / "adapter.safetensors")
    touch(comfy / "models" / "clip" / "clip_l.safetensors")
    folders = folders_for(tmp_path, yaml_file)
    assert folders.model_files("checkpoints") == ["comfy.safetensors", "webui.safetensors"]
    assert folders.model_files("loras") == ["lyco.safetensors"]
    assert folders.model_files("controlnet") == ["adapter.safetensors"]
    assert folders.model_files("text_encoders") == ["clip_l.safetensors"]  # `clip:` maps to text_encoders
    assert (yaml_file.parent / "my_vaes").resolve() in [d.resolve() for d in folders.search_dirs("vae")]
    assert folders.model_path("checkpoints", "webui.safetensors").name == "webui.safetensors"


def test_extra_model_paths_expand_environment_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELS_ROOT", str(tmp_path / "shared"))
    yaml_file = touch(tmp_path / "e.yaml", b"shared:\n    base_path: $MODELS_ROOT\n    loras: loras\n")
    paths = read_extra_model_paths(yaml_file)
    assert [(p.kind, p.directory) for p in paths] == [("loras", tmp_path / "shared" / "loras")]


@pytest.mark.parametrize("text, problem", [("a: [unclosed", "not valid YAML"), ("- a\n- b\n", "named sections"),
                                           ("sec: 5\n", "must map")])
def test_broken_extra_model_paths_are_reported_with_the_file(tmp_path, text, problem):
    yaml_file = touch(tmp_path / "bad.yaml", text.encode())
    with pytest.raises(ExtraPathsError, match=problem) as caught:
        read_extra_model_paths(yaml_file)
    assert str(yaml_file) in str(caught.value)


def test_missing_extra_model_paths_file_is_reported(tmp_path):
    with pytest.raises(ExtraPathsError, match="cannot read"):
        read_extra_model_paths(tmp_path / "nope.yaml")


def test_input_path_resolves_annotations_and_refuses_escapes(tmp_path):
    folders = folders_for(tmp_path)
    touch(folders.directory("input") / "a.png")
    touch(folders.directory("output") / "b.png")
    assert folders.input_path("a.png").name == "a.png"
    assert folders.input_path("b.png [output]").parent == folders.directory("output").resolve()
    with pytest.raises(PathRefused):
        folders.input_path("../../etc/passwd")
    os.symlink("/etc/passwd", folders.directory("input") / "link.png")
    with pytest.raises(PathRefused):
        folders.input_path("link.png")


def test_input_images_listing_for_load_image(tmp_path):
    folders = folders_for(tmp_path)
    for name in ("a.png", "b.txt", "sub/c.jpg", ".hidden.png"):
        touch(folders.directory("input") / name)
    assert folders.list_files(Files("input", images_only=True)) == ["a.png", "sub/c.jpg"]
    assert folders.list_files(Files("checkpoints")) == []


def test_temp_is_emptied_but_never_through_a_symlink(tmp_path):
    folders = folders_for(tmp_path)
    touch(folders.directory("temp") / "old_preview.png")
    folders.empty_temp()
    assert list(folders.directory("temp").iterdir()) == []
    elsewhere = touch(tmp_path / "important" / "keep.txt")
    os.symlink(elsewhere.parent, tmp_path / "link")
    linked = ServerFolders(models_dir=tmp_path / "m", input_dir=tmp_path / "i", output_dir=tmp_path / "o",
                           temp_dir=tmp_path / "link", user_dir=tmp_path / "u")
    with pytest.raises(PathRefused, match="symlink"):
        linked.empty_temp()
    assert elsewhere.is_file()


def test_symlink_loops_in_model_folders_do_not_hang(tmp_path):
    folders = folders_for(tmp_path)
    root = folders.search_dirs("loras")[0]
    touch(root / "a.safetensors")
    os.symlink(root, root / "loop")
    assert folders.model_files("loras") == ["a.safetensors"]


@pytest.mark.parametrize("where", ["base", "home"])
def test_temp_that_contains_other_folders_is_never_emptied(tmp_path, where, monkeypatch):
    base = tmp_path / "base"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    temp = base if where == "base" else tmp_path / "home"
    folders = ServerFolders(models_dir=base / "models", input_dir=base / "input", output_dir=base / "output",
                            temp_dir=temp, user_dir=base / "user")
    folders.create_directories()
    keep = touch(temp / "precious.txt")
    with pytest.raises(PathRefused, match="refusing to empty"):
        folders.empty_temp()
    assert keep.is_file()


def test_the_bundled_models_folder_is_searched_after_the_base_directorys(tmp_path):
    bundled = tmp_path / "repo-models"
    touch(bundled / "checkpoints" / "builtin.safetensors", b"bundled")
    touch(bundled / "checkpoints" / "shared.safetensors", b"bundled")
    config = ServerConfig(base_dir=tmp_path / "base", bundled_models_dir=bundled)
    folders = ServerFolders.from_config(config)
    folders.create_directories()
    own = touch(config.models_dir / "checkpoints" / "shared.safetensors", b"mine")
    assert folders.model_files("checkpoints") == ["builtin.safetensors", "shared.safetensors"]
    assert folders.model_path("checkpoints", "shared.safetensors") == own.resolve()
    assert folders.model_path("checkpoints", "builtin.safetensors").read_bytes() == b"bundled"
    assert folders.search_dirs("checkpoints")[-1] == bundled / "checkpoints"
