"""The files a prompt needs, read from its literal inputs and the registry's declarations (no node is run).

A combo input declared with `Files(folder)` names a file of that folder: a model folder ("checkpoints", "loras",
"vae"...) or one of the server's own folders ("input", and "output"/"temp" through an annotation). The scheduler uses
the model files for affinity (lease a prompt to a worker that already holds them) and to skip workers that lack a
file; the input images are shipped with the prompt to workers that have their own input folder.

A model file is named "folder/name" ("checkpoints/chisel-shapes.safetensors"), the same on every machine.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nodes.inputs import Files
from nodes.registry import Registry

SERVER_FOLDERS = frozenset({"input", "output", "temp"})


@dataclass(frozen=True)
class PromptFiles:
    """models: "folder/name" of every model file the prompt names; inputs: its input-image names as written (a
    " [output]" or " [temp]" annotation included)."""

    models: frozenset[str] = frozenset()
    inputs: tuple[str, ...] = ()


def model_ref(folder: str, name: str) -> str:
    return f"{folder}/{name}"


def split_ref(ref: str) -> tuple[str, str]:
    folder, _, name = ref.partition("/")
    return folder, name


def prompt_files(prompt: Mapping[str, Any], registry: Registry) -> PromptFiles:
    """The files `prompt` (an API prompt) names through Files combos; unknown node types are ignored (validation
    reports them)."""
    models: set[str] = set()
    inputs: dict[str, None] = {}
    for node in prompt.values():
        if not isinstance(node, Mapping):
            continue
        spec = registry.get(node.get("class_type")) if isinstance(node.get("class_type"), str) else None
        values = node.get("inputs")
        if spec is None or not isinstance(values, Mapping):
            continue
        for declared in spec.inputs:
            source = getattr(declared, "source", None)
            value = values.get(declared.name)
            if not isinstance(source, Files) or not isinstance(value, str) or not value:
                continue
            if source.folder in SERVER_FOLDERS:
                inputs[value] = None
            else:
                models.add(model_ref(source.folder, value))
    return PromptFiles(models=frozenset(models), inputs=tuple(inputs))


def model_folders(registry: Registry) -> list[str]:
    """Every model folder kind the registry's nodes read files from (what a worker's inventory lists)."""
    found: dict[str, None] = {}
    for name in registry.names():
        spec = registry.get(name)
        for declared in spec.inputs if spec is not None else ():
            source = getattr(declared, "source", None)
            if isinstance(source, Files) and source.folder not in SERVER_FOLDERS:
                found[source.folder] = None
    return list(found)


def missing(models: Iterable[str], inventory: Mapping[str, frozenset[str]]) -> list[str]:
    """The refs among `models` that are not in a worker's inventory ({folder: names})."""
    absent = []
    for ref in sorted(models):
        folder, name = split_ref(ref)
        if name not in inventory.get(folder, frozenset()):
            absent.append(ref)
    return absent


class ClusterListing:
    """The choices of Files combos on a cluster head: this machine's files, plus the model files of every live
    worker (a model that only a worker machine has still validates on the head). Thread-safe."""

    def __init__(self, local: Callable[[Files], Sequence[str]]):
        self.local = local
        self._lock = threading.Lock()
        self._workers: dict[str, Mapping[str, frozenset[str]]] = {}

    def __call__(self, files: Files) -> list[str]:
        names = list(self.local(files))
        if files.folder in SERVER_FOLDERS:
            return names
        with self._lock:
            remote: set[str] = set()
            for inventory in self._workers.values():
                remote |= inventory.get(files.folder, frozenset())
        if remote <= set(names):
            return names
        return sorted(set(names) | remote)

    def update(self, worker_id: str, inventory: Mapping[str, frozenset[str]]) -> None:
        with self._lock:
            self._workers[worker_id] = dict(inventory)

    def forget(self, worker_id: str) -> None:
        with self._lock:
            self._workers.pop(worker_id, None)
