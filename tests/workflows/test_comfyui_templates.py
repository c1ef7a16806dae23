"""ComfyUI's official templates (the `comfyui-workflow-templates-json` package) whose models we can stand in for
(SD1.x/SDXL checkpoints, Flux.1 and SD3.5 files with their text encoders and VAE) or that use no model at all are
covered by our node set, convert (subgraphs included: flux1_krea_dev and flux_dev_full_text_to_image keep their
pipeline in one), and run end to end unchanged but for their latent size, on tiny random files of the layout each
file name asks for (`bench.template_coverage --run` runs them at full size).
"""

from __future__ import annotations

import json

import pytest

from bench.template_coverage import Template, run_template, survey
from server.compose import build_registry
from server.config import ServerConfig
from server.paths import ServerFolders
from server.workflow import convert_workflow

# The SD1.x/SDXL and model-free templates of the pinned package version; each must be covered and run.
EXPECTED_RUNNABLE = {"image_sdxl_simple", "sdxl_simple_example", "sdxl_refiner_prompt_example", "sdxlturbo_example",
                     "basic_mask_operations_and_compositing", "utility_image_stitch", "flux1_krea_dev",
                     "flux_dev_checkpoint_example", "flux_dev_full_text_to_image", "flux_schnell",
                     "flux_schnell_full_text_to_image", "sd3.5_simple_example"}
WITH_SUBGRAPHS = {"flux1_krea_dev", "flux_dev_full_text_to_image"}
SMALL = 128  # the image size the test runs at (the templates ask for 512..1024 pixels)


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> dict[str, Template]:
    config = ServerConfig(base_dir=tmp_path_factory.mktemp("registry"), load_custom_nodes=False)
    registry = build_registry(config, ServerFolders.from_config(config))[0]
    return {t.name: t for t in survey(registry.names())}


def test_the_templates_we_can_stand_in_for_are_covered(templates):
    runnable = {name for name, t in templates.items() if t.runnable_here}
    assert EXPECTED_RUNNABLE <= runnable
    for name in WITH_SUBGRAPHS:
        assert json.loads(templates[name].path.read_text())["definitions"]["subgraphs"]
    for name in EXPECTED_RUNNABLE:
        assert templates[name].covered, (name, sorted(templates[name].missing))


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    config = ServerConfig(base_dir=tmp_path_factory.mktemp("registry"), load_custom_nodes=False)
    return build_registry(config, ServerFolders.from_config(config))[0]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED_RUNNABLE))
def test_each_template_runs_end_to_end(name, templates, registry, tmp_path):
    """Converted as the server converts it; only the empty latents' sizes are made small (after conversion, so a
    size promoted to a subgraph instance is made small too)."""
    template = templates[name]
    prompt = convert_workflow(json.loads(template.path.read_text()), registry)
    for node in prompt.values():
        if node["class_type"] in ("EmptyLatentImage", "EmptySD3LatentImage"):
            for size in ("width", "height"):
                if not isinstance(node["inputs"][size], list):
                    node["inputs"][size] = SMALL
    small = tmp_path / f"{name}.json"
    small.write_text(json.dumps(prompt))
    result = run_template(template, tmp_path / "base", small)
    assert result.ok, result.error
    assert result.images >= 1
