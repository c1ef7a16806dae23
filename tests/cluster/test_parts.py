"""The cluster's pure parts: the affinity policy, a prompt's files, the head's merged file listing, output landing,
and a worker's config on the wire."""

from __future__ import annotations

import pytest

from nodes.inputs import Files
from server.cluster.outputs import OutputLanding, collect_files
from server.cluster.policy import Candidate, WorkerView, choose
from server.cluster.refs import ClusterListing, model_folders, prompt_files
from server.cluster.spec import config_from_json, config_to_json
from server.compose import compose
from server.engine.events import Executed, Progress
from tests.cluster.conftest import BUILTIN, make_config, txt2img

A, B = frozenset({"checkpoints/a"}), frozenset({"checkpoints/b"})


def pick(worker, candidates, others=(), idle_for=0.0, wait=5.0, skips=4, expected_run=0.0):
    choice = choose(worker, candidates, list(others), idle_for=idle_for, affinity_wait=wait, max_skips=skips,
                    expected_run=expected_run)
    return choice.prompt_id if choice else None


# ---- policy -------------------------------------------------------------------------------------------------------
def test_an_idle_worker_takes_the_first_prompt_whose_model_it_holds():
    me = WorkerView("w1", True, held=A)
    assert pick(me, [Candidate("p1", B), Candidate("p2", A)]) == "p2"


def test_a_model_nobody_holds_goes_to_whoever_is_free():
    me = WorkerView("w1", True, held=A)
    assert pick(me, [Candidate("p1", B)], [WorkerView("w2", False, held=A)]) == "p1"
    assert pick(me, [Candidate("p0", frozenset())], [WorkerView("w2", True, held=frozenset())]) == "p0"


def test_a_prompt_is_left_to_an_idle_worker_that_holds_its_model():
    me = WorkerView("w1", True, held=frozenset())
    assert pick(me, [Candidate("p1", B)], [WorkerView("w2", True, held=B)]) is None


def test_a_busy_holder_is_waited_for_a_while_then_the_prompt_is_taken():
    me = WorkerView("w1", True, held=A)
    busy = [WorkerView("w2", False, held=B)]
    assert pick(me, [Candidate("p1", B)], busy, idle_for=1.0) is None
    assert pick(me, [Candidate("p1", B)], busy, idle_for=6.0) == "p1"


def test_a_long_backlog_of_one_model_spreads_over_free_workers_at_once():
    me = WorkerView("w1", True, held=A)
    busy = [WorkerView("w2", False, held=B)]
    backlog = [Candidate(f"p{i}", B) for i in range(10)]
    assert pick(me, backlog[:2], busy, expected_run=1.0) is None  # 2 s of waiting: cheaper than a load
    assert pick(me, backlog, busy, expected_run=1.0) == "p0"  # 10 s: load it here too


def test_affinity_never_starves_a_prompt():
    me = WorkerView("w1", True, held=A)
    assert pick(me, [Candidate("p1", B, skips=4), Candidate("p2", A)]) == "p1"


def test_a_worker_never_takes_a_prompt_naming_a_file_it_lacks():
    me = WorkerView("w1", True, held=frozenset(), files=A)
    assert pick(me, [Candidate("p1", B, skips=9), Candidate("p2", A)]) == "p2"
    assert pick(me, [Candidate("p1", B)]) is None


# ---- a prompt's files -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    return compose(make_config(tmp_path_factory.mktemp("refs"))).registry


def test_a_prompts_model_files_and_input_images_come_from_its_files_combos(registry):
    files = prompt_files(txt2img(1), registry)
    assert files.models == {f"checkpoints/{BUILTIN}"} and files.inputs == ()
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "cat.png [output]"}},
              "2": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["9", 0], "lora_name": "x.safetensors",
                                                                    "strength_model": 1.0}},
              "3": {"class_type": "Unknown", "inputs": {"ckpt_name": "ignored"}}}
    files = prompt_files(prompt, registry)
    assert files.models == {"loras/x.safetensors"} and files.inputs == ("cat.png [output]",)
    assert {"checkpoints", "loras", "vae"} <= set(model_folders(registry))


def test_the_heads_listing_adds_the_workers_model_files():
    listing = ClusterListing(lambda files: ["local.safetensors"] if files.folder == "checkpoints" else ["in.png"])
    listing.update("w1", {"checkpoints": frozenset({"remote.safetensors"})})
    assert listing(Files("checkpoints")) == ["local.safetensors", "remote.safetensors"]
    assert listing(Files("input")) == ["in.png"]
    listing.forget("w1")
    assert listing(Files("checkpoints")) == ["local.safetensors"]


# ---- output files -------------------------------------------------------------------------------------------------
class Folders:
    def __init__(self, root):
        self.root = root

    def directory(self, kind):
        return self.root / kind


def executed(*names, subfolder="", kind="output"):
    return Executed("9", {"images": [{"filename": n, "subfolder": subfolder, "type": kind} for n in names],
                          "text": ["kept"]}, "p")


def test_landed_files_keep_their_name_or_take_the_next_counter(tmp_path):
    landing = OutputLanding(Folders(tmp_path / "head"), durable=False)
    first = landing.land_event("w1", executed("x_00001_.png"), {("output", "", "x_00001_.png"): b"one"})
    second = landing.land_event("w2", executed("x_00001_.png"), {("output", "", "x_00001_.png"): b"two"})
    assert first.output["images"][0]["filename"] == "x_00001_.png"
    assert second.output["images"][0]["filename"] == "x_00002_.png"
    assert second.output["text"] == ["kept"]
    assert (tmp_path / "head" / "output" / "x_00002_.png").read_bytes() == b"two"
    # a cached node re-sends its items without bytes; the history's outputs: the same names
    again = landing.land_event("w2", executed("x_00001_.png"), None)
    assert again.output["images"][0]["filename"] == "x_00002_.png"
    assert landing.rewrite("w2", {"9": {"images": [{"filename": "x_00001_.png", "subfolder": "", "type": "output"}]}}
                           )["9"]["images"][0]["filename"] == "x_00002_.png"
    other = landing.land_event("w1", executed("plain.png", subfolder="sub/dir", kind="temp"),
                               {("temp", "sub/dir", "plain.png"): b"a"})
    assert other.output["images"][0] == {"filename": "plain.png", "subfolder": "sub/dir", "type": "temp"}
    assert (tmp_path / "head" / "temp" / "sub" / "dir" / "plain.png").read_bytes() == b"a"
    progress = Progress(1, 2, "p", "3")
    assert landing.land_event("w1", progress, None) is progress


def test_files_outside_the_heads_folders_are_refused(tmp_path):
    landing = OutputLanding(Folders(tmp_path / "head"), durable=False)
    event = landing.land_event("w1", executed("evil.png", subfolder="../../x"),
                               {("output", "../../x", "evil.png"): b"bad"})
    assert event.output["images"][0]["subfolder"] == "../../x"  # reported as is, nothing written
    assert not (tmp_path / "x").exists()


def test_a_worker_collects_and_removes_its_files_unless_the_output_is_shared(tmp_path):
    folders = Folders(tmp_path)
    (tmp_path / "output" / "s").mkdir(parents=True)
    (tmp_path / "output" / "s" / "a.png").write_bytes(b"A")
    (tmp_path / "temp").mkdir()
    (tmp_path / "temp" / "b.png").write_bytes(b"B")
    output = {"images": [{"filename": "a.png", "subfolder": "s", "type": "output"},
                         {"filename": "b.png", "subfolder": "", "type": "temp"},
                         {"filename": "gone.png", "subfolder": "", "type": "output"}]}
    assert collect_files(folders, output, shared_output=True) == {("temp", "", "b.png"): b"B"}
    assert (tmp_path / "output" / "s" / "a.png").exists()
    assert collect_files(folders, output, shared_output=False) == {("output", "s", "a.png"): b"A"}
    assert not (tmp_path / "output" / "s" / "a.png").exists()


# ---- a worker's config ----------------------------------------------------------------------------------------------
def test_a_workers_config_survives_json_without_the_auth_token(tmp_path):
    config = make_config(tmp_path, auth_token="secret-token-1", extra_model_paths=(tmp_path / "x.yaml",),
                         ray="10.0.0.5:6379", ray_workers=2, device="cpu")
    back = config_from_json(config_to_json(config))
    assert back.auth_token is None
    assert back.with_changes(auth_token="secret-token-1") == config


# ---- the commands -------------------------------------------------------------------------------------------------
def test_chisel_worker_starts_a_ray_node_announcing_its_workers_with_its_folders(tmp_path, monkeypatch):
    from server.cli import _parser, config_from_args
    from server.cluster.node import node_command, node_environment
    from server.cluster.spec import CONFIG_ENV

    args = _parser().parse_args(["worker", "--ray", "10.0.0.5:6379", "--base-dir", str(tmp_path), "--ray-workers",
                                 "3", "--ray-shared-output", "--output-dir", str(tmp_path / "shared")])
    config = config_from_args(args)
    assert (config.ray, config.ray_workers, config.ray_shared_output) == ("10.0.0.5:6379", 3, True)
    command = node_command(config, "ray", workers=3, gpus=2)
    assert command[:5] == ["ray", "start", "--address", "10.0.0.5:6379", "--block"]
    assert command[command.index("--resources") + 1] == '{"chisel_worker": 3}'
    assert command[command.index("--num-gpus") + 1] == "2"
    monkeypatch.setenv("HOME", str(tmp_path))
    env = node_environment(config, {"PATH": "/bin"})
    assert config_from_json(env[CONFIG_ENV]).output_dir == tmp_path / "shared"
    assert env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] == "0" and "RAY_AUTH_MODE" not in env  # no token here
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("x" * 32)
    assert node_environment(config, {"PATH": "/bin"})["RAY_AUTH_MODE"] == "token"


def test_a_mistyped_cluster_address_fails_fast_with_a_hint(tmp_path, capsys):
    from server.cli import main

    assert main(["worker", "--ray", "127.0.0.1:1", "--base-dir", str(tmp_path)]) == 1
    assert "nothing answers at 127.0.0.1:1" in capsys.readouterr().err
    assert main(["serve", "--ray", "127.0.0.1:1", "--port", "0", "--base-dir", str(tmp_path),
                 "--no-custom-nodes"]) == 1
    assert "could not join the Ray cluster: nothing answers at 127.0.0.1:1" in capsys.readouterr().err
