"""ComfyUI's `comfy.k_diffusion` package (k-diffusion's samplers and schedules)."""
