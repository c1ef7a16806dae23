"""Every ready workflow in workflows/ runs headless with the built-in model and gives images of the expected size;
each editor file converts to its API prompt; a saved PNG carries a workflow that loads back to the same graph; the
learn-* workflows' inspect nodes leave their frames in the temp folder."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from PIL import Image

from server.cli import main as chisel
from server.config import REPO_ROOT, ServerConfig
from server.compose import build_registry
from server.paths import ServerFolders
from server.workflow import convert_workflow, read_png_metadata

WORKFLOWS = REPO_ROOT / "workflows"
NAMES = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
# (width, height, images) each workflow's SaveImage nodes write, as the workflow sets it up.
EXPECTED = {"txt2img": [(64, 64, 4)], "img2img": [(64, 64, 1)], "inpaint": [(64, 64, 1)],
            "hires-fix": [(128, 128, 1)], "area-composition": [(128, 64, 1)], "lora": [(64, 64, 1)],
            "learn-timeline": [(64, 64, 1)], "learn-noising": [(64, 64, 1)],
            "learn-schedules": [(800, 500, 2), (64, 64, 2)], "learn-training": [(64, 64, 4)]}
# The inspect nodes' frames (temp images) each learn-* workflow leaves: timeline 8 steps x 7 kinds; noising 11
# frames + DenoiseOnce's 3; two schedule charts; TrainingStep's 4.
TEMP_FRAMES = {"learn-timeline": 56, "learn-noising": 14, "learn-schedules": 2, "learn-training": 4}


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    config = ServerConfig(base_dir=tmp_path_factory.mktemp("registry"), load_custom_nodes=False)
    folders = ServerFolders.from_config(config)
    folders.create_directories()
    folders.install_examples(config.workflows_dir / "assets")
    return build_registry(config, folders)[0]


def test_the_ready_workflows_are_all_there():
    assert set(NAMES) == set(EXPECTED)
    assert {p.stem for p in (WORKFLOWS / "api").glob("*.json")} == set(EXPECTED)


@pytest.mark.parametrize("name", NAMES)
def test_each_editor_workflow_converts_to_its_api_prompt(name, registry):
    ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
    api = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    assert ui["version"] == 0.4
    assert convert_workflow(ui, registry) == api


@pytest.mark.parametrize("name", NAMES)
def test_each_workflow_runs_headless_and_writes_images_of_the_expected_size(name, tmp_path, capsys):
    code = chisel(["run", str(WORKFLOWS / f"{name}.json"), "--base-dir", str(tmp_path)])
    out = capsys.readouterr()
    assert code == 0, out.err
    images = sorted((tmp_path / "output").glob("*.png"))
    sizes = Counter(Image.open(path).size for path in images)
    assert sizes == {(width, height): count for width, height, count in EXPECTED[name]}, out.out
    for path in images:
        assert str(path) in out.out or path.name in out.out
    assert len(list((tmp_path / "temp").glob("*.png"))) == TEMP_FRAMES.get(name, 0)


def test_a_saved_png_carries_the_workflow_and_it_loads_back_to_the_same_graph(tmp_path, registry, capsys):
    source = WORKFLOWS / "img2img.json"
    assert chisel(["run", str(source), "--base-dir", str(tmp_path)]) == 0
    capsys.readouterr()
    [png] = (tmp_path / "output").glob("*.png")
    metadata = read_png_metadata(png.read_bytes())
    original = json.loads(source.read_text())
    assert metadata["workflow"]["nodes"] == original["nodes"]
    assert metadata["workflow"]["links"] == original["links"]
    assert convert_workflow(metadata["workflow"], registry) == metadata["prompt"] == \
        json.loads((WORKFLOWS / "api" / "img2img.json").read_text())
    # The PNG itself is a workflow file: running it again gives the same image (same seed, same graph).
    again = tmp_path / "again"
    assert chisel(["run", str(png), "--base-dir", str(again)]) == 0
    [second] = (again / "output").glob("*.png")
    assert Image.open(second).tobytes() == Image.open(png).tobytes()


def test_set_overrides_a_prompt_and_changes_the_image(tmp_path, capsys):
    base, changed = tmp_path / "a", tmp_path / "b"
    source = str(WORKFLOWS / "api" / "txt2img.json")
    assert chisel(["run", source, "--base-dir", str(base), "--set", "5.batch_size=1"]) == 0
    assert chisel(["run", source, "--base-dir", str(changed), "--set", "5.batch_size=1",
                   "--set", '6.text=a small green circle in the top left on a yellow background']) == 0
    capsys.readouterr()
    [first], [second] = (base / "output").glob("*.png"), (changed / "output").glob("*.png")
    assert Image.open(first).tobytes() != Image.open(second).tobytes()
