"""ComfyUI's official templates (the `comfyui-workflow-templates-json` package) that use only SD checkpoints or no
model at all are covered by our node set, convert, and run end to end unchanged but for their latent size, on tiny
random checkpoints of the layout each file name asks for (`bench.template_coverage --run` runs them at full size).
"""

from __future__ import annotations

import json

import pytest

from bench.template_coverage import Template, run_template, survey
from server.compose import build_registry
from server.config import ServerConfig
from server.paths import ServerFolders

# The SD1.x/SDXL and model-free templates of the pinned package version; each must be covered and run.
EXPECTED_RUNNABLE = {"image_sdxl_simple", "sdxl_simple_example", "sdxl_refiner_prompt_example", "sdxlturbo_example",
                     "basic_mask_operations_and_compositing", "utility_image_stitch"}
SMALL = 128  # the latent size the test runs at (the templates ask for 512..1024 pixels)


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> dict[str, Template]:
    config = ServerConfig(base_dir=tmp_path_factory.mktemp("registry"), load_custom_nodes=False)
    registry = build_registry(config, ServerFolders.from_config(config))[0]
    return {t.name: t for t in survey(registry.names())}


def test_the_sd_and_model_free_templates_are_covered(templates):
    runnable = {name for name, t in templates.items() if t.runnable_here}
    assert EXPECTED_RUNNABLE <= runnable
    for name in EXPECTED_RUNNABLE:
        assert templates[name].covered, (name, sorted(templates[name].missing))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED_RUNNABLE))
def test_each_template_runs_end_to_end(name, templates, tmp_path):
    template = templates[name]
    workflow = json.loads(template.path.read_text())
    graphs = [workflow, *(workflow.get("definitions") or {}).get("subgraphs", [])]
    for node in (n for g in graphs for n in g.get("nodes", [])):
        if node.get("type") in ("EmptyLatentImage", "EmptySD3LatentImage"):
            node["widgets_values"][:2] = [SMALL, SMALL]
    small = tmp_path / f"{name}.json"
    small.write_text(json.dumps(workflow))
    result = run_template(template, tmp_path / "base", small)
    assert result.ok, result.error
    assert result.images >= 1
