"""ComfyUI's `execution` module: the names packs import from it.

Chisel's executor (server/engine/executor.py) runs prompts; a pack that replaces functions of this module to change
how ComfyUI executes (a few do) changes nothing here. What packs call directly works: get_input_data,
merge_result_data, get_output_from_returns-style helpers, format_value, full_type_name, and the enums.
"""

from __future__ import annotations

import enum
from typing import Any

SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
MAXIMUM_HISTORY_SIZE = 10000


class ExecutionResult(enum.Enum):
    SUCCESS = 0
    FAILURE = 1
    PENDING = 2


class DuplicateNodeError(Exception):
    pass


class CacheType(enum.Enum):
    CLASSIC = 0
    LRU = 1
    NONE = 2
    RAM_PRESSURE = 3


def get_input_data(inputs: dict[str, Any], class_def: type, unique_id: str, outputs: Any = None,
                   dynprompt: Any = None, extra_data: dict[str, Any] | None = None) -> dict[str, list[Any]]:
    """A node's literal inputs as ComfyUI's executor passes them ({name: [value]}); linked inputs are read from
    `outputs` ({node id: [values per output]}) when given, and hidden inputs filled in."""
    extra_data = extra_data or {}
    valid = class_def.INPUT_TYPES()
    declared = {**(valid.get("required") or {}), **(valid.get("optional") or {})}
    data: dict[str, list[Any]] = {}
    for name, value in inputs.items():
        if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int):
            if outputs is None or value[0] not in outputs:
                continue
            data[name] = outputs[value[0]][value[1]]
        elif name in declared:
            data[name] = [value]
    for name, kind in (valid.get("hidden") or {}).items():
        if kind == "PROMPT":
            data[name] = [getattr(dynprompt, "get_original_prompt", lambda: {})() if dynprompt is not None else {}]
        elif kind == "DYNPROMPT":
            data[name] = [dynprompt]
        elif kind == "EXTRA_PNGINFO":
            data[name] = [extra_data.get("extra_pnginfo")]
        elif kind == "UNIQUE_ID":
            data[name] = [unique_id]
        elif kind in ("AUTH_TOKEN_COMFY_ORG", "API_KEY_COMFY_ORG"):
            data[name] = [extra_data.get(kind.lower())]
    return data


def merge_result_data(results: list[Any], obj: Any) -> list[Any]:
    """Per-call result tuples of a node merged into one list per output (OUTPUT_IS_LIST outputs concatenated)."""
    output_is_list = getattr(obj, "OUTPUT_IS_LIST", None) or [False] * len(results[0])
    output = []
    for i, is_list in zip(range(len(results[0])), output_is_list):
        if is_list:
            output.append([item for result in results for item in result[i]])
        else:
            output.append([result[i] for result in results])
    return output


def format_value(x: Any) -> Any:
    if x is None or isinstance(x, (int, float, bool, str)):
        return x
    return str(x)


def full_type_name(klass: type) -> str:
    module = klass.__module__
    return klass.__qualname__ if module == "builtins" else f"{module}.{klass.__qualname__}"


class PromptExecutor:
    """ComfyUI's executor class, for packs that import it; Chisel's executor runs prompts, not this class."""

    def __init__(self, server: Any = None, cache_type: Any = False, cache_args: Any = None):
        self.server = server
        self.success = True
        self.history_result: dict[str, Any] = {}
        self.status_messages: list[Any] = []

    def execute(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("prompts run on Chisel's executor; a custom node cannot run a prompt through "
                           "execution.PromptExecutor")


class PromptQueue:
    """ComfyUI's queue class, for packs that import it; the server's queue is Chisel's (server/engine/queue.py)."""

    def __init__(self, server: Any = None):
        self.server = server


def __getattr__(name: str):  # noqa: ANN202 - ComfyUI's other names: placeholders that fail when used
    from comfy_compat.surface.unavailable import module_attribute

    return module_attribute('execution', name)
