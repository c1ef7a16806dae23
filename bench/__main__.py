"""`python -m bench`: run the benchmarks one after another, each printing its table with ratios against a baseline
measured in the same run. The quick ones run by default; `--all` adds the heavy model benchmarks (an SD1.5-size UNet
step against diffusers', and loading a 2 GB checkpoint), which take minutes on a CPU.

Each benchmark is also a command of its own: `python -m bench.<name> --help`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

QUICK = (
    ("executor_overhead", "executor: 1,000-node graphs, cached re-runs, per-node dispatch (vs ComfyUI's A5 figures)"),
    ("api_latency", "HTTP + websocket: /object_info, POST /prompt, POST-to-done (vs ComfyUI's A5 figures)"),
    ("editor_redraw", "editor: redraw of 500 / 2,000 nodes in headless Chromium, page load to interactive"),
)
HEAVY = (
    ("unet_speed", "SD1.5-size UNet CFG step, ours vs diffusers' UNet2DConditionModel on the same weights"),
    ("checkpoint_load", "loading a 2 GB SD1.5-layout checkpoint, ours vs load_file + load_state_dict"),
    ("first_prompt", "server start and first images: the built-in model, a 4.3 GB SD1.5-layout file (vs A5)"),
    ("cluster_throughput", "20 built-in-model prompts on 1 and 2 Ray workers vs one process; the head's overhead"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--all", action="store_true", help="also run the heavy model benchmarks")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    chosen = QUICK + (HEAVY if args.all else ())
    if args.list:
        for name, what in QUICK + HEAVY:
            print(f"python -m bench.{name:<18} {what}")
        return 0
    failed = []
    for name, what in chosen:
        print(f"\n== bench.{name}: {what}", flush=True)
        if subprocess.run([sys.executable, "-m", f"bench.{name}"]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed or missed a target: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
