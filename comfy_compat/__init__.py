"""ComfyUI's Python surface for custom node packs, on top of Chisel's own code.

Custom node packs written for ComfyUI import its modules by their top-level names (`folder_paths`, `comfy.utils`,
`comfy.model_management`, `latent_preview`, `node_helpers`, `comfy_api.latest`, ...). This package provides those
names with real behaviour under `comfy_compat/surface/`, and `comfy_compat.finder` maps the top-level names onto them.
Only the custom-node loader (nodes/custom_nodes.py) imports this package; see docs/custom-nodes.md.
"""
