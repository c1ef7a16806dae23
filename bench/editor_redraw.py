"""Editor redraw time and time to an interactive canvas, in headless Chromium.

    python -m bench.editor_redraw [--frames N] [--sizes 500,2000] [--chromium /usr/bin/chromium]

Serves web/ with a static file server (the editor's `?fixtures` mode: fixture /object_info, no API server), builds
graphs of N nodes by pasting copies of the classic txt2img graph (7 nodes, 9 links each) in a grid, and times full
redraws of the canvas (1280x720, software raster as --disable-gpu gives) at three views:

- fit:    the whole graph on screen (every node drawn, far-zoom level of detail) -- the figure ComfyUI's own
          frontend was measured at: 26 ms median at 500 nodes, 64 ms at 2,000 (our target: < 13 / < 32 ms);
- 0.39x:  the farthest zoom that still draws titles, slots and widget bars (nodes off screen culled);
- 0.45x:  the farthest zoom at full detail (all text and widgets: 12 px text is 5.4 px on screen, the smallest
          legible; web/canvas/view.js), so the most nodes drawn in full;
- 1.0x:   full detail at normal size, culled to what is visible.

Each redraw is timed as the renderer's JavaScript plus a forced raster (a 1-pixel getImageData readback), so lazily
recorded canvas commands are paid for inside the measurement. The load figure is navigation start to the editor's
'chisel-ready' mark (node definitions loaded, default workflow opened and drawn).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import http.server
import statistics
import threading
from pathlib import Path

WEB = Path(__file__).resolve().parent.parent / "web"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
COMFY_BASELINE_MS = {500: 26.0, 2000: 64.0}  # ComfyUI frontend, median full redraw, all nodes on screen

BUILD_JS = """async (count) => {
  const cmd = await import('./app/commands.js');
  const { WorkflowDoc } = await import('./app/document.js');
  const c = window.chisel;
  const src = await (await fetch('test/fixtures/default_workflow.json')).json();
  const doc = WorkflowDoc.fromWorkflow({ nodes: [], links: [], version: 0.4 }, { defs: c.defs, name: `bench ${count}` });
  const template = WorkflowDoc.fromWorkflow(src, { defs: c.defs, name: 't' });
  template.selection = new Set(template.graph.nodes.keys());
  const store = new Map();
  const storage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v) };
  cmd.copySelection(template, storage);
  const copies = Math.ceil(count / 7);
  const cols = Math.ceil(Math.sqrt(copies * 0.8));
  for (let i = 0; i < copies; i++) {
    cmd.pasteClipboard(doc, storage, [(i % cols) * 1800, Math.floor(i / cols) * 700]);
  }
  const extra = [...doc.graph.nodes.keys()].slice(count);
  for (const id of extra) doc.graph.removeNode(id);
  doc.selection.clear();
  c.workspace.open(doc);
  c.controller.activate(doc);
  return { nodes: doc.graph.nodes.size, links: doc.graph.links.size };
}"""

TIME_JS = """async ([frames, view]) => {
  const c = window.chisel;
  const doc = c.workspace.active;
  c.editor.fit();
  if (view !== 'fit') {
    const [w, h] = c.editor.size;
    doc.vp.scale = view;
    // centre on the middle of the graph
    const r = doc.graph.boundsOf([...doc.graph.nodes.values()]);
    doc.vp.offset = [w / (2 * view) - (r[0] + r[2] / 2), h / (2 * view) - (r[1] + r[3] / 2)];
  }
  const ctx = c.editor.canvas.getContext('2d');
  const times = [];
  let stats = null;
  for (let i = 0; i < frames + 5; i++) {
    const t0 = performance.now();
    stats = c.editor.drawNow();
    ctx.getImageData(0, 0, 1, 1);
    const t = performance.now() - t0;
    if (i >= 5) times.push(t);
    await new Promise((r) => setTimeout(r, 0));
  }
  return { times, drawn: stats.nodes, links: stats.links, detail: stats.detail, scale: doc.vp.scale };
}"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def static_server(root: Path):
    handler = functools.partial(_Quiet, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


def p90(values):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]


async def measure(base: str, sizes: list[int], frames: int, chromium: str, loads: int):
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        load_ms = []
        for _ in range(loads):
            context = await browser.new_context(viewport={"width": 1280 + 56, "height": 720 + 42})
            page = await context.new_page()
            await page.goto(f"{base}/index.html?fixtures")
            await page.wait_for_selector("body.ready", timeout=30000)
            load_ms.append(await page.evaluate("performance.getEntriesByName('chisel-ready')[0].startTime"))
            await context.close()
        rows = []
        context = await browser.new_context(viewport={"width": 1280 + 56, "height": 720 + 42})
        page = await context.new_page()
        await page.goto(f"{base}/index.html?fixtures")
        await page.wait_for_selector("body.ready", timeout=30000)
        for n in sizes:
            built = await page.evaluate(BUILD_JS, n)
            for view in ("fit", 0.39, 0.45, 1.0):
                r = await page.evaluate(TIME_JS, [frames, view])
                rows.append((n, built["links"], view, r))
        await browser.close()
    return load_ms, rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--sizes", default="500,2000")
    ap.add_argument("--loads", type=int, default=5, help="page loads timed for the load figure")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    with static_server(WEB) as base:
        load_ms, rows = asyncio.run(measure(base, sizes, args.frames, args.chromium, args.loads))
    print(f"Editor redraw, headless Chromium --disable-gpu, canvas 1280x720, {args.frames} frames per row")
    print(f"{'nodes':>6} {'links':>6} {'view':>6} {'scale':>6} {'drawn':>6} {'detail':>7} {'median ms':>10} "
          f"{'p90 ms':>8} {'ComfyUI ms':>11} {'ratio':>6}")
    for n, links, view, r in rows:
        med = statistics.median(r["times"])
        base = COMFY_BASELINE_MS.get(n) if view == "fit" else None
        ratio = f"{base / med:5.1f}x" if base else ""
        print(f"{n:>6} {links:>6} {str(view):>6} {r['scale']:>6.3f} {r['drawn']:>6} {r['detail']:>7} {med:>10.2f} "
              f"{p90(r['times']):>8.2f} {base or '':>11} {ratio:>6}")
    print(f"page load to interactive canvas (fixtures, static server): median {statistics.median(load_ms):.0f} ms "
          f"over {len(load_ms)} loads (min {min(load_ms):.0f}, max {max(load_ms):.0f})")
    print("ComfyUI column: its own frontend, 500 / 2,000 nodes all on screen, same kind of machine "
          "(reference/anchors-performance-security-demand.md); ratio = ComfyUI / ours.")


if __name__ == "__main__":
    main()
