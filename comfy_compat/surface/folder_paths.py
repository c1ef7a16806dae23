"""ComfyUI's `folder_paths`: the model folders, input/output/temp/user directories and file lists, as packs use them.

The folders are the server's (server/paths.py: models/, extra_model_paths.yaml, the --*-directory flags), mirrored
here when the loader binds the surface to a server (comfy_compat.host.configure). `folder_names_and_paths` is a real,
mutable dict as in ComfyUI: packs add kinds of their own (`folder_names_and_paths["ipadapter"] = ([path], exts)`) or
paths (`add_model_folder_path`), and the listing functions read it. Those additions are seen by packs' nodes; the core
nodes keep using the server's own folders.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import time
from collections.abc import Collection
from typing import Literal

from comfy_compat import host

log = logging.getLogger("chisel.custom_nodes")

supported_pt_extensions: set[str] = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {}
filename_list_cache: dict[str, tuple[list[str], dict[str, float], float]] = {}
extension_mimetypes_cache = {"webp": "image", "fbx": "model"}

base_path = os.getcwd()
models_dir = os.path.join(base_path, "models")
output_directory = os.path.join(base_path, "output")
temp_directory = os.path.join(base_path, "temp")
input_directory = os.path.join(base_path, "input")
user_directory = os.path.join(base_path, "user")

_LEGACY = {"unet": "diffusion_models", "clip": "text_encoders", "t2i_adapter": "controlnet"}
_KINDS = ("checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision",
          "style_models", "embeddings", "diffusers", "vae_approx", "controlnet", "gligen", "upscale_models",
          "latent_upscale_models", "hypernetworks", "photomaker", "classifiers", "model_patches", "audio_encoders")


def _bind() -> None:
    """Mirror the bound server's folders (called by host.configure)."""
    global base_path, models_dir, output_directory, temp_directory, input_directory, user_directory
    folders = host.services().folders
    base_path = host.HOST.base_dir or base_path
    models_dir = str(getattr(folders, "models_dir", os.path.join(base_path, "models")))
    output_directory = str(folders.directory("output"))
    temp_directory = str(folders.directory("temp"))
    input_directory = str(folders.directory("input"))
    user_directory = str(folders.directory("user"))
    kinds = list(getattr(folders, "folder_kinds", lambda: _KINDS)())
    extensions_of = getattr(folders, "extensions", None)
    mirrored: dict[str, tuple[list[str], set[str]]] = {}
    for kind in kinds:
        try:
            dirs = [str(d) for d in folders.search_dirs(kind)]
        except KeyError:
            continue
        exts = set(extensions_of(kind)) if extensions_of else set(supported_pt_extensions)
        mirrored[kind] = (dirs, exts)
    for folder in (input_directory, output_directory):  # ComfyUI has both before packs load (packs list them)
        os.makedirs(folder, exist_ok=True)
    mirrored["custom_nodes"] = ([host.HOST.custom_nodes_dir or os.path.join(base_path, "custom_nodes")], set())
    # Kinds a pack added keep their entries; the server's kinds are re-read.
    for kind in [k for k in folder_names_and_paths if k in mirrored]:
        del folder_names_and_paths[kind]
    folder_names_and_paths.update(mirrored)
    filename_list_cache.clear()


def map_legacy(folder_name: str) -> str:
    return _LEGACY.get(folder_name, folder_name)


def set_output_directory(output_dir: str) -> None:
    global output_directory
    output_directory = output_dir


def set_temp_directory(temp_dir: str) -> None:
    global temp_directory
    temp_directory = temp_dir


def set_input_directory(input_dir: str) -> None:
    global input_directory
    input_directory = input_dir


def set_user_directory(user_dir: str) -> None:
    global user_directory
    user_directory = user_dir


def get_output_directory() -> str:
    return output_directory


def get_temp_directory() -> str:
    return temp_directory


def get_input_directory() -> str:
    return input_directory


def get_user_directory() -> str:
    return user_directory


def get_directory_by_type(type_name: str) -> str | None:
    return {"output": output_directory, "temp": temp_directory, "input": input_directory}.get(type_name)


def filter_files_content_types(files: list[str],
                               content_types: list[Literal["image", "video", "audio", "model"]]) -> list[str]:
    result = []
    for file in files:
        extension = file.split(".")[-1]
        if extension not in extension_mimetypes_cache:
            mime_type, _ = mimetypes.guess_type(file, strict=False)
            if not mime_type:
                continue
            extension_mimetypes_cache[extension] = mime_type.split("/")[0]
        if extension_mimetypes_cache[extension] in content_types:
            result.append(file)
    return result


def annotated_filepath(name: str) -> tuple[str, str | None]:
    for suffix, directory in (("[output]", output_directory), ("[input]", input_directory),
                              ("[temp]", temp_directory)):
        if name.endswith(suffix):
            return name[:-len(suffix) - 1], directory
    return name, None


def get_annotated_filepath(name: str, default_dir: str | None = None) -> str:
    name, base_dir = annotated_filepath(name)
    return os.path.join(base_dir or default_dir or input_directory, name)


def exists_annotated_filepath(name: str) -> bool:
    name, base_dir = annotated_filepath(name)
    return os.path.exists(os.path.join(base_dir or input_directory, name))


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    folder_name = map_legacy(folder_name)
    if folder_name not in folder_names_and_paths:
        folder_names_and_paths[folder_name] = ([full_folder_path], set())
        return
    paths = folder_names_and_paths[folder_name][0]
    if full_folder_path in paths:
        if is_default and paths[0] != full_folder_path:
            paths.remove(full_folder_path)
            paths.insert(0, full_folder_path)
    elif is_default:
        paths.insert(0, full_folder_path)
    else:
        paths.append(full_folder_path)


def get_folder_paths(folder_name: str) -> list[str]:
    return folder_names_and_paths[map_legacy(folder_name)][0][:]


def recursive_search(directory: str, excluded_dir_names: list[str] | None = None) -> tuple[list[str], dict[str, float]]:
    """(every file under `directory`, relative; {each directory seen: its mtime})."""
    if not os.path.isdir(directory):
        return [], {}
    excluded = excluded_dir_names or []
    result: list[str] = []
    dirs: dict[str, float] = {}
    try:
        dirs[directory] = os.path.getmtime(directory)
    except FileNotFoundError:
        log.warning("unable to access %s; skipping it", directory)
    for dirpath, subdirs, filenames in os.walk(directory, followlinks=True, topdown=True):
        subdirs[:] = [d for d in subdirs if d not in excluded]
        result.extend(os.path.relpath(os.path.join(dirpath, f), directory) for f in filenames)
        for d in subdirs:
            path = os.path.join(dirpath, d)
            try:
                dirs[path] = os.path.getmtime(path)
            except FileNotFoundError:
                continue
    return result, dirs


def filter_files_extensions(files: Collection[str], extensions: Collection[str]) -> list[str]:
    return sorted(f for f in files if os.path.splitext(f)[-1].lower() in extensions or len(extensions) == 0)


def get_full_path(folder_name: str, filename: str) -> str | None:
    """The path of `filename` in the first folder of a kind that has it; None when none does (or the kind is
    unknown). The name is made relative first (no '..' escapes, no absolute paths), as ComfyUI does."""
    folder_name = map_legacy(folder_name)
    if folder_name not in folder_names_and_paths:
        return None
    filename = os.path.relpath(os.path.join("/", filename), "/")
    for folder in folder_names_and_paths[folder_name][0]:
        full_path = os.path.join(folder, filename)
        if os.path.isfile(full_path):
            return full_path
        if os.path.islink(full_path):
            log.warning("%s exists but does not link anywhere; skipping it", full_path)
    return None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    full_path = get_full_path(folder_name, filename)
    if full_path is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return full_path


def get_filename_list_(folder_name: str) -> tuple[list[str], dict[str, float], float]:
    folder_name = map_legacy(folder_name)
    paths, extensions = folder_names_and_paths[folder_name]
    found: set[str] = set()
    seen: dict[str, float] = {}
    for folder in paths:
        files, dirs = recursive_search(folder, excluded_dir_names=[".git"])
        found.update(filter_files_extensions(files, extensions))
        seen.update(dirs)
    return sorted(found), seen, time.perf_counter()


def cached_filename_list_(folder_name: str) -> tuple[list[str], dict[str, float], float] | None:
    folder_name = map_legacy(folder_name)
    cached = filename_list_cache.get(folder_name)
    if cached is None:
        return None
    for folder, modified in cached[1].items():
        try:
            if os.path.getmtime(folder) != modified:
                return None
        except OSError:
            return None
    for folder in folder_names_and_paths[folder_name][0]:
        if os.path.isdir(folder) and folder not in cached[1]:
            return None
    return cached


def get_filename_list(folder_name: str) -> list[str]:
    """The files of a model folder kind across its folders (relative names, sorted); KeyError for unknown kinds."""
    folder_name = map_legacy(folder_name)
    out = cached_filename_list_(folder_name)
    if out is None:
        out = get_filename_list_(folder_name)
        filename_list_cache[folder_name] = out
    return list(out[0])


def get_save_image_path(filename_prefix: str, output_dir: str, image_width: int = 0, image_height: int = 0
                        ) -> tuple[str, str, int, str, str]:
    """(folder, file name, next counter, subfolder, prefix) for saving `<prefix>_<counter>_.png` under output_dir,
    refusing a prefix that leads outside it."""

    def map_filename(filename: str) -> tuple[int, str]:
        prefix_len = len(os.path.basename(filename_prefix))
        prefix = filename[:prefix_len + 1]
        try:
            digits = int(filename[prefix_len + 1:].split("_")[0])
        except ValueError:
            digits = 0
        return digits, prefix

    if "%" in filename_prefix:
        now = time.localtime()
        for key, value in (("%width%", str(image_width)), ("%height%", str(image_height)),
                           ("%year%", str(now.tm_year)), ("%month%", f"{now.tm_mon:02d}"),
                           ("%day%", f"{now.tm_mday:02d}"), ("%hour%", f"{now.tm_hour:02d}"),
                           ("%minute%", f"{now.tm_min:02d}"), ("%second%", f"{now.tm_sec:02d}")):
            filename_prefix = filename_prefix.replace(key, value)
    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    filename = os.path.basename(os.path.normpath(filename_prefix))
    full_output_folder = os.path.join(output_dir, subfolder)
    if os.path.commonpath((output_dir, os.path.abspath(full_output_folder))) != output_dir:
        raise Exception("Saving image outside the output folder is not allowed.\n full_output_folder: "
                        f"{os.path.abspath(full_output_folder)}\n output_dir: {output_dir}")
    try:
        counter = max(filter(lambda a: os.path.normcase(a[1][:-1]) == os.path.normcase(filename) and a[1][-1] == "_",
                             map(map_filename, os.listdir(full_output_folder))))[0] + 1
    except ValueError:
        counter = 1
    except FileNotFoundError:
        os.makedirs(full_output_folder, exist_ok=True)
        counter = 1
    return full_output_folder, filename, counter, subfolder, filename_prefix


def get_input_subfolders() -> list[str]:
    if not os.path.exists(input_directory):
        return []
    folders = []
    for root, _dirs, _files in os.walk(input_directory):
        relative = os.path.relpath(root, input_directory)
        if relative != ".":
            folders.append(relative.replace(os.sep, "/"))
    return sorted(folders)


def get_system_user_directory(name: str = "system") -> str:
    return os.path.join(user_directory, "__" + name)


def get_public_user_directory(user_id: str) -> str | None:
    if not user_id or user_id.startswith("__"):
        return None
    return os.path.join(user_directory, user_id)


host.on_configure(_bind)


def __getattr__(name: str):  # noqa: ANN202 - ComfyUI's other names: placeholders that fail when used
    from comfy_compat.surface.unavailable import module_attribute

    return module_attribute('folder_paths', name)
