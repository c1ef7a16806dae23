"""The `chisel` command.

    chisel serve [--listen [ADDR]] [--port 8188] [--base-dir DIR] [--auth-token T] [--extra-model-paths FILE] ...
        start the server (editor + ComfyUI-compatible API) and print its URL
        with --ray local: a Ray runtime here runs prompts on --ray-workers N worker processes; with --ray ADDRESS:
        join that Ray cluster (workers here and on every machine added with `chisel worker`)
    chisel worker --ray ADDRESS [--ray-workers N] [--base-dir DIR] ...
        add this machine's devices to a Chisel cluster: its worker processes read models from its own folders
    chisel run WORKFLOW [--set NODE.INPUT=VALUE ...] [--output-dir DIR] [--base-dir DIR] ...
        run a workflow in-process (no HTTP): an API prompt or an editor (UI) workflow file, or a PNG saved with its
        workflow; validates, shows progress, prints where the outputs went; exits non-zero with the error.

Exit codes of `run`: 0 success, 1 the prompt failed while running, 2 bad arguments or the prompt failed validation,
130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.config import DEFAULT_MAX_UPLOAD, DEFAULT_PORT, ServerConfig, auth_token_from_env, is_loopback_address
from server.engine.events import TERMINAL, Event, ExecutionCached, Executing, Progress

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
BARE_LISTEN = "0.0.0.0,::"

if TYPE_CHECKING:
    from server.compose import Runtime
    from server.engine.executor import Executor, Outcome
    from server.engine.graph import Graph  # ComfyUI: a bare --listen listens on every IPv4 and IPv6 address


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        config = config_from_args(args)
    except (ValueError, OSError) as exc:
        print(f"chisel: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "serve":
        return serve(config)
    if args.command == "worker":
        from server.cluster.node import run_worker_node

        return run_worker_node(config)
    return run_workflow(config, Path(args.workflow), args.set or [], targets=args.target or None)


# ---- arguments ------------------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chisel", description="Chisel: a node-graph studio for diffusion models.")
    sub = parser.add_subparsers(dest="command")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--base-dir", default=".", help="root of models/, input/, output/, temp/, user/ (default: .)")
    common.add_argument("--output-dir", help="where saved images go (default: BASE/output)")
    common.add_argument("--input-dir", help="where uploaded/loaded images live (default: BASE/input)")
    common.add_argument("--temp-dir", help="where previews go (default: BASE/temp; emptied when the server starts)")
    common.add_argument("--user-dir", help="settings, saved workflows and the queue database (default: BASE/user)")
    common.add_argument("--extra-model-paths", action="append", default=[], metavar="FILE",
                        help="an extra_model_paths.yaml (ComfyUI's format) adding model folders; repeatable")
    common.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is present")
    common.add_argument("--weight-dtype", choices=("auto", "fp32", "fp16", "bf16"), default=None,
                        help="dtype of model weights (auto: the file's on a GPU; fp32 on the CPU, except bf16 for "
                             "bf16/fp8 Flux and SD3 files on CPUs with AVX512-BF16/AMX, ~1.7x faster)")
    vram = common.add_mutually_exclusive_group()
    vram.add_argument("--lowvram", action="store_true",
                      help="weights take at most half of the GPU's memory; the rest of a model streams block by block")
    vram.add_argument("--novram", action="store_true",
                      help="stream every diffusion model from CPU memory block by block (when --lowvram is not enough)")
    vram.add_argument("--vram-budget", type=float, metavar="GB",
                      help="the most model weights a run places on the device; a larger model streams (applies on "
                           "the CPU too)")
    common.add_argument("--reserve-vram", type=float, metavar="GB",
                        help="GPU memory kept free beside the model weights (default 1)")
    common.add_argument("--cache-ram", type=float, metavar="GB", help="memory budget of the node output cache")
    common.add_argument("--cache-vram", type=float, metavar="GB",
                        help="GPU memory budget of the node output cache (default 2)")
    common.add_argument("--preview-method", choices=("none", "auto", "latent2rgb"), default=None,
                        help="sampler previews (default: auto)")
    common.add_argument("--preview-size", type=int, metavar="PX", help="longest side of preview images (512)")
    common.add_argument("--disable-metadata", action="store_true",
                        help="do not store the prompt and workflow in saved PNGs")
    common.add_argument("--no-custom-nodes", "--disable-custom-nodes", "--disable-all-custom-nodes",
                        dest="no_custom_nodes", action="store_true", help="do not load BASE/custom_nodes")
    common.add_argument("--disable-custom-node", action="append", default=[], metavar="NAME",
                        help="do not import this pack of custom_nodes/ (its folder or file name); repeatable")
    common.add_argument("--allow-pickle-custom-nodes", action="store_true",
                        help="let custom nodes load pickled .ckpt/.pt files with arbitrary objects (they can run "
                             "code); by default only tensors are read from them")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    cluster = argparse.ArgumentParser(add_help=False)
    cluster.add_argument("--ray-workers", type=int, metavar="N",
                         help="worker processes on this machine (default: one per GPU, or one without a GPU)")
    cluster.add_argument("--ray-shared-output", action="store_true",
                         help="--output-dir is one folder every machine sees at the same path: workers save into "
                              "it instead of sending their files to the head (give it to serve and every worker)")
    cluster.add_argument("--ray-worker-threads", type=int, metavar="N",
                         help="torch threads per worker process (default: cores / workers)")
    cluster.add_argument("--ray-hang-timeout", type=float, metavar="S",
                         help="seconds a running worker may stay silent before its prompt goes to another (120)")
    serve_p = sub.add_parser("serve", parents=[common, cluster], help="start the server")
    serve_p.add_argument("--ray", metavar="local|ADDRESS",
                         help="run prompts on Ray workers: 'local' starts a Ray runtime here, an address (host:port) "
                              "joins a Ray cluster; needs pip install 'chisel-studio[cluster]'")
    serve_p.add_argument("--listen", nargs="?", const=BARE_LISTEN, default="127.0.0.1", metavar="ADDR",
                         help="address(es) to listen on, comma-separated (default 127.0.0.1; bare: all)")
    serve_p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default 8188; 0: any free port)")
    serve_p.add_argument("--auth-token", help="require this token on every request (or set CHISEL_AUTH_TOKEN)")
    serve_p.add_argument("--max-upload-size", type=float, metavar="MB",
                         help=f"largest accepted upload (default {DEFAULT_MAX_UPLOAD // (1024 * 1024)})")
    serve_p.add_argument("--front-end-root", metavar="DIR", help="serve this folder as the editor instead of web/")
    serve_p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                         help="a browser origin allowed to make changes, e.g. https://studio.example; repeatable")
    serve_p.add_argument("--allow-host", action="append", default=[], metavar="HOST",
                         help="a Host name accepted besides loopback (e.g. behind a reverse proxy); repeatable")

    worker_p = sub.add_parser("worker", parents=[common, cluster],
                              help="add this machine's devices to a Chisel cluster (a server started with --ray)")
    worker_p.add_argument("--ray", required=True, metavar="ADDRESS",
                          help="the Ray cluster's address, as `chisel serve --ray` or `ray start --head` printed it")

    run_p = sub.add_parser("run", parents=[common], help="run a workflow without a server")
    run_p.add_argument("workflow", help="an API prompt .json, an editor workflow .json, or a PNG with a workflow")
    run_p.add_argument("--target", action="append", metavar="NODE",
                       help="run only this node (and what it needs) instead of every output node; repeatable "
                            "(POST /prompt's partial_execution_targets)")
    run_p.add_argument("--set", action="append", metavar="NODE.INPUT=VALUE",
                       help="override an input: node id (or unique title), input name, value cast to the input's "
                            "type; repeatable, e.g. --set 6.text=\"a green circle\"")
    return parser


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    serving = args.command == "serve"
    clustered = args.command in ("serve", "worker")
    listen = tuple(a.strip() for a in args.listen.split(",") if a.strip()) if serving else ("127.0.0.1",)
    token = (args.auth_token or auth_token_from_env()) if serving else None
    max_upload = int(args.max_upload_size * 1024 * 1024) if serving and args.max_upload_size else None
    return ServerConfig.create(
        args.base_dir,
        listen=listen,
        port=args.port if serving else None,
        auth_token=token,
        output_dir=_path(args.output_dir), input_dir=_path(args.input_dir), temp_dir=_path(args.temp_dir),
        user_dir=_path(args.user_dir),
        extra_model_paths=tuple(Path(p) for p in args.extra_model_paths),
        cache_ram_bytes=int(args.cache_ram * 1024**3) if args.cache_ram else None,
        cache_vram_bytes=int(args.cache_vram * 1024**3) if args.cache_vram is not None else None,
        preview_method=args.preview_method,
        preview_size=args.preview_size,
        disable_metadata=args.disable_metadata or None,
        max_upload_size=max_upload,
        web_root=_path(args.front_end_root) if serving else None,
        allowed_origins=tuple(args.allow_origin) if serving else None,
        allowed_hosts=tuple(args.allow_host) if serving else None,
        device="cpu" if args.cpu else None,
        weight_dtype=args.weight_dtype,
        vram_mode="low" if args.lowvram else "none" if args.novram else None,
        vram_budget_bytes=int(args.vram_budget * 1024**3) if args.vram_budget is not None else None,
        reserve_vram_bytes=int(args.reserve_vram * 1024**3) if args.reserve_vram is not None else None,
        load_custom_nodes=False if args.no_custom_nodes else None,
        disabled_custom_nodes=tuple(args.disable_custom_node) or None,
        allow_pickle_custom_nodes=args.allow_pickle_custom_nodes or None,
        ray=getattr(args, "ray", None),
        ray_workers=args.ray_workers if clustered else None,
        ray_shared_output=(args.ray_shared_output or None) if clustered else None,
        ray_worker_threads=args.ray_worker_threads if clustered else None,
        ray_hang_timeout=args.ray_hang_timeout if clustered else None,
    )


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


# ---- serve ----------------------------------------------------------------------------------------------------------
def serve(config: ServerConfig) -> int:
    try:
        asyncio.run(_serve(config))
    except KeyboardInterrupt:
        pass
    except ValueError as exc:  # a refused folder setup, an unreadable extra_model_paths.yaml...
        print(f"chisel: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeError as exc:  # --ray: the cluster could not be started or joined
        print(f"chisel: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"chisel: cannot listen on {', '.join(config.listen)} port {config.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


async def _serve(config: ServerConfig) -> None:
    from aiohttp import web

    from server.app import create_app

    app = create_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    try:
        for address in config.listen:
            site = web.TCPSite(runner, host=address, port=config.port, reuse_address=True)
            await site.start()
            if config.port == 0:  # bind the other addresses to the port the first one got
                config = config.with_changes(port=_bound_port(runner) or 0)
        port = _bound_port(runner) or config.port
        _announce(config, port)
        _announce_cluster(app)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # Windows
                pass
        await stop.wait()
        print("chisel: shutting down (queued prompts are kept for the next start)", file=sys.stderr, flush=True)
    finally:
        await runner.cleanup()


def _bound_port(runner: Any) -> int | None:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None


def _announce(config: ServerConfig, port: int) -> None:
    shown = "127.0.0.1" if any(a in ("0.0.0.0", "::") for a in config.listen) else config.listen[0]
    host = f"[{shown}]" if ":" in shown else shown
    print(f"Chisel is running at http://{host}:{port}", flush=True)
    print(f"  base folder: {config.base_dir}", flush=True)
    if config.auth_token:
        print("  an auth token is required (sign in at /login, or send Authorization: Bearer <token>)", flush=True)
    if not all(is_loopback_address(a) for a in config.listen):
        print(f"  listening on {', '.join(config.listen)}: reachable from other machines", flush=True)
        if not config.auth_token:
            print("  WARNING: no --auth-token is set: anyone who can reach this port can run prompts", flush=True)


def _announce_cluster(app: Any) -> None:
    from server.routes.state import STATE

    runner = app[STATE].engine.worker
    cluster = getattr(runner, "cluster", None)
    if cluster is None:
        return
    workers = len(runner.workers())
    print(f"  Ray cluster at {cluster.address}: {workers} worker(s) on this machine; add a machine with", flush=True)
    print(f"    chisel worker --ray {cluster.address}", flush=True)


# ---- run ------------------------------------------------------------------------------------------------------------
class CliError(Exception):
    """A problem with the command line or the workflow file: printed, exit code 2."""


def run_workflow(config: ServerConfig, workflow: Path, overrides: Sequence[str], *,
                 out: Any = None, err: Any = None, progress: bool = True,
                 on_runtime: Callable[[Runtime], None] | None = None, targets: Sequence[str] | None = None) -> int:
    """`chisel run`: load, convert, override, validate and execute a workflow in-process; prints the outputs.
    `targets`: run only these node ids and what they need. `on_runtime` sees the composed runtime before anything
    runs (tests)."""
    from server.compose import compose
    from server.engine.graph import PromptError, validate_prompt
    from server.paths import ExtraPathsError

    out = out or sys.stdout
    err = err or sys.stderr
    try:
        runtime = compose(config)
        folders, registry = runtime.folders, runtime.registry
        if on_runtime is not None:
            on_runtime(runtime)
        for kind in ("input", "output", "temp"):
            folders.directory(kind).mkdir(parents=True, exist_ok=True)
        # Before validation: LoadImage's file list must already hold the ready workflows' example inputs.
        folders.install_examples(config.workflows_dir / "assets")
        prompt, extra_pnginfo = load_prompt(workflow, registry)
        prompt = apply_overrides(prompt, overrides, registry)
        graph = validate_prompt(prompt, registry, partial_execution_targets=list(targets) if targets else None)
    except (CliError, ExtraPathsError) as exc:
        print(f"chisel run: {exc}", file=err)
        return EXIT_USAGE
    except PromptError as exc:
        print("chisel run: the prompt failed validation", file=err)
        print(json.dumps(exc.payload, indent=2, default=str), file=err)
        return EXIT_USAGE
    outcome = _execute(runtime.executor, graph, extra_pnginfo, err=err, progress=progress)
    if outcome.status == "interrupted":
        print("chisel run: interrupted", file=err)
        return EXIT_INTERRUPTED
    if not outcome.ok:
        print("chisel run: the prompt failed", file=err)
        print(json.dumps(_short_error(outcome.error.fields() if outcome.error else {}), indent=2, default=str),
              file=err)
        return EXIT_FAILED
    _print_outputs(outcome.outputs, folders, out)
    print(f"done in {outcome.duration:.2f} s ({len(outcome.executed)} nodes ran)", file=out)
    return EXIT_OK


def load_prompt(path: Path, registry: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """An API prompt from a workflow file (API or UI JSON, or a PNG's metadata), and the UI workflow to embed in
    saved images when the file was a UI workflow."""
    from server.workflow import WorkflowError, convert_workflow, detect_format, read_png_metadata, to_api_prompt

    if not path.is_file():
        raise CliError(f"{path}: no such file")
    try:
        if path.suffix.lower() == ".png":
            metadata = read_png_metadata(path)
            if metadata.get("prompt") is not None:
                return to_api_prompt(metadata["prompt"], registry), _workflow_info(metadata.get("workflow"))
            if metadata.get("workflow") is not None:
                ui = metadata["workflow"]
                return convert_workflow(ui, registry), _workflow_info(ui)
            raise CliError(f"{path}: the PNG carries no prompt or workflow")
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise CliError(f"{path}: not valid JSON ({exc})") from None
        if isinstance(document, dict) and "prompt" in document and isinstance(document["prompt"], dict) \
                and "nodes" not in document:
            document = document["prompt"]  # a saved POST /prompt body
        if detect_format(document) == "ui":
            return convert_workflow(document, registry), _workflow_info(document)
        return to_api_prompt(document, registry), None
    except WorkflowError as exc:
        raise CliError(f"{path}: {exc}") from None


def _workflow_info(workflow: Any) -> dict[str, Any] | None:
    return {"workflow": workflow} if isinstance(workflow, dict) else None


def apply_overrides(prompt: dict[str, Any], overrides: Sequence[str], registry: Any) -> dict[str, Any]:
    """Apply `NODE.INPUT=VALUE` overrides; the value is cast to the input's declared type (INT, FLOAT, BOOLEAN,
    STRING, COMBO). NODE is a node id or a node title that is unique in the prompt."""
    from nodes.inputs import InputError

    result = {node_id: {**node, "inputs": dict(node.get("inputs") or {})} for node_id, node in prompt.items()}
    for override in overrides:
        target, sep, raw = override.partition("=")
        node_ref, dot, input_name = target.rpartition(".")
        if not sep or not dot or not node_ref or not input_name:
            raise CliError(f"--set {override!r}: expected NODE.INPUT=VALUE, e.g. 6.text=\"a cat\"")
        node_id = _find_node(result, node_ref)
        class_type = result[node_id].get("class_type")
        spec = registry.get(class_type) if isinstance(class_type, str) else None
        if spec is None:
            raise CliError(f"--set {override!r}: node {node_id} has the unknown type {class_type!r}")
        declared = spec.input(input_name)
        if declared is None:
            names = ", ".join(i.name for i in spec.inputs if i.is_widget) or "(none)"
            raise CliError(f"--set {override!r}: {class_type} has no input {input_name!r}; its value inputs: {names}")
        if not declared.is_widget:
            raise CliError(f"--set {override!r}: {class_type}.{input_name} is a {declared.type_name} link, not a value")
        if declared.type_name == "STRING":
            value: Any = raw
        elif declared.type_name == "COMBO":
            value = raw
            choices = registry.choices(declared)
            if choices is not None and raw not in choices:
                shown = ", ".join(list(choices)[:20]) or "(none available)"
                raise CliError(f"--set {override!r}: {raw!r} is not a choice of {class_type}.{input_name}: {shown}")
        else:
            try:
                value = declared.coerce(raw)
            except InputError as exc:
                raise CliError(f"--set {override!r}: {exc.message}: {exc.details}") from None
        result[node_id]["inputs"][input_name] = value
    return result


def _find_node(prompt: Mapping[str, Any], ref: str) -> str:
    if ref in prompt:
        return ref
    titled = [node_id for node_id, node in prompt.items()
              if isinstance(node.get("_meta"), Mapping) and node["_meta"].get("title") == ref]
    if len(titled) == 1:
        return titled[0]
    if len(titled) > 1:
        raise CliError(f"--set: the title {ref!r} names several nodes ({', '.join(titled)}); use a node id")
    raise CliError(f"--set: no node {ref!r} in the prompt (ids: {', '.join(list(prompt)[:30])})")


def _execute(executor: Executor, graph: Graph, extra_pnginfo: Any, *, err: Any, progress: bool) -> Outcome:
    interrupt = threading.Event()
    sink = ProgressSink(graph, err, enabled=progress)
    previous = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None

    def on_sigint(signum: int, frame: Any) -> None:
        interrupt.set()

    if previous is not None:
        signal.signal(signal.SIGINT, on_sigint)
    try:
        extra = {"extra_pnginfo": extra_pnginfo} if extra_pnginfo else {}
        return executor.execute(graph, prompt_id="cli", extra_data=extra, events=sink, interrupt=interrupt)
    finally:
        sink.close()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


class ProgressSink:
    """An engine EventSink drawing tqdm bars on stderr: one for the nodes, one for the steps of the running node."""

    def __init__(self, graph: Any, stream: Any, *, enabled: bool = True):
        from tqdm import tqdm

        self._tqdm = tqdm
        self.graph = graph
        self.enabled = enabled
        self.stream = stream
        self.nodes = tqdm(total=len(graph.order), desc="nodes", unit="node", file=stream, disable=not enabled,
                          leave=True, dynamic_ncols=True)
        self.steps: Any = None
        self.current: str | None = None

    def emit(self, event: Event, *, client_id: str | None) -> None:
        if isinstance(event, ExecutionCached):
            self.nodes.update(len(event.nodes))
        elif isinstance(event, Executing):
            self._finish_node()
            node_id = event.node
            if node_id is not None:
                self.current = node_id
                node = self.graph.nodes.get(node_id)
                label = (node.title or node.class_type) if node is not None else node_id
                self.nodes.set_description(f"#{node_id} {label}"[:40])
        elif isinstance(event, Progress):
            total = event.max
            if self.steps is None or self.steps.total != total:
                if self.steps is not None:
                    self.steps.close()
                self.steps = self._tqdm(total=total, desc="  steps", unit="step", file=self.stream,
                                        disable=not self.enabled, leave=False, dynamic_ncols=True)
            self.steps.n = event.value
            self.steps.refresh()
        elif isinstance(event, TERMINAL):
            self._finish_node()

    def _finish_node(self) -> None:
        if self.current is not None:
            self.nodes.update(1)
            self.current = None
        if self.steps is not None:
            self.steps.close()
            self.steps = None

    def close(self) -> None:
        self._finish_node()
        self.nodes.close()


def _print_outputs(outputs: Mapping[str, Any], folders: Any, out: Any) -> None:
    shown = 0
    for node_id, ui in outputs.items():
        for media, items in (ui or {}).items():
            if not isinstance(items, list):
                continue
            for item in items:
                if isinstance(item, Mapping) and "filename" in item:
                    root = folders.directory(item.get("type", "output"))
                    path = root / (item.get("subfolder") or "") / item["filename"]
                    print(f"node {node_id} {media}: {os.path.normpath(path)}", file=out)
                    shown += 1
    if not shown:
        print("no files were written (the workflow has no save nodes that ran)", file=out)


def _short_error(error: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("node_id", "node_type", "exception_type", "exception_message")
    short = {k: error.get(k) for k in keys if k in error}
    trace = error.get("traceback")
    if trace:
        short["traceback_tail"] = list(trace)[-3:]
    return short or dict(error)


if __name__ == "__main__":
    sys.exit(main())
