"""The core node classes a server registers (the app factory calls `core_nodes()`).

Each node module ends with a `NODES` tuple naming its classes in menu order; this is the one list of those modules.
The diffusion modules import torch and the model code, so they are imported when the catalog is asked for.
"""

from __future__ import annotations

from nodes.registry import Node, NodeSpec


def core_nodes() -> list[type[Node] | NodeSpec]:
    """Node classes, and the specs of nodes with v3 dynamic inputs (their /object_info entry is served as given)."""
    from nodes import (animated, batching, compositing, conditioning, custom_sampling, guiders, image, image_filters,
                       image_tools, inspect, latent, latent_files, latent_operations, latent_tools, loaders, logic,
                       masks, primitives, resize_image_mask, sampler_options, sampling, schedulers, sigmas, text)
    from nodes import guidance_tweaks, model_patches
    from nodes import clip_vision, conditioning_extras, model_merging, model_saving, vae_tiled

    modules = (loaders, conditioning, sampling, custom_sampling, guiders, sampler_options, schedulers, sigmas, latent,
               latent_tools, latent_operations, latent_files, image, image_tools, image_filters, resize_image_mask,
               batching, masks, compositing, animated, inspect, primitives, text, logic, model_patches, guidance_tweaks)
    modules += (model_merging, model_saving, conditioning_extras, vae_tiled, clip_vision)
    from nodes import dit_guidance, model_parts

    modules += (model_parts, dit_guidance)
    from nodes import controlnet, preprocessors, upscale_models

    modules += (controlnet, preprocessors, upscale_models)
    return [node for module in modules for node in module.NODES]
