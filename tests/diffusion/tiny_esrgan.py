"""Random-weight ESRGAN files in the released key layout for tests: the benchmark's writer (bench/upscale_memory.py)
at small sizes (not a test module)."""

from bench.upscale_memory import esrgan_state_dict, write_esrgan

__all__ = ["esrgan_state_dict", "write_esrgan"]
