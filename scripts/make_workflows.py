"""Write the ready workflows in workflows/ for the built-in model: each as an API prompt (workflows/api/<name>.json)
and in the editor's format (workflows/<name>.json, litegraph 0.4), plus the example input images in workflows/assets/.

The API prompts below are the source of truth; the editor files are derived from them (server.workflow.api_to_workflow)
and laid out by hand, so the two can never disagree (tests/workflows checks that converting each editor file gives
its API prompt). Re-run after changing a setting:  .venv/bin/python scripts/make_workflows.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nodes.catalog import core_nodes  # noqa: E402
from nodes.registry import Registry  # noqa: E402
from server.workflow import api_to_workflow, convert_workflow  # noqa: E402
from train.scenes import Combo, Scene, render  # noqa: E402

CHECKPOINT = "chisel-shapes.safetensors"
LORA = "chisel-huge.safetensors"  # the optional LoRA (train.lora_stage): "huge" shapes
SIZE = 64  # the resolution the built-in model was trained at
SAMPLER = {"steps": 20, "cfg": 2.0, "sampler_name": "euler", "scheduler": "normal"}  # the model card's defaults
NEGATIVE = ""  # the model learned the unconditional branch from empty captions (caption dropout)

# The example inputs (copied into input/ by the server and the CLI when missing).
EXAMPLE_IMAGE = "chisel-example-shapes.png"
EXAMPLE_MASK = "chisel-example-mask.png"


def loader() -> dict[str, Any]:
    return {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT},
                  "_meta": {"title": "Load Checkpoint"}}}


def text(node_id: str, prompt: str, title: str, clip: list[Any] | None = None) -> dict[str, Any]:
    return {node_id: {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": clip or ["4", 1]},
                      "_meta": {"title": title}}}


def ksampler(node_id: str, latent: list[Any], *, seed: int, denoise: float = 1.0, positive: list[Any] | None = None,
             model: list[Any] | None = None, title: str = "KSampler") -> dict[str, Any]:
    inputs = {"seed": seed, **SAMPLER, "denoise": denoise, "model": model or ["4", 0],
              "positive": positive or ["6", 0], "negative": ["7", 0], "latent_image": latent}
    return {node_id: {"class_type": "KSampler", "inputs": inputs, "_meta": {"title": title}}}


def decode_and_save(samples: list[Any], prefix: str, decode_id: str = "8", save_id: str = "9") -> dict[str, Any]:
    return {decode_id: {"class_type": "VAEDecode", "inputs": {"samples": samples, "vae": ["4", 2]},
                        "_meta": {"title": "VAE Decode"}},
            save_id: {"class_type": "SaveImage", "inputs": {"images": [decode_id, 0], "filename_prefix": prefix},
                      "_meta": {"title": "Save Image"}}}


def empty_latent(width: int = SIZE, height: int = SIZE, batch: int = 1) -> dict[str, Any]:
    return {"5": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": batch},
                  "_meta": {"title": "Empty Latent Image"}}}


def load_image(node_id: str, name: str) -> dict[str, Any]:
    return {node_id: {"class_type": "LoadImage", "inputs": {"image": name}, "_meta": {"title": "Load Image"}}}


WORKFLOWS: dict[str, dict[str, Any]] = {
    "txt2img": {
        **loader(), **text("6", "a large red star in the center on a blue background", "Positive Prompt"),
        **text("7", NEGATIVE, "Negative Prompt"), **empty_latent(batch=4),
        **ksampler("3", ["5", 0], seed=42), **decode_and_save(["3", 0], "chisel-txt2img"),
    },
    "img2img": {
        **loader(), **load_image("10", EXAMPLE_IMAGE),
        "11": {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]},
               "_meta": {"title": "VAE Encode"}},
        **text("6", "a large green circle in the center on a purple background", "Positive Prompt"),
        **text("7", NEGATIVE, "Negative Prompt"),
        **ksampler("3", ["11", 0], seed=7, denoise=0.6), **decode_and_save(["3", 0], "chisel-img2img"),
    },
    "inpaint": {
        **loader(), **load_image("10", EXAMPLE_IMAGE),
        "12": {"class_type": "LoadImageMask", "inputs": {"image": EXAMPLE_MASK, "channel": "red"},
               "_meta": {"title": "Load Mask"}},
        "11": {"class_type": "VAEEncodeForInpaint",
               "inputs": {"pixels": ["10", 0], "vae": ["4", 2], "mask": ["12", 0], "grow_mask_by": 6},
               "_meta": {"title": "VAE Encode (for Inpainting)"}},
        **text("6", "a large yellow circle in the center on a purple background", "Positive Prompt"),
        **text("7", NEGATIVE, "Negative Prompt"),
        **ksampler("3", ["11", 0], seed=3), **decode_and_save(["3", 0], "chisel-inpaint"),
    },
    "hires-fix": {
        **loader(), **text("6", "a large yellow star in the center on a purple background", "Positive Prompt"),
        **text("7", NEGATIVE, "Negative Prompt"), **empty_latent(),
        **ksampler("3", ["5", 0], seed=11, title="KSampler (first pass)"),
        "10": {"class_type": "LatentUpscaleBy", "inputs": {"samples": ["3", 0], "upscale_method": "nearest-exact",
                                                           "scale_by": 2.0}, "_meta": {"title": "Upscale Latent By"}},
        **ksampler("11", ["10", 0], seed=11, denoise=0.5, title="KSampler (second pass)"),
        **decode_and_save(["11", 0], "chisel-hires"),
    },
    # Two prompts, each on its half of a double-width canvas. The areas overlap by 16 px so their feathered edges
    # blend instead of leaving a seam; every pixel is covered by an area, so no whole-image prompt dilutes them.
    "area-composition": {
        **loader(), **text("7", NEGATIVE, "Negative Prompt"), **empty_latent(width=2 * SIZE, height=SIZE),
        **text("12", "a large red circle in the center on a white background", "Left Prompt"),
        "13": {"class_type": "ConditioningSetArea", "inputs": {"conditioning": ["12", 0], "width": SIZE + 8,
                                                               "height": SIZE, "x": 0, "y": 0, "strength": 1.0},
               "_meta": {"title": "Left Area"}},
        **text("14", "a large blue square in the center on a white background", "Right Prompt"),
        "15": {"class_type": "ConditioningSetArea", "inputs": {"conditioning": ["14", 0], "width": SIZE + 8,
                                                               "height": SIZE, "x": SIZE - 8, "y": 0, "strength": 1.0},
               "_meta": {"title": "Right Area"}},
        "16": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["13", 0],
                                                               "conditioning_2": ["15", 0]},
               "_meta": {"title": "Combine Areas"}},
        **ksampler("3", ["5", 0], seed=5, positive=["16", 0]), **decode_and_save(["3", 0], "chisel-area"),
    },
    "lora": {
        **loader(),
        "10": {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1], "lora_name": LORA,
                                                      "strength_model": 1.0, "strength_clip": 1.0},
               "_meta": {"title": "Load LoRA"}},
        **text("6", "a huge red star on a blue background", "Positive Prompt",
               clip=["10", 1]),
        **text("7", NEGATIVE, "Negative Prompt", clip=["10", 1]), **empty_latent(),
        **ksampler("3", ["5", 0], seed=9, model=["10", 0]), **decode_and_save(["3", 0], "chisel-lora"),
    },
}

# ---- learn-*: the inspect nodes (nodes/inspect.py) on the built-in model, with few steps so each runs in seconds.
LEARN_STEPS = 8
EXAMPLE_CAPTION = "a large yellow circle in the center on a purple background"  # what EXAMPLE_IMAGE shows


def timeline(node_id: str, *, seed: int, steps: int = LEARN_STEPS, scheduler: str = "normal",
             title: str = "Denoising Timeline") -> dict[str, Any]:
    inputs = {"seed": seed, **SAMPLER, "steps": steps, "scheduler": scheduler, "denoise": 1.0, "model": ["4", 0],
              "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0], "vae": ["4", 2]}
    return {node_id: {"class_type": "DenoisingTimeline", "inputs": inputs, "_meta": {"title": title}}}


def schedule_plot(node_id: str, model_sampling: str, title: str) -> dict[str, Any]:
    return {node_id: {"class_type": "SchedulePlot",
                      "inputs": {"steps": 20, "model_sampling": model_sampling, "denoise": 1.0},
                      "_meta": {"title": title}}}


def save(node_id: str, images: list[Any], prefix: str) -> dict[str, Any]:
    return {node_id: {"class_type": "SaveImage", "inputs": {"images": images, "filename_prefix": prefix},
                      "_meta": {"title": "Save Image"}}}


WORKFLOWS.update({
    # The film run backwards: every step's noisy latent, predicted clean image and predicted noise, and CFG's parts.
    "learn-timeline": {
        **loader(), **text("6", "a large red star in the center on a blue background", "Positive Prompt"),
        **text("7", NEGATIVE, "Negative Prompt"), **empty_latent(),
        **timeline("3", seed=42), **decode_and_save(["3", 0], "chisel-learn-timeline"),
    },
    # Forward: the example image noised to step 5 of 10; then one prediction of what the clean image was.
    "learn-noising": {
        **loader(), **load_image("10", EXAMPLE_IMAGE),
        "11": {"class_type": "NoiseToTimestep",
               "inputs": {"model": ["4", 0], "seed": 3, "steps": 10, "scheduler": "normal", "vae": ["4", 2],
                          "step": 5, "sigma": 0.0, "image": ["10", 0]},
               "_meta": {"title": "Noise To Timestep"}},
        **text("6", EXAMPLE_CAPTION, "Positive Prompt"), **text("7", NEGATIVE, "Negative Prompt"),
        "12": {"class_type": "DenoiseOnce",
               "inputs": {"model": ["4", 0], "seed": 3, "steps": 10, "cfg": SAMPLER["cfg"], "scheduler": "normal",
                          "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["11", 0], "vae": ["4", 2],
                          "step": 5, "add_noise": "disable"},
               "_meta": {"title": "Denoise Once"}},
        **save("9", ["12", 1], "chisel-learn-noising"),
    },
    # How the scheduler cuts the film: every scheduler's sigmas (SD's table and a flow model's), and the same prompt
    # and seed sampled in 10 steps on the normal and on the karras schedule (each KSampler shows its sigma curve).
    "learn-schedules": {
        **schedule_plot("20", "eps", "Schedule Plot (SD: eps / v)"),
        **save("21", ["20", 0], "chisel-learn-schedules-plot"),
        **schedule_plot("22", "flow", "Schedule Plot (flow)"), **save("23", ["22", 0], "chisel-learn-schedules-plot"),
        **loader(), **text("6", "a large red star in the center on a blue background", "Positive Prompt"),
        **text("7", NEGATIVE, "Negative Prompt"), **empty_latent(),
        "3": {"class_type": "KSampler", "inputs": {"seed": 42, **SAMPLER, "steps": 10, "denoise": 1.0,
                                                   "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                                                   "latent_image": ["5", 0]}, "_meta": {"title": "KSampler (normal)"}},
        "11": {"class_type": "KSampler", "inputs": {"seed": 42, **SAMPLER, "steps": 10, "scheduler": "karras",
                                                    "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0],
                                                    "negative": ["7", 0], "latent_image": ["5", 0]},
               "_meta": {"title": "KSampler (karras)"}},
        **decode_and_save(["3", 0], "chisel-learn-schedules"),
        **decode_and_save(["11", 0], "chisel-learn-schedules", decode_id="12", save_id="13"),
    },
    # The training objective on the example image at t = 500: true noise, predicted noise, error, MSE.
    "learn-training": {
        **loader(), **load_image("10", EXAMPLE_IMAGE), **text("6", EXAMPLE_CAPTION, "Caption"),
        "3": {"class_type": "TrainingStep",
              "inputs": {"model": ["4", 0], "seed": 0, "positive": ["6", 0], "vae": ["4", 2], "image": ["10", 0],
                         "t": 500},
              "_meta": {"title": "Training Step"}},
        **save("9", ["3", 0], "chisel-learn-training"),
    },
})

# Editor layout: column x positions by node role, then rows; sizes wide enough for the widgets.
COLUMNS = {"CheckpointLoaderSimple": 40, "LoadImage": 40, "LoadImageMask": 40, "LoraLoader": 400,
           "CLIPTextEncode": 400, "EmptyLatentImage": 400, "VAEEncode": 400, "VAEEncodeForInpaint": 400,
           "ConditioningSetArea": 860, "ConditioningCombine": 1200, "KSampler": 1200, "LatentUpscaleBy": 1560,
           "VAEDecode": 1560, "SaveImage": 1820, "DenoisingTimeline": 1200, "NoiseToTimestep": 860,
           "DenoiseOnce": 1200, "SchedulePlot": 860, "TrainingStep": 860}
SIZES = {"CheckpointLoaderSimple": [315, 98], "CLIPTextEncode": [400, 160], "EmptyLatentImage": [315, 106],
         "KSampler": [315, 262], "VAEDecode": [210, 46], "SaveImage": [320, 360], "LoadImage": [315, 314],
         "LoadImageMask": [315, 318], "VAEEncode": [210, 46], "VAEEncodeForInpaint": [315, 98],
         "LatentUpscaleBy": [315, 82], "ConditioningSetArea": [315, 154], "ConditioningCombine": [230, 46],
         "LoraLoader": [315, 126], "DenoisingTimeline": [540, 310], "NoiseToTimestep": [315, 250],
         "DenoiseOnce": [315, 310], "SchedulePlot": [315, 110], "TrainingStep": [315, 170]}
# The height a node grows to in the editor once its results are drawn (previews, strips, plots), so that the node
# below it in its column stays clear; the editor grows nodes to fit what they show.
ROOM = {"KSampler": 600, "DenoisingTimeline": 780, "SchedulePlot": 360, "NoiseToTimestep": 520, "DenoiseOnce": 520,
        "TrainingStep": 420}
COLUMN_GAP = 45


def lay_out(workflow: dict[str, Any]) -> dict[str, Any]:
    """Columns by node role, nodes stacked in each column by their ROOM (the height they grow to once their results
    are drawn), and each column pushed right of the widest node of the column before it."""
    placed = []
    for node in sorted(workflow["nodes"], key=lambda n: n["order"]):
        column = COLUMNS.get(node["type"], 40)
        if node["type"] == "KSampler" and node.get("title", "").endswith("(second pass)"):
            column = 1560
        placed.append((column, node))
    shift: dict[int, int] = {}
    right_edge = -COLUMN_GAP
    for column in sorted({c for c, _ in placed}):
        x = max(column, right_edge + COLUMN_GAP)
        shift[column] = x
        right_edge = x + max(SIZES.get(n["type"], n.get("size", [315, 100]))[0] for c, n in placed if c == column)
    next_y: dict[int, int] = {}
    for column, node in placed:
        size = SIZES.get(node["type"], node.get("size", [315, 100]))
        y = next_y.get(column, 80)
        node["pos"], node["size"] = [shift[column], y], list(size)
        next_y[column] = y + max(size[1], ROOM.get(node["type"], 0)) + 70
    workflow["extra"] = {"ds": {"scale": 0.9, "offset": [0, 0]}}
    return workflow


def example_assets(assets: Path) -> None:
    """A scene from the training world as the img2img/inpaint input, and a mask over its centre (white = repaint)."""
    scene = Scene(Combo("large", "yellow", "circle", "center", "purple"), extent=0.5, cx=0.5, cy=0.5)
    Image.fromarray(render(scene, SIZE)).save(assets / EXAMPLE_IMAGE)
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    quarter = SIZE // 4
    mask[quarter:SIZE - quarter, quarter:SIZE - quarter] = 255
    Image.fromarray(mask, "L").convert("RGB").save(assets / EXAMPLE_MASK)


def main() -> None:
    registry = Registry(list_files=lambda files: [CHECKPOINT, LORA, EXAMPLE_IMAGE, EXAMPLE_MASK])
    registry.add_all(core_nodes())
    out = ROOT / "workflows"
    (out / "api").mkdir(parents=True, exist_ok=True)
    (out / "assets").mkdir(exist_ok=True)
    example_assets(out / "assets")
    for name, prompt in WORKFLOWS.items():
        ui = lay_out(api_to_workflow(prompt, registry))
        if convert_workflow(ui, registry) != prompt:
            raise SystemExit(f"{name}: the editor file does not convert back to its API prompt")
        (out / "api" / f"{name}.json").write_text(json.dumps(prompt, indent=2) + "\n")
        (out / f"{name}.json").write_text(json.dumps(ui, indent=2) + "\n")
        print(f"wrote workflows/{name}.json and workflows/api/{name}.json")


if __name__ == "__main__":
    main()
