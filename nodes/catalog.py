"""The core node classes a server registers (the app factory calls `core_nodes()`).

Each node module ends with a `NODES` tuple naming its classes in menu order; this is the one list of those modules.
The diffusion modules import torch and the model code, so they are imported when the catalog is asked for.
"""

from __future__ import annotations

from nodes.registry import Node


def core_nodes() -> list[type[Node]]:
    from nodes import conditioning, image, latent, loaders, primitives, sampling

    modules = (loaders, conditioning, sampling, latent, image, primitives)
    return [node for module in modules for node in module.NODES]
