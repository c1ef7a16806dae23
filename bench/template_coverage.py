"""How much of ComfyUI's official workflow templates Chisel covers: `python -m bench.template_coverage [--run]`.

The templates come from the `comfyui-workflow-templates-json` package (PyPI, the test extra): every workflow the
ComfyUI app offers under "Templates". For each one the report reads every node type it uses (inside subgraph
definitions too) and checks it against our registry; a template is *covered* when every node it uses is registered.

With `--run`, the covered templates whose models we can stand in for (SD1.x/SDXL checkpoints, Flux.1 dev/schnell
and SD3.5 files, CLIP-L/T5-XXL text encoders, the Flux VAE) and the model-free ones also run end to end through
`chisel run`, unchanged, on tiny random files of the right key layout written under the file names the template
asks for (the weights are random, so the images are noise: this shows the graph, the
conversion and every node work, not image quality). Nothing is downloaded.

Prints two markdown tables: coverage by template category, and the runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Node types that are editor-only (never sent to the server).
FRONTEND_ONLY = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})
# The SD checkpoint layouts a template's file name asks for (ComfyUI's templates use the official names).
SD_CHECKPOINTS = {"sd_xl_base_1.0.safetensors": "sdxl", "sd_xl_refiner_1.0.safetensors": "sdxl_refiner",
                  "sd_xl_turbo_1.0_fp16.safetensors": "sdxl", "v1-5-pruned-emaonly.safetensors": "sd1",
                  "v1-5-pruned-emaonly-fp16.safetensors": "sd1", "v2-1_768-ema-pruned.safetensors": "sd2"}
# Loader node -> (models folder, the widget positions that name files).
LOADERS = {"CheckpointLoaderSimple": ("checkpoints", (0,)), "UNETLoader": ("diffusion_models", (0,)),
           "CLIPLoader": ("text_encoders", (0,)), "DualCLIPLoader": ("text_encoders", (0, 1)),
           "TripleCLIPLoader": ("text_encoders", (0, 1, 2)), "VAELoader": ("vae", (0,))}


def templates_dir() -> Path:
    import comfyui_workflow_templates_json as package

    return Path(package.__file__).resolve().parent / "templates"


def template_files(directory: Path | None = None) -> list[Path]:
    """Every workflow template (the index files are not workflows)."""
    directory = directory or templates_dir()
    return sorted(p for p in directory.glob("*.json") if not p.name.startswith("index"))


def _graphs(workflow: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    yield workflow
    yield from (workflow.get("definitions") or {}).get("subgraphs", []) or []


def node_types(workflow: Mapping[str, Any]) -> set[str]:
    """The node classes a workflow runs: every node's type, inside subgraphs too, less subgraph instances and the
    editor-only nodes."""
    subgraph_ids = {str(g.get("id")) for g in (workflow.get("definitions") or {}).get("subgraphs", []) or []}
    return {str(n.get("type")) for g in _graphs(workflow) for n in g.get("nodes", []) or []} - subgraph_ids \
        - FRONTEND_ONLY


def model_files(workflow: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(models folder, file name) of every file the workflow's loader nodes name."""
    found = []
    for node in (n for g in _graphs(workflow) for n in g.get("nodes", []) or []):
        folder, positions = LOADERS.get(str(node.get("type")), ("", ()))
        values = node.get("widgets_values") or []
        found += [(folder, str(values[i])) for i in positions if i < len(values) and isinstance(values[i], str)]
    return sorted(set(found))


def tiny_kind(folder: str, name: str) -> str | None:
    """Which tiny random file stands in for `name` in `folder` (None: a model we cannot run)."""
    lower = name.lower()
    if folder == "checkpoints":
        if name in SD_CHECKPOINTS:
            return SD_CHECKPOINTS[name]
        if lower.startswith("flux1-schnell"):
            return "flux_schnell_checkpoint"
        if lower.startswith("flux1-dev"):
            return "flux_dev_checkpoint"
        if lower.startswith("sd3.5") or lower.startswith("sd3_"):
            return "sd3_checkpoint"
    elif folder == "diffusion_models":
        if lower.startswith("flux1-schnell"):
            return "flux_schnell"
        if lower.startswith(("flux1-dev", "flux1-krea-dev")) and "fill" not in lower and "kontext" not in lower:
            return "flux_dev"
    elif folder == "text_encoders":
        if lower.startswith("clip_l"):
            return "clip_l"
        if lower.startswith("t5xxl"):
            return "t5xxl"
    elif folder == "vae" and lower == "ae.safetensors":
        return "flux_ae"
    return None


def categories(directory: Path | None = None) -> dict[str, str]:
    """Template name -> its category title in the app's index (e.g. "Image", "Video", "Getting Started")."""
    index = json.loads(((directory or templates_dir()) / "index.json").read_text())
    found: dict[str, str] = {}
    for section in index:
        for template in section.get("templates", []):
            found.setdefault(str(template.get("name")), str(section.get("title") or section.get("category")))
    return found


@dataclass(frozen=True)
class Template:
    name: str
    path: Path
    types: frozenset[str]
    missing: frozenset[str]
    files: tuple[tuple[str, str], ...]
    category: str

    @property
    def covered(self) -> bool:
        return not self.missing

    @property
    def runnable_here(self) -> bool:
        """Runs on this machine without a download: covered, every model file one we can stand in for with a tiny
        random file of its layout, and no other loader (LoRA, ControlNet, ...) asking for a file."""
        if any(tiny_kind(folder, name) is None for folder, name in self.files):
            return False
        return self.covered and not {t for t in self.types if "Loader" in t and t not in LOADERS}


def survey(registered: Iterable[str], directory: Path | None = None) -> list[Template]:
    names = set(registered)
    where = categories(directory)
    found = []
    for path in template_files(directory):
        try:
            workflow = json.loads(path.read_text())
        except ValueError:
            continue
        if not isinstance(workflow, dict) or "nodes" not in workflow:
            continue
        types = node_types(workflow)
        found.append(Template(path.stem, path, frozenset(types), frozenset(t for t in types if t not in names),
                              tuple(model_files(workflow)), where.get(path.stem, "(not in the index)")))
    return found


def write_models(template: Template, models: Path) -> None:
    """The tiny random files the template's loaders ask for, each in the layout its name stands for."""
    import dataclasses
    import shutil

    from tests.diffusion.tiny_checkpoint import write_tiny_family_checkpoint, write_tiny_sd1_checkpoint
    from tests.diffusion.tiny_flow_models import (write_tiny_flux_checkpoint, write_tiny_flux_parts,
                                                  write_tiny_sd3_parts)

    scratch = models / ".tiny"
    parts = write_tiny_flux_parts(scratch) if any(tiny_kind(*f) not in SD_CHECKPOINTS.values()
                                                  for f in template.files) else None
    for folder, name in template.files:
        target = models / folder / name
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        kind = tiny_kind(folder, name)
        if kind == "sd1":
            write_tiny_sd1_checkpoint(target)
        elif kind in SD_CHECKPOINTS.values():
            write_tiny_family_checkpoint(target, str(kind))
        elif kind == "flux_dev_checkpoint":
            write_tiny_flux_checkpoint(target, parts)
        elif kind == "flux_schnell_checkpoint":
            write_tiny_flux_checkpoint(target, dataclasses.replace(parts, flux_path=parts.schnell_path))
        elif kind == "sd3_checkpoint":
            (scratch / "sd3").mkdir(parents=True, exist_ok=True)
            shutil.copy(write_tiny_sd3_parts(scratch / "sd3", parts, pos_embed_max_size=96).checkpoint_path, target)
        else:
            source = {"flux_dev": parts.flux_path, "flux_schnell": parts.schnell_path, "clip_l": parts.clip_l_path,
                      "t5xxl": parts.t5_path, "flux_ae": parts.vae_path}[str(kind)]
            shutil.copy(source, target)
    shutil.rmtree(scratch, ignore_errors=True)


def write_inputs(workflow: Mapping[str, Any], inputs: Path) -> None:
    """A stand-in picture (a colour gradient, alpha 1 on the left half) for every input image the workflow's
    LoadImage/LoadImageMask nodes name, so that the template runs unchanged."""
    import numpy as np
    from PIL import Image

    inputs.mkdir(parents=True, exist_ok=True)
    for node in (n for g in _graphs(workflow) for n in g.get("nodes", []) or []):
        if node.get("type") not in ("LoadImage", "LoadImageMask"):
            continue
        name = str((node.get("widgets_values") or [""])[0])
        if not name or (inputs / name).exists():
            continue
        y, x = np.mgrid[0:256, 0:256]
        rgba = np.stack([x, y, 255 - x, np.where(x < 128, 255, 0)], axis=-1).astype(np.uint8)
        (inputs / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgba, "RGBA").save(inputs / name)


@dataclass(frozen=True)
class RunResult:
    name: str
    ok: bool
    seconds: float
    images: int
    error: str = ""


def run_template(template: Template, base_dir: Path, workflow: Path | None = None) -> RunResult:
    """`chisel run <template>` (or `workflow`, an edited copy of it or of its API prompt) in a fresh base folder,
    with the input images the template names; counts the images it
    writes (output and temp)."""
    import contextlib
    import io

    from server.cli import main as chisel

    write_models(template, base_dir / "models")
    write_inputs(json.loads(template.path.read_text()), base_dir / "input")
    err = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = chisel(["run", str(workflow or template.path), "--base-dir", str(base_dir)])
    seconds = time.perf_counter() - start
    images = sum(1 for folder in ("output", "temp") for _ in (base_dir / folder).rglob("*.png"))
    problem = err.getvalue().strip().splitlines()[-1:] if code else []
    return RunResult(template.name, code == 0, seconds, images, problem[0] if problem else "")


def _registered() -> list[str]:
    from server.compose import build_registry
    from server.config import ServerConfig
    from server.paths import ServerFolders

    with tempfile.TemporaryDirectory() as tmp:
        config = ServerConfig(base_dir=Path(tmp), load_custom_nodes=False)
        folders = ServerFolders.from_config(config)
        return build_registry(config, folders)[0].names()


def coverage_table(templates: list[Template]) -> str:
    by_category: dict[str, list[Template]] = {}
    for t in templates:
        by_category.setdefault(t.category, []).append(t)
    lines = ["| category | templates | covered (every node registered) |", "|---|---:|---:|"]
    for category, items in sorted(by_category.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"| {category} | {len(items)} | {sum(t.covered for t in items)} |")
    lines.append(f"| **all** | **{len(templates)}** | **{sum(t.covered for t in templates)}** |")
    missing = Counter(m for t in templates for m in t.missing)
    lines.append("")
    lines.append("Most-wanted missing nodes (templates that use them): "
                 + ", ".join(f"`{name}` ({count})" for name, count in missing.most_common(15)))
    return "\n".join(lines)


def run_table(results: list[RunResult]) -> str:
    lines = ["| template | runs | images | seconds |", "|---|---|---:|---:|"]
    for r in results:
        lines.append(f"| {r.name} | {'yes' if r.ok else 'no: ' + r.error[:80]} | {r.images} | {r.seconds:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.template_coverage", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="store_true", help="also run the SD1.x/SDXL and model-free templates")
    parser.add_argument("--only", nargs="*", help="run only these templates (names without .json)")
    args = parser.parse_args(argv)
    templates = survey(_registered())
    print(coverage_table(templates))
    if not args.run:
        return 0
    chosen = [t for t in templates if t.runnable_here and (not args.only or t.name in args.only)]
    results = []
    for template in chosen:
        with tempfile.TemporaryDirectory() as tmp:
            results.append(run_template(template, Path(tmp)))
            print(f"  {template.name}: {'ok' if results[-1].ok else results[-1].error} "
                  f"({results[-1].seconds:.1f} s)", flush=True)
    print()
    print(run_table(results))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
