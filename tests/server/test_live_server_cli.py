"""The `chisel` command: `run` executes API and UI workflow files in-process, `--set` casts to the declared input
type, errors are structured with a non-zero exit; `serve` flags become a ServerConfig."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from server.cli import _parser, config_from_args, main
from tests.server.conftest import MODEL_FREE, REPO

UI_WORKFLOW = {
    "last_node_id": 3, "last_link_id": 2, "version": 0.4,
    "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]],
    "nodes": [
        {"id": 1, "type": "EmptyImage", "mode": 0, "title": "Canvas", "inputs": [],
         "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}], "widgets_values": [40, 20, 1, 16777215]},
        {"id": 2, "type": "ImageInvert", "mode": 0, "title": "Flip colours",
         "inputs": [{"name": "image", "type": "IMAGE", "link": 1}],
         "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2]}], "widgets_values": []},
        {"id": 3, "type": "SaveImage", "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 2}],
         "outputs": [], "widgets_values": ["ui_run"]},
    ],
}


@pytest.fixture
def workspace(tmp_path):
    (tmp_path / "api.json").write_text(json.dumps(MODEL_FREE))
    (tmp_path / "ui.json").write_text(json.dumps(UI_WORKFLOW))
    return tmp_path


def run(workspace, *args):
    return main(["run", *args, "--base-dir", str(workspace / "base"), "--no-custom-nodes"])


def test_run_an_api_prompt_and_print_where_the_image_went(workspace, capsys):
    assert run(workspace, str(workspace / "api.json")) == 0
    out = capsys.readouterr().out
    path = workspace / "base" / "output" / "probe_00001_.png"
    assert f"node 3 images: {path}" in out
    image = Image.open(path)
    assert image.size == (64, 48) and image.getpixel((0, 0)) == (0, 0, 0)
    assert "prompt" in image.info


def test_run_a_ui_workflow_embeds_it_in_the_png(workspace, capsys):
    assert run(workspace, str(workspace / "ui.json")) == 0
    image = Image.open(workspace / "base" / "output" / "ui_run_00001_.png")
    assert image.size == (40, 20)
    assert json.loads(image.info["workflow"])["nodes"][0]["type"] == "EmptyImage"


def test_set_casts_values_to_the_declared_types(workspace, capsys):
    code = run(workspace, str(workspace / "api.json"), "--set", "1.width=32", "--set", "1.height=16.0",
               "--set", "3.filename_prefix=a green circle", "--output-dir", str(workspace / "elsewhere"))
    assert code == 0
    image = Image.open(workspace / "elsewhere" / "a green circle_00001_.png")
    assert image.size == (32, 16)


def test_set_finds_a_node_by_its_title(workspace, capsys):
    assert run(workspace, str(workspace / "ui.json"), "--set", "Canvas.color=0") == 0
    image = Image.open(workspace / "base" / "output" / "ui_run_00001_.png")
    assert image.getpixel((0, 0)) == (255, 255, 255)  # black inverted


@pytest.mark.parametrize("override, message", [
    ("1.width=wide", "expected a whole number"),
    ("1.width=-4", "smaller than min"),
    ("1.nope=3", "has no input 'nope'"),
    ("9.width=3", "no node '9'"),
    ("2.image=3", "link, not a value"),
    ("width=3", "NODE.INPUT=VALUE"),
])
def test_bad_set_is_refused_with_a_clear_message(workspace, capsys, override, message):
    assert run(workspace, str(workspace / "api.json"), "--set", override) == 2
    assert message in capsys.readouterr().err


def test_a_prompt_that_fails_validation_prints_the_structured_error(workspace, capsys):
    bad = dict(MODEL_FREE)
    bad["2"] = {"class_type": "ImageInvert", "inputs": {"image": ["7", 0]}}
    (workspace / "bad.json").write_text(json.dumps(bad))
    assert run(workspace, str(workspace / "bad.json")) == 2
    err = capsys.readouterr().err
    payload = json.loads(err[err.index("{"):])
    assert payload["error"]["type"] == "prompt_outputs_failed_validation"
    assert payload["node_errors"]["2"]["errors"][0]["type"] == "bad_linked_input"


def test_missing_and_unreadable_files_exit_2(workspace, capsys):
    assert run(workspace, str(workspace / "nope.json")) == 2
    (workspace / "junk.json").write_text("{not json")
    assert run(workspace, str(workspace / "junk.json")) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_run_from_a_png_reuses_its_prompt(workspace, capsys):
    assert run(workspace, str(workspace / "api.json"), "--set", "3.filename_prefix=first") == 0
    png = workspace / "base" / "output" / "first_00001_.png"
    assert run(workspace, str(png), "--set", "3.filename_prefix=second") == 0
    assert (workspace / "base" / "output" / "second_00001_.png").is_file()


def test_a_broken_extra_model_paths_file_is_reported(workspace, capsys):
    (workspace / "bad.yaml").write_text("a: [unclosed")
    assert run(workspace, str(workspace / "api.json"), "--extra-model-paths", str(workspace / "bad.yaml")) == 2
    assert "bad.yaml" in capsys.readouterr().err


def test_serve_flags_become_a_config(tmp_path, monkeypatch):
    monkeypatch.setenv("CHISEL_AUTH_TOKEN", "from-the-environment")
    args = _parser().parse_args(["serve", "--listen", "--port", "9000", "--base-dir", str(tmp_path),
                                 "--extra-model-paths", "a.yaml", "--cpu", "--max-upload-size", "5",
                                 "--allow-origin", "https://x.example", "--preview-method", "none"])
    config = config_from_args(args)
    assert config.listen == ("0.0.0.0", "::") and config.port == 9000 and not config.loopback_only
    assert config.auth_token == "from-the-environment"
    assert config.device == "cpu" and config.max_upload_size == 5 * 1024 * 1024
    assert config.allowed_origins == ("https://x.example",) and config.preview_method == "none"
    assert config.output_dir == tmp_path.resolve() / "output"
    default = config_from_args(_parser().parse_args(["serve", "--auth-token", "given-on-the-cli"]))
    assert default.listen == ("127.0.0.1",) and default.loopback_only and default.auth_token == "given-on-the-cli"


def test_the_console_command_runs_as_a_module(workspace):
    result = subprocess.run([sys.executable, "-m", "server", "run", str(workspace / "api.json"), "--base-dir",
                             str(workspace / "mod")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "probe_00001_.png" in result.stdout
    assert "3/3" in result.stderr  # the progress bar reached the last node
