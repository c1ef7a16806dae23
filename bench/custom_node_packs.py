"""Real ComfyUI custom node packs on Chisel: `python -m bench.custom_node_packs PACKS_DIR [--run] [--json OUT]`.

PACKS_DIR holds packs as a user would drop them into custom_nodes/ (one folder or .py file each, e.g. extracted
with `git archive HEAD | tar -x`); nothing is downloaded. Each pack is copied into a fresh base folder's
custom_nodes/ and loaded the way `chisel serve` loads it (core nodes first, then the packs in name order, with
ComfyUI's surface from comfy_compat). For each pack the report gives: loaded or why not (the real cause: a module
that is missing, ComfyUI's or a pip package), the nodes registered, the nodes skipped and why, and import time.

With --run, a few model-free nodes of the loaded packs (CASES below) also run through POST /prompt on a real
aiohttp server, each output shown by PreviewAny; the expected text is what ComfyUI's own execution gives: the pack's
class instantiated and its FUNCTION called directly with the same inputs, the values shown as PreviewAny shows them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

IMAGE = "<image>"  # an input fed by the core LoadImage node with the bench's gradient picture (bench.png)
# ("link", core node, its inputs, the value it gives): an input fed by a core node's first output.
# (pack folder, node class, inputs): model-free nodes; IMAGE inputs come from LoadImage.
CASES: tuple[tuple[str, str, dict[str, Any] | None], ...] = (
    ("ComfyUI-Custom-Scripts", "MathExpression|pysssss", {"expression": "a * 2 + b",
                                                          "a": ("link", "PrimitiveInt", {"value": 3}, 3),
                                                          "b": ("link", "PrimitiveFloat", {"value": 0.5}, 0.5)}),
    ("ComfyUI-Custom-Scripts", "StringFunction|pysssss", {"action": "append", "tidy_tags": "no",
                                                          "text_a": "chisel", "text_b": "studio", "text_c": ""}),
    ("ComfyUI_essentials", "SimpleMathInt+", {"value": 5}),
    ("ComfyUI_essentials", "SimpleMathSlider+", {"value": 0.3, "min": 10.0, "max": 20.0, "rounding": 1}),
    ("ComfyUI_essentials", "ImageFlip+", {"image": IMAGE, "axis": "x"}),
    ("ComfyUI_essentials", "ImageDesaturate+", {"image": IMAGE, "factor": 0.5, "method": "luminance (Rec.709)"}),
    ("ComfyUI-KJNodes", "ImageGridComposite2x2", {"image1": IMAGE, "image2": IMAGE, "image3": IMAGE,
                                                  "image4": IMAGE}),
    ("ComfyUI-KJNodes", "INTConstant", {"value": 42}),
    ("ComfyUI-KJNodes", "StringConstant", {"string": "hello"}),
    ("ComfyUI-KJNodes", "FloatConstant", {"value": 0.25}),
    ("ComfyUI_Comfyroll_CustomNodes", "CR Integer To String", {"int_": 12}),
    ("ComfyUI_Comfyroll_CustomNodes", "CR Float To Integer", {"_float": 3.7}),
    ("was-node-suite-comfyui", "Text String", {"text": "a", "text_b": "b", "text_c": "c", "text_d": "d"}),
    ("was-node-suite-comfyui", "Image Flip", {"images": IMAGE, "mode": "horizontal"}),
    ("was-node-suite-comfyui", "Text Concatenate", {"text_a": "a", "text_b": "b", "delimiter": "-",
                                                    "clean_whitespace": "true"}),
    ("rgthree-comfy", "Seed (rgthree)", {"seed": 1234}),
    ("ComfyUI-Impact-Pack", "ImpactInt", {"value": 7}),
    ("ComfyUI-Impact-Pack", "ImpactStringSelector", {"strings": "one\ntwo\nthree", "multiline": False,
                                                     "select": 1}),
)


def pack_entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and
                  (p.is_dir() or p.suffix == ".py"))


def base_with_packs(packs: list[Path], base: Path) -> Any:
    from server.config import ServerConfig

    target = base / "custom_nodes"
    target.mkdir(parents=True)
    for pack in packs:
        if pack.is_dir():
            shutil.copytree(pack, target / pack.name, ignore=shutil.ignore_patterns(".git", "__pycache__"))
        else:
            shutil.copy2(pack, target / pack.name)
    return ServerConfig.create(base, load_custom_nodes=True)


def load_reports(config: Any) -> list[Any]:
    """The loader's report of every pack, loaded as compose() loads them."""
    import server
    from nodes.catalog import core_nodes
    from nodes.custom_nodes import PackEnvironment, load_custom_nodes
    from nodes.registry import Registry
    from server.compose import build_services
    from server.paths import ServerFolders

    folders = ServerFolders.from_config(config)
    services = build_services(config, folders)
    registry = Registry(list_files=folders.list_files)
    registry.add_all(core_nodes())
    environment = PackEnvironment(services=services, base_dir=config.base_dir, host_modules={"server": server})
    return load_custom_nodes(config.custom_nodes_dir, registry, environment=environment)


def bench_image(folder: Path) -> Any:
    """A 24x16 gradient PNG in input/ and the IMAGE ComfyUI's LoadImage makes of it."""
    import numpy as np
    import torch
    from PIL import Image

    y, x = np.mgrid[0:16, 0:24]
    pixels = np.stack([x * 10, y * 15, (x + y) * 6], axis=-1).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(folder / "bench.png")
    return torch.from_numpy(np.array(Image.open(folder / "bench.png").convert("RGB")).astype(np.float32) / 255.0)[None]


def expected_text(cls: type, inputs: dict[str, Any], prompt: dict[str, Any]) -> list[str]:
    """What ComfyUI computes: the class's FUNCTION called directly (hidden inputs as ComfyUI fills them); each
    output as PreviewAny shows it."""
    from nodes.logic import preview_text

    arguments = dict(inputs)
    for name, kind in (cls.INPUT_TYPES().get("hidden") or {}).items():
        arguments[name] = {"PROMPT": prompt, "UNIQUE_ID": "1", "DYNPROMPT": None, "EXTRA_PNGINFO": None}.get(
            kind[0] if isinstance(kind, (list, tuple)) else kind)
    returned = getattr(cls(), cls.FUNCTION)(**arguments)
    if isinstance(returned, dict):
        returned = returned.get("result", ())
    return [preview_text(value) for value in returned]


async def run_cases(config: Any, loaded: set[str]) -> list[dict[str, Any]]:
    from aiohttp.test_utils import TestClient, TestServer

    import nodes
    from server.app import create_app

    image = bench_image(config.input_dir)
    client = TestClient(TestServer(create_app(config)))
    await client.start_server()
    rows = []
    try:
        for pack, node, inputs in CASES:
            if pack not in loaded or inputs is None:
                continue
            row: dict[str, Any] = {"pack": pack, "node": node}
            cls = nodes.NODE_CLASS_MAPPINGS.get(node)
            if cls is None:
                rows.append({**row, "result": "not registered"})
                continue
            prompt: dict[str, Any] = {"1": {"class_type": node, "inputs": {}}}
            direct: dict[str, Any] = {}
            for index, (key, value) in enumerate(inputs.items()):
                if value == IMAGE:
                    prompt["2"] = {"class_type": "LoadImage", "inputs": {"image": "bench.png"}}
                    prompt["1"]["inputs"][key], direct[key] = ["2", 0], image.clone()
                elif isinstance(value, tuple) and value[0] == "link":
                    prompt[str(30 + index)] = {"class_type": value[1], "inputs": value[2]}
                    prompt["1"]["inputs"][key], direct[key] = [str(30 + index), 0], value[3]
                else:
                    prompt["1"]["inputs"][key] = direct[key] = value
            try:
                expected = expected_text(cls, direct, prompt)
            except Exception as error:  # noqa: BLE001 - the pack's own code
                rows.append({**row, "result": f"direct call failed: {type(error).__name__}: {error}"})
                continue
            for index in range(len(expected)):
                prompt[str(10 + index)] = {"class_type": "PreviewAny", "inputs": {"source": ["1", index]}}
            response = await client.post("/prompt", json={"prompt": prompt})
            body = await response.json()
            if response.status != 200:
                rows.append({**row, "result": f"rejected: {json.dumps(body)[:300]}"})
                continue
            prompt_id = body["prompt_id"]
            for _ in range(600):
                history = await (await client.get(f"/history/{prompt_id}")).json()
                if prompt_id in history:
                    break
                await asyncio.sleep(0.05)
            entry = history.get(prompt_id, {})
            status = entry.get("status", {}).get("status_str")
            got = [entry.get("outputs", {}).get(str(10 + i), {}).get("text", [None])[0] for i in range(len(expected))]
            same = status == "success" and got == expected
            rows.append({**row, "result": "same as ComfyUI" if same else f"{status}: got {got}, expected {expected}",
                         "values": got})
    finally:
        await client.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("packs", type=Path, help="a folder of custom node packs")
    parser.add_argument("--run", action="store_true", help="also run model-free nodes through /prompt")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    packs = pack_entries(args.packs)
    with tempfile.TemporaryDirectory() as folder:
        config = base_with_packs(packs, Path(folder) / "base")
        started = time.perf_counter()
        reports = load_reports(config)
        total = time.perf_counter() - started
        print("| pack | loads | nodes | skipped | import s | why not / first skip |")
        print("| --- | --- | ---: | ---: | ---: | --- |")
        for r in reports:
            why = r.error or (next(iter(f"{k}: {v}" for k, v in r.skipped_nodes.items()), "") if r.skipped_nodes
                              else "")
            print(f"| {r.name} | {'yes' if r.loaded else 'no'} | {len(r.nodes)} | {len(r.skipped_nodes)} | "
                  f"{r.import_seconds:.2f} | {why[:160].replace('|', '/')} |")
        for r in reports:
            if r.comfy_placeholders:
                print(f"- {r.name} imports ComfyUI internals Chisel lacks (nodes using them fail when run): "
                      f"{', '.join(r.comfy_placeholders[:12])}{' ...' if len(r.comfy_placeholders) > 12 else ''}")
        print(f"\n{sum(r.loaded for r in reports)} of {len(reports)} packs load, "
              f"{sum(len(r.nodes) for r in reports)} nodes registered ({total:.1f} s)")
        rows: list[dict[str, Any]] = []
        if args.run:
            rows = asyncio.run(run_cases(config, {r.name for r in reports if r.loaded}))
            print("\n| pack | node | through /prompt |")
            print("| --- | --- | --- |")
            for row in rows:
                print(f"| {row['pack']} | {row['node']} | {row['result'][:200].replace('|', '/')} |")
        if args.json:
            args.json.write_text(json.dumps({
                "packs": [{"name": r.name, "loaded": r.loaded, "nodes": list(r.nodes), "error": r.error,
                           "skipped": dict(r.skipped_nodes), "missing_modules": list(r.missing_modules),
                           "comfy_placeholders": list(r.comfy_placeholders),
                           "import_seconds": r.import_seconds} for r in reports],
                "runs": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
