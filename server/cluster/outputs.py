"""Files that travel between the head and its workers: outputs back to the head, input images out to the workers.

A node's ui output names its files as {filename, subfolder, type} items ("output" or "temp"). A worker that does not
share the head's output folder reads each such file when the node's `executed` event is emitted, sends the bytes
with the event and removes its own copy; the head writes them into its own folder (safefiles: a complete file under
a name never taken before) and rewrites the item's filename when the worker's name was taken on the head
("x_00001_.png" from two workers becomes x_00001_.png and x_00002_.png). The head keeps the renames per worker, so a
cached output node that re-sends its old items (no bytes this time) and the history's outputs get the same names.

With a shared output folder (`--ray-shared-output`, set on every machine) workers save into it directly and only
"temp" files (previews) travel.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from safefiles import PathRefused, clean_file_name, numbered_names, resolve_inside, write_unique
from server.engine.events import Event, Executed

log = logging.getLogger(__name__)
FileKey = tuple[str, str, str]  # (type, subfolder, filename)
FOLDER_KINDS = ("output", "temp")
_COUNTED = re.compile(r"^(?P<stem>.*)_(?P<n>\d{5,})_(?P<ext>\.[^./\\]+)$")
MAX_RENAMES = 10_000


def file_items(output: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The {filename, subfolder, type} items of a ui output (images, gifs, audio... any list of such dicts)."""
    for items in output.values():
        if not isinstance(items, list):
            continue
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("filename"), str) \
                    and item.get("type", "output") in FOLDER_KINDS:
                yield item


def key_of(item: Mapping[str, Any]) -> FileKey:
    return (str(item.get("type", "output")), str(item.get("subfolder") or ""), str(item["filename"]))


# ---- the worker's side ----------------------------------------------------------------------------------------------
def collect_files(folders: Any, output: Mapping[str, Any], *, shared_output: bool) -> dict[FileKey, bytes]:
    """Read (and remove) the files a ui output names, for the head. Files already sent (a cached node re-sending
    its items) are gone and simply not included."""
    files: dict[FileKey, bytes] = {}
    for item in file_items(output):
        key = key_of(item)
        kind, subfolder, filename = key
        if kind == "output" and shared_output:
            continue
        try:
            path = resolve_inside(folders.directory(kind), f"{subfolder}/{filename}" if subfolder else filename,
                                  field="filename")
        except (PathRefused, ValueError):
            continue
        try:
            files[key] = path.read_bytes()
        except FileNotFoundError:
            continue
        try:
            path.unlink()
        except OSError:
            pass
    return files


# ---- the head's side ------------------------------------------------------------------------------------------------
class OutputLanding:
    """Writes files sent by workers into the head's folders and renames ui items accordingly (thread-safe)."""

    def __init__(self, folders: Any, *, durable: bool = True):
        self.folders = folders
        self.durable = durable
        self._lock = threading.Lock()
        self._renames: OrderedDict[tuple[str, FileKey], tuple[str, str]] = OrderedDict()

    def land_event(self, worker: str, event: Event, files: Mapping[FileKey, bytes] | None) -> Event:
        """An event from `worker` as the head's clients must see it: an Executed event's files written here and its
        items renamed; any other event unchanged."""
        if not isinstance(event, Executed):
            return event
        output = self._copy(event.output)
        for item in file_items(output):
            key = key_of(item)
            data = (files or {}).get(key)
            if data is not None:
                try:
                    subfolder, filename = self._write(key, data)
                except (OSError, PathRefused, ValueError) as exc:
                    log.error("could not save %s from worker %s: %s", key, worker, exc)
                    continue
                with self._lock:
                    self._renames[(worker, key)] = (subfolder, filename)
                    self._renames.move_to_end((worker, key))
                    while len(self._renames) > MAX_RENAMES:
                        self._renames.popitem(last=False)
            self._rename(worker, item, key)
        return replace(event, output=output)

    def rewrite(self, worker: str, outputs: Mapping[str, Any]) -> dict[str, Any]:
        """A prompt's outputs (history) with the names its files got on the head."""
        result: dict[str, Any] = {}
        for node_id, output in outputs.items():
            if not isinstance(output, Mapping):
                result[node_id] = output
                continue
            output = self._copy(output)
            for item in file_items(output):
                self._rename(worker, item, key_of(item))
            result[node_id] = output
        return result

    def _rename(self, worker: str, item: dict[str, Any], key: FileKey) -> None:
        with self._lock:
            landed = self._renames.get((worker, key))
        if landed is not None:
            item["subfolder"], item["filename"] = landed

    def _write(self, key: FileKey, data: bytes) -> tuple[str, str]:
        kind, subfolder, filename = key
        filename = clean_file_name(filename, field="filename")
        root = self.folders.directory(kind)
        root.mkdir(parents=True, exist_ok=True)
        folder = resolve_inside(root, subfolder, field="subfolder", allow_root=True) if subfolder else Path(root)
        folder.mkdir(parents=True, exist_ok=True)
        name = write_unique(folder, data, _names(folder, filename), durable=self.durable)
        return subfolder, name

    @staticmethod
    def _copy(output: Mapping[str, Any]) -> dict[str, Any]:
        """A copy deep enough to rename items without touching the worker's objects."""
        return {media: [dict(i) if isinstance(i, dict) else i for i in items] if isinstance(items, list) else items
                for media, items in output.items()}


def _names(folder: Path, filename: str) -> Iterator[str]:
    """Candidate names on the head: the worker's name, then ComfyUI's next counters ("x_00007_.png") for counted
    names, else "x (1).png"... ."""
    match = _COUNTED.match(filename)
    if match is None:
        yield from numbered_names(filename)
        return
    yield filename
    stem, ext, width = match["stem"], match["ext"], len(match["n"])
    wanted = os.path.normcase(stem) + "_"
    highest = int(match["n"])
    try:
        for entry in os.listdir(folder):
            if os.path.normcase(entry[:len(wanted)]) == wanted:
                digits = entry[len(wanted):].split("_")[0]
                if digits.isdigit():
                    highest = max(highest, int(digits))
    except OSError:
        pass
    counter = highest + 1
    while True:
        yield f"{stem}_{counter:0{width}d}_{ext}"
        counter += 1
