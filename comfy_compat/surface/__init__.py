"""ComfyUI's module names: `comfy_compat.surface.<name>` is what a custom node pack gets for `import <name>`.

The mapping is done by comfy_compat.finder; each module here implements its ComfyUI namesake on Chisel's code.
"""
