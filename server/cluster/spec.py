"""A worker's settings on the wire: ServerConfig <-> JSON (a machine that joins with `chisel worker` hands its own
folders to the worker processes Ray starts there through the environment variable CONFIG_ENV)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from server.config import ServerConfig

CONFIG_ENV = "CHISEL_WORKER_CONFIG"
_PATHS = ("base_dir", "input_dir", "output_dir", "temp_dir", "user_dir", "models_dir", "custom_nodes_dir",
          "web_root", "workflows_dir", "bundled_models_dir")
# Fields JSON gives back as lists (every tuple-typed field; extra_model_paths also holds paths).
_TUPLES = tuple(f.name for f in dataclasses.fields(ServerConfig)
                if str(f.type).startswith("tuple") and f.name != "extra_model_paths")


def config_to_json(config: ServerConfig) -> str:
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name == "auth_token":
            continue  # a worker serves no HTTP: the token stays on the head
        if isinstance(value, Path):
            value = str(value)
        elif field.name == "extra_model_paths":
            value = [str(p) for p in value]
        elif isinstance(value, tuple):
            value = list(value)
        fields[field.name] = value
    return json.dumps(fields)


def config_from_json(text: str) -> ServerConfig:
    fields = json.loads(text)
    known = {f.name for f in dataclasses.fields(ServerConfig)}
    fields = {k: v for k, v in fields.items() if k in known}  # a newer head's extra fields are ignored
    for name in _PATHS:
        if fields.get(name) is not None:
            fields[name] = Path(fields[name])
    for name in _TUPLES:
        if name in fields:
            fields[name] = tuple(fields[name])
    fields["extra_model_paths"] = tuple(Path(p) for p in fields.get("extra_model_paths", ()))
    return ServerConfig(**fields)


def config_from_environment() -> ServerConfig | None:
    """The config a `chisel worker` machine put in the environment, or None."""
    text = os.environ.get(CONFIG_ENV)
    return config_from_json(text) if text else None
