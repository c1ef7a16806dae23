"""Naming for never-overwrite writes: the candidates tried, in order, until one is free."""

from __future__ import annotations

import os
from collections.abc import Iterator
from itertools import count


def numbered_names(name: str) -> Iterator[str]:
    """ComfyUI's upload naming: 'x.png', then 'x (1).png', 'x (2).png', ... (the number goes before the extension)."""
    yield name
    stem, suffix = os.path.splitext(name)
    for number in count(1):
        yield f"{stem} ({number}){suffix}"
