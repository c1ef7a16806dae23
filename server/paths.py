"""The server's folders: ComfyUI's models/ layout, input/ output/ temp/ user/, and extra model search paths.

`ServerFolders` implements nodes.services.Folders. Model folder kinds map to one or more directories (the defaults
under models/, the legacy aliases ComfyUI keeps such as clip -> text_encoders, and every folder named in an
extra_model_paths.yaml), each with the file extensions it lists. Listings are cached per folder kind and refreshed
when the modification time of any directory in the listed tree changes.

Only weight formats that load without pickle are listed (.safetensors / .sft): a .ckpt could only be read by running
code from the file.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nodes.inputs import Files
from safefiles import PathRefused, clean_relative_name, resolve_inside, write_new
from server.security import split_annotation

WEIGHTS = frozenset({".safetensors", ".sft"})
IMAGES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})

# kind -> (default subfolders of models/, extensions listed). ComfyUI's folder_paths names, legacy folders included.
MODEL_FOLDERS: Mapping[str, tuple[tuple[str, ...], frozenset[str]]] = {
    "checkpoints": (("checkpoints",), WEIGHTS),
    "configs": (("configs",), frozenset({".yaml"})),
    "loras": (("loras",), WEIGHTS),
    "vae": (("vae",), WEIGHTS),
    "text_encoders": (("text_encoders", "clip"), WEIGHTS),
    "diffusion_models": (("unet", "diffusion_models"), WEIGHTS),
    "clip_vision": (("clip_vision",), WEIGHTS),
    "style_models": (("style_models",), WEIGHTS),
    "embeddings": (("embeddings",), WEIGHTS),
    "diffusers": (("diffusers",), frozenset()),
    "vae_approx": (("vae_approx",), WEIGHTS),
    "controlnet": (("controlnet", "t2i_adapter"), WEIGHTS),
    "gligen": (("gligen",), WEIGHTS),
    "upscale_models": (("upscale_models",), WEIGHTS),
    "latent_upscale_models": (("latent_upscale_models",), WEIGHTS),
    "hypernetworks": (("hypernetworks",), WEIGHTS),
    "photomaker": (("photomaker",), WEIGHTS),
    "classifiers": (("classifiers",), frozenset()),
    "model_patches": (("model_patches",), WEIGHTS),
    "audio_encoders": (("audio_encoders",), WEIGHTS),
}
# Names ComfyUI still accepts for renamed kinds (folder_paths.map_legacy).
LEGACY_KINDS: Mapping[str, str] = {"clip": "text_encoders", "unet": "diffusion_models", "t2i_adapter": "controlnet"}
MAX_LISTED_FILES = 50_000  # a runaway tree (a whole disk as a model folder) stops here instead of hanging /object_info


class UnknownFolder(KeyError):
    def __init__(self, folder: str, known: Iterable[str]):
        super().__init__(folder)
        self.folder = folder
        self.message = f"unknown model folder {folder!r}; known folders: {', '.join(sorted(known))}"

    def __str__(self) -> str:
        return self.message


class ModelNotFound(FileNotFoundError):
    """A model file that is in none of its folder kind's search directories."""

    def __init__(self, name: str, folder: str, searched_dirs: Sequence[Path]):
        self.name, self.folder, self.searched_dirs = name, folder, tuple(searched_dirs)
        where = ", ".join(str(d) for d in self.searched_dirs) or "(no folders configured)"
        super().__init__(f"{folder} file {name!r} was not found; searched: {where}")

    def __str__(self) -> str:
        return self.args[0]


class ExtraPathsError(ValueError):
    """An extra_model_paths.yaml that cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class SearchPath:
    kind: str
    directory: Path
    source: str  # "default" or the yaml file and section that added it


def read_extra_model_paths(path: Path) -> list[SearchPath]:
    """Parse ComfyUI's extra_model_paths.yaml: named sections, each with an optional base_path and `kind: folder`
    keys whose value may hold several folders, one per line (a YAML block scalar). Relative folders are taken from
    base_path, or from the yaml file's own directory when there is no base_path."""
    import yaml  # PyYAML (safe_load only): a dependency of transformers, and the format's own language

    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ExtraPathsError(f"cannot read extra model paths file {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ExtraPathsError(f"extra model paths file {path} is not valid YAML: {exc}") from exc
    if document is None:
        return []
    if not isinstance(document, dict):
        raise ExtraPathsError(f"extra model paths file {path}: expected named sections at the top level")
    here = Path(path).resolve().parent
    found: list[SearchPath] = []
    for section, entries in document.items():
        if entries is None:  # a section whose keys are all commented out
            continue
        if not isinstance(entries, dict):
            raise ExtraPathsError(f"extra model paths file {path}: section {section!r} must map folder kinds to paths")
        base_value = entries.get("base_path")
        base = Path(os.path.expandvars(str(base_value))).expanduser() if base_value else None
        if base is not None and not base.is_absolute():
            base = here / base
        for kind, value in entries.items():
            if kind in ("base_path", "is_default") or value is None:
                continue
            kind = LEGACY_KINDS.get(str(kind), str(kind))
            for line in str(value).splitlines():
                line = line.strip()
                if not line:
                    continue
                folder = Path(os.path.expandvars(line)).expanduser()
                if not folder.is_absolute():
                    folder = (base or here) / folder
                found.append(SearchPath(kind, Path(os.path.normpath(folder)), f"{path} [{section}]"))
    return found


class ServerFolders:
    """nodes.services.Folders for one server: folder roots, model search paths, listings, safe resolution."""

    def __init__(self, *, models_dir: Path, input_dir: Path, output_dir: Path, temp_dir: Path, user_dir: Path,
                 custom_nodes_dir: Path | None = None, extra: Sequence[SearchPath] = ()):
        self._roots = {"input": Path(input_dir), "output": Path(output_dir), "temp": Path(temp_dir),
                       "user": Path(user_dir)}
        self.models_dir = Path(models_dir)
        self.custom_nodes_dir = Path(custom_nodes_dir) if custom_nodes_dir else None
        search: dict[str, list[SearchPath]] = {}
        for kind, (subfolders, _) in MODEL_FOLDERS.items():
            search[kind] = [SearchPath(kind, self.models_dir / sub, "default") for sub in subfolders]
            # ComfyUI also finds models saved by the save nodes under output/<kind> (main.apply_custom_paths).
            search[kind].append(SearchPath(kind, self._roots["output"] / kind, "default"))
        for entry in extra:
            search.setdefault(entry.kind, []).append(entry)
        self._search = {kind: tuple(_dedupe(paths)) for kind, paths in search.items()}
        self._listing_lock = threading.Lock()
        self._listings: dict[tuple[str, bool], tuple[tuple[tuple[str, int], ...], tuple[str, ...]]] = {}

    @classmethod
    def from_config(cls, config: object) -> ServerFolders:
        extra: list[SearchPath] = []
        for yaml_file in getattr(config, "extra_model_paths", ()):
            extra.extend(read_extra_model_paths(Path(yaml_file)))
        bundled = getattr(config, "bundled_models_dir", None)
        if bundled is not None and Path(bundled).is_dir():
            for kind, (subfolders, _) in MODEL_FOLDERS.items():
                extra.extend(SearchPath(kind, Path(bundled) / sub, "bundled") for sub in subfolders
                             if (Path(bundled) / sub).is_dir())
        return cls(models_dir=config.models_dir, input_dir=config.input_dir,  # type: ignore[attr-defined]
                   output_dir=config.output_dir, temp_dir=config.temp_dir,  # type: ignore[attr-defined]
                   user_dir=config.user_dir, custom_nodes_dir=config.custom_nodes_dir,  # type: ignore[attr-defined]
                   extra=extra)

    # ---- roots --------------------------------------------------------------------------------------------------
    def directory(self, kind: str) -> Path:
        try:
            return self._roots[kind]
        except KeyError:
            raise UnknownFolder(kind, self._roots) from None

    def create_directories(self) -> None:
        """Make input/ output/ temp/ user/ and the default model folders (so users see where files go)."""
        for root in self._roots.values():
            root.mkdir(parents=True, exist_ok=True)
        for kind, (subfolders, _) in MODEL_FOLDERS.items():
            (self.models_dir / subfolders[0]).mkdir(parents=True, exist_ok=True)

    def install_examples(self, assets: Path) -> list[str]:
        """Copy the ready workflows' example inputs (workflows/assets/) into input/ where missing; never overwrite a
        user's file. Returns the names copied."""
        copied: list[str] = []
        target = self._roots["input"]
        if not Path(assets).is_dir():
            return copied
        for source in sorted(Path(assets).iterdir()):
            destination = target / source.name
            if source.is_file() and not destination.exists():
                target.mkdir(parents=True, exist_ok=True)
                with open(source, "rb") as content:
                    if write_new(destination, content):  # an upload of that name meanwhile is kept, not replaced
                        copied.append(source.name)
        return copied

    def empty_temp(self) -> None:
        """Delete temp/'s contents (ComfyUI does this at startup): previews from an earlier run are never served."""
        import shutil

        temp = self._roots["temp"]
        if temp.is_symlink():
            raise PathRefused("temp", str(temp), "the temp folder is a symlink; refusing to empty it")
        real = Path(os.path.realpath(temp))
        guarded = [Path(os.path.realpath(p)) for p in (*self._roots.values(), self.models_dir)
                   if p is not self._roots["temp"]]
        if real == Path(real.anchor) or real == Path(os.path.realpath(Path.home())) or \
                any(g == real or real in g.parents for g in guarded):
            raise PathRefused("temp", str(temp), "the temp folder holds other folders of the server (or is the "
                              "home or root folder); refusing to empty it")
        if temp.is_dir():
            shutil.rmtree(temp)
        temp.mkdir(parents=True, exist_ok=True)

    # ---- model folders ------------------------------------------------------------------------------------------
    def folder_kinds(self) -> list[str]:
        """Every model folder kind, ComfyUI's /models answer."""
        return list(self._search)

    def search_dirs(self, folder: str) -> tuple[Path, ...]:
        return tuple(p.directory for p in self._search[self._kind(folder)])

    def search_paths(self, folder: str) -> tuple[SearchPath, ...]:
        return self._search[self._kind(folder)]

    def extensions(self, folder: str) -> frozenset[str]:
        kind = self._kind(folder)
        return MODEL_FOLDERS[kind][1] if kind in MODEL_FOLDERS else WEIGHTS

    def model_files(self, folder: str) -> list[str]:
        kind = self._kind(folder)
        return list(self._listing(kind, self.search_dirs(kind), self.extensions(kind)))

    def model_path(self, folder: str, name: str) -> Path:
        kind = self._kind(folder)
        dirs = self.search_dirs(kind)
        try:
            relative = clean_relative_name(name.replace("\\", "/"), field="name")
        except PathRefused:
            raise ModelNotFound(name, kind, dirs) from None
        extensions = self.extensions(kind)
        if extensions and Path(relative).suffix.lower() not in extensions:
            raise ModelNotFound(name, kind, dirs)
        for directory in dirs:
            candidate = directory / relative
            # Model folders are often assembled from symlinks to another disk, so a symlinked *file* is followed;
            # the name itself is a clean relative path (no "..", not absolute), checked above.
            if candidate.is_file():
                return candidate.resolve()
        raise ModelNotFound(name, kind, dirs)

    # ---- input images -------------------------------------------------------------------------------------------
    def input_path(self, name: str) -> Path:
        name, kind = split_annotation(name, default="input")
        return resolve_inside(self.directory(kind), name, field="image")

    def list_files(self, files: Files) -> list[str]:
        """Resolve a `Files` combo source: a model folder kind, or `input` (images only when asked)."""
        if files.folder in self._roots:
            extensions = IMAGES if files.images_only else frozenset()
            return list(self._listing(files.folder, (self._roots[files.folder],), extensions))
        try:
            return self.model_files(files.folder)
        except UnknownFolder:
            return []

    # ---- helpers ------------------------------------------------------------------------------------------------
    def _kind(self, folder: str) -> str:
        kind = LEGACY_KINDS.get(folder, folder)
        if kind not in self._search:
            raise UnknownFolder(folder, self._search)
        return kind

    def _listing(self, key: str, dirs: Sequence[Path], extensions: frozenset[str]) -> tuple[str, ...]:
        cache_key = (key, bool(extensions))
        with self._listing_lock:
            cached = self._listings.get(cache_key)
        if cached is not None and all(_mtime(Path(d)) == m for d, m in cached[0]):
            return cached[1]
        stamps: list[tuple[str, int]] = []
        names: set[str] = set()
        for directory in dirs:
            _walk(directory, extensions, stamps, names)
        listing = tuple(sorted(names))
        with self._listing_lock:
            self._listings[cache_key] = (tuple(stamps), listing)
        return listing


def _walk(root: Path, extensions: frozenset[str], stamps: list[tuple[str, int]], names: set[str]) -> None:
    """Collect files under root (relative posix names) and the mtime of each directory seen (missing: -1)."""
    stamps.append((str(root), _mtime(root)))
    if not root.is_dir():
        return
    seen_real: set[str] = set()
    for current, subdirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(current)
        if real in seen_real:  # a symlink loop, or two links to one folder: list it once
            subdirs[:] = []
            continue
        seen_real.add(real)
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        if current != str(root):
            stamps.append((current, _mtime(Path(current))))
        for file in files:
            if file.startswith(".") or (extensions and Path(file).suffix.lower() not in extensions):
                continue
            names.add(Path(os.path.relpath(os.path.join(current, file), root)).as_posix())
            if len(names) >= MAX_LISTED_FILES:
                return


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1


def _dedupe(paths: Iterable[SearchPath]) -> list[SearchPath]:
    seen: set[str] = set()
    unique = []
    for p in paths:
        key = os.path.normcase(os.path.normpath(str(p.directory)))
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique
