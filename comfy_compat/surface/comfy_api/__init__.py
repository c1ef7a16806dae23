"""ComfyUI's `comfy_api`: the versioned node API of packs (`comfy_api.latest`, `comfy_api.v0_0_2`, ...).

`comfy_api.latest.io` declares V3 nodes (io.ComfyNode with a Schema), `comfy_api.latest.ui` builds their ui outputs,
and a pack's `async def comfy_entrypoint() -> ComfyExtension` lists them; comfy_compat.v3_nodes turns them into
Chisel's NodeSpecs.
"""
