"""Ground truth for subgraph flattening: ComfyUI's own frontend builds each workflow and turns it into a prompt.

    .venv/bin/python -m tests.compat.make_subgraph_fixtures [NAME ...]

Boots a Chisel server serving the pinned `comfyui-frontend-package` (1.58.1) in headless Chromium, as the compat tests
do. For each scenario below it loads workflows/txt2img.json (the tiny test checkpoint, 64x64, 2 steps) with
`app.loadGraphData`, edits it with the frontend's own graph API (`graph.convertToSubgraph`, `subgraph.addInput` /
`addOutput` and their `connect`, `LiteGraph.createNode`, widget values, node modes), and records what
`app.graphToPrompt()` gives: the workflow as the frontend saves it and the API prompt it queues. It then loads that
saved workflow into a fresh graph and checks the frontend makes the same prompt from it (the file reads back).

Each scenario is written to tests/fixtures/subgraphs/NAME.json as {"about", "frontend", "workflow", "prompt"};
tests/server/test_workflow_subgraphs.py checks our converter gives the same prompt, with the same ids.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "subgraphs"

# Shared helpers, defined in the page before every scenario (the frontend's API, nothing of ours).
HELPERS = """
window.sg = (() => {
  const g = () => app.graph;
  const inSlot = (node, name) => node.inputs.findIndex((s) => s.name === name);
  const outSlot = (node, name) => node.outputs.findIndex((s) => s.name === name || s.type === name);
  return {
    one: (type, index = 0, graph = g()) => graph.nodes.filter((n) => n.type === type)[index],
    wire: (a, out, b, inp) => a.connect(typeof out === 'number' ? out : outSlot(a, out), b,
                                        typeof inp === 'number' ? inp : inSlot(b, inp)),
    add: (type, pos, graph = g()) => { const n = LiteGraph.createNode(type); n.pos = pos; graph.add(n); return n; },
    set: (node, name, value) => { const w = node.widgets.find((w) => w.name === name); w.value = value;
                                  w.callback?.(value); },
    toSubgraph: (nodes, graph = g()) => graph.convertToSubgraph(new Set(nodes)),
    // a new subgraph input feeding `name` on the inner node (promotes a widget when `name` is one)
    promote: (subgraph, node, name, as = name) => {
      const slot = node.inputs[inSlot(node, name)];
      const input = subgraph.addInput(as, String(slot.type));
      input.connect(slot, node);
      return input;
    },
    expose: (subgraph, node, out, as) => {
      const slot = node.outputs[outSlot(node, out)];
      const output = subgraph.addOutput(as, String(slot.type));
      output.connect(slot, node);
      return output;
    },
    instance: (subgraph, pos) => { const n = LiteGraph.createNode(subgraph.id); n.pos = pos; g().add(n); return n; },
    promoted: (instance, name, value) => {
      const w = instance.widgets.find((w) => w.name === name);
      if (!w) throw new Error(`instance ${instance.id} shows no widget ${name}`);
      w.value = value; w.callback?.(value);
    },
    inOut: (instance, name) => inSlot(instance, name),
  };
})();
"""

# name -> (what it shows, the JS that builds it from the loaded txt2img graph (`sg` holds the helpers above)[, a JS
# function that edits the saved workflow before it is reloaded])
SCENARIOS: dict[str, tuple[str, ...]] = {
    "clip_and_sampler": (
        "txt2img with both CLIPTextEncode nodes and the KSampler turned into one subgraph (the frontend promotes the "
        "two prompts and the seed), the promoted seed changed on the instance",
        """
        const { subgraph, node } = sg.toSubgraph([sg.one('CLIPTextEncode'), sg.one('CLIPTextEncode', 1),
                                                  sg.one('KSampler')]);
        sg.promoted(node, 'seed', 1234);
        sg.promoted(node, 'text', 'a green triangle');
        """),
    "repeated_definition": (
        "one sampler subgraph used twice, each instance with its own promoted seed and steps; the first "
        "instance's output feeds two consumers",
        """
        const ks = sg.one('KSampler');
        const { subgraph, node: a } = sg.toSubgraph([ks]);
        const inner = sg.one('KSampler', 0, subgraph);
        sg.promote(subgraph, inner, 'steps');
        const b = sg.instance(subgraph, [a.pos[0], a.pos[1] + 420]);
        for (const [src, out, name] of [['CheckpointLoaderSimple', 'MODEL', 'model'],
                                        ['EmptyLatentImage', 'LATENT', 'latent_image']])
          sg.wire(sg.one(src), out, b, name);
        for (const name of ['positive', 'negative']) {
          const link = app.graph.getLink(a.inputs[sg.inOut(a, name)].link);
          app.graph.getNodeById(link.origin_id).connect(link.origin_slot, b, sg.inOut(b, name));
        }
        const decode = sg.add('VAEDecode', [1500, 700]);
        sg.wire(b, 'LATENT', decode, 'samples');
        sg.wire(sg.one('CheckpointLoaderSimple'), 'VAE', decode, 'vae');
        const save = sg.add('SaveImage', [1800, 700]);
        sg.wire(decode, 'IMAGE', save, 'images');
        const preview = sg.add('LatentUpscaleBy', [1500, 1000]);
        sg.wire(a, 'LATENT', preview, 'samples');
        const decode2 = sg.add('VAEDecode', [1800, 1000]);
        sg.wire(preview, 'LATENT', decode2, 'samples');
        sg.wire(sg.one('CheckpointLoaderSimple'), 'VAE', decode2, 'vae');
        const save2 = sg.add('PreviewImage', [2100, 1000]);
        sg.wire(decode2, 'IMAGE', save2, 'images');
        sg.promoted(a, 'seed', 11); sg.promoted(a, 'steps', 2);
        sg.promoted(b, 'seed', 22); sg.promoted(b, 'steps', 3);
        """),
    "nested": (
        "a subgraph inside a subgraph: the KSampler becomes subgraph A, then A's instance and the VAEDecode become "
        "subgraph B (ids outer:inner:node); A's promoted seed is set on the inner instance",
        """
        const { subgraph: a, node: ai } = sg.toSubgraph([sg.one('KSampler')]);
        sg.promoted(ai, 'seed', 99);
        const { subgraph: b, node: bi } = sg.toSubgraph([ai, sg.one('VAEDecode')]);
        """),
    "nested_promoted": (
        "three levels: the sampler's seed promoted from the innermost subgraph up to the outermost instance, set "
        "there",
        """
        const ks = sg.one('KSampler');
        const { subgraph: a, node: ai } = sg.toSubgraph([ks]);
        const { subgraph: b, node: bi } = sg.toSubgraph([ai, sg.one('VAEDecode')]);
        const inner = sg.one(a.id, 0, b);
        sg.promote(b, inner, 'seed', 'outer_seed');
        const { subgraph: c, node: ci } = sg.toSubgraph([bi, sg.one('EmptyLatentImage')]);
        const mid = sg.one(b.id, 0, c);
        sg.promote(c, mid, 'outer_seed', 'top_seed');
        sg.promoted(ci, 'top_seed', 4242);
        """),
    "unused_input": (
        "the sampler subgraph with two extra inputs nothing inside uses (a VAE wired to it outside, and an INT "
        "left open), declared after the ones in use",
        """
        const { subgraph, node } = sg.toSubgraph([sg.one('KSampler')]);
        const vae = subgraph.addInput('vae', 'VAE');
        const spare = subgraph.addInput('spare', 'INT');
        sg.wire(sg.one('CheckpointLoaderSimple'), 'VAE', node, sg.inOut(node, 'vae'));
        """),
    "pass_through": (
        "a subgraph whose MODEL input is linked straight to an output (pass-through) that feeds a second KSampler "
        "outside; the link is added to the saved file (the frontend has no UI call for it) and the file reloaded",
        """
        const { subgraph, node } = sg.toSubgraph([sg.one('KSampler')]);
        subgraph.addOutput('model_out', 'MODEL');
        const ks2 = sg.add('KSampler', [1500, 500]);
        sg.wire(node, 'model_out', ks2, 'model');
        sg.wire(node, 'LATENT', ks2, 'latent_image');
        for (const name of ['positive', 'negative']) {
          const link = app.graph.getLink(node.inputs[sg.inOut(node, name)].link);
          app.graph.getNodeById(link.origin_id).connect(link.origin_slot, ks2, sg.inOut(ks2, name));
        }
        sg.wire(ks2, 'LATENT', sg.one('VAEDecode'), 'samples');
        sg.set(ks2, 'steps', 2); sg.set(ks2, 'denoise', 0.5);
        """,
        """(saved) => {
          const def = saved.definitions.subgraphs[0];
          const input = def.inputs.findIndex((i) => i.name === 'model');
          const output = def.outputs.findIndex((o) => o.name === 'model_out');
          const id = Math.max(...def.links.map((l) => l.id)) + 1;
          def.links.push({ id, origin_id: -10, origin_slot: input, target_id: -20, target_slot: output,
                           type: 'MODEL' });
          def.inputs[input].linkIds.push(id);
          def.outputs[output].linkIds = [id];
          def.state.lastLinkId = Math.max(def.state.lastLinkId, id);
          return saved;
        }"""),
    "legacy_proxy_widgets": (
        "two instances of a sampler subgraph as older frontends saved them: the seed and steps shown on each "
        "instance through properties.proxyWidgets ([inner node id, widget]) with the values in widgets_values, no "
        "subgraph input; 1.58 migrates them on load, per instance",
        """
        const { subgraph, node: a } = sg.toSubgraph([sg.one('KSampler')]);
        const b = sg.instance(subgraph, [a.pos[0], a.pos[1] + 420]);
        for (const name of ['model', 'positive', 'negative', 'latent_image']) {
          const link = app.graph.getLink(a.inputs[sg.inOut(a, name)].link);
          app.graph.getNodeById(link.origin_id).connect(link.origin_slot, b, sg.inOut(b, name));
        }
        const decode = sg.add('VAEDecode', [1500, 700]);
        sg.wire(b, 'LATENT', decode, 'samples');
        sg.wire(sg.one('CheckpointLoaderSimple'), 'VAE', decode, 'vae');
        const save = sg.add('PreviewImage', [1800, 700]);
        sg.wire(decode, 'IMAGE', save, 'images');
        """,
        """(saved) => {
          const def = saved.definitions.subgraphs[0];
          const seed = def.inputs.findIndex((i) => i.name === 'seed');
          const [removed] = def.inputs.splice(seed, 1);
          def.links = def.links.filter((l) => !removed.linkIds.includes(l.id));
          for (const l of def.links) if (l.origin_id === -10 && l.origin_slot > seed) l.origin_slot -= 1;
          for (const n of def.nodes)
            n.inputs = (n.inputs ?? []).filter((i) => !removed.linkIds.includes(i.link));
          saved.nodes.filter((n) => n.type === def.id).forEach((n, k) => {
            n.properties.proxyWidgets = [['3', 'seed'], ['3', 'steps']];
            n.widgets_values = [100 + k, 2 + k];
            delete n.widgets_values_named;
            n.inputs = n.inputs.filter((i) => i.name !== 'seed');
          });
          return saved;
        }"""),
    "bypassed_inner": (
        "inside the subgraph a LatentUpscaleBy is bypassed (mode 4) between the latent input and the sampler, and a "
        "ConditioningZeroOut feeding the negative is muted (mode 2)",
        """
        const up = sg.add('LatentUpscaleBy', [800, 700]);
        const zero = sg.add('ConditioningZeroOut', [800, 900]);
        const ks = sg.one('KSampler');
        sg.wire(sg.one('EmptyLatentImage'), 'LATENT', up, 'samples');
        sg.wire(up, 'LATENT', ks, 'latent_image');
        sg.wire(sg.one('CLIPTextEncode', 1), 'CONDITIONING', zero, 'conditioning');
        sg.wire(zero, 'CONDITIONING', ks, 'negative');
        up.mode = 4; zero.mode = 2;
        sg.toSubgraph([up, zero, ks]);
        """),
    "reroute": (
        "a Reroute node inside the subgraph carries the CLIP input to both text encoders; the instance's output "
        "goes through a Reroute node outside",
        """
        const { subgraph, node } = sg.toSubgraph([sg.one('CLIPTextEncode'), sg.one('CLIPTextEncode', 1),
                                                  sg.one('KSampler')]);
        const clip = subgraph.inputs.find((i) => i.name === 'clip');
        const r = sg.add('Reroute', [300, 300], subgraph);
        clip.connect(r.inputs[0], r);
        for (const enc of subgraph.nodes.filter((n) => n.type === 'CLIPTextEncode')) r.connect(0, enc, 'clip');
        const outer = sg.add('Reroute', [1300, 500]);
        sg.wire(node, 'LATENT', outer, 0);
        outer.connect(0, sg.one('VAEDecode'), 'samples');
        """),
    "bypassed_instance": (
        "a LatentUpscaleBy turned into a subgraph and the instance bypassed (mode 4): its LATENT passes through",
        """
        const up = sg.add('LatentUpscaleBy', [800, 700]);
        sg.wire(sg.one('EmptyLatentImage'), 'LATENT', up, 'samples');
        sg.wire(up, 'LATENT', sg.one('KSampler'), 'latent_image');
        const { node } = sg.toSubgraph([up]);
        node.mode = 4;
        """),
}


def txt2img() -> dict[str, Any]:
    from tests.e2e.conftest import TINY_CHECKPOINT

    workflow = json.loads((REPO / "workflows" / "txt2img.json").read_text())
    for node in workflow["nodes"]:
        if node["type"] == "CheckpointLoaderSimple":
            node["widgets_values"] = [TINY_CHECKPOINT]
        elif node["type"] == "EmptyLatentImage":
            node["widgets_values"] = [64, 64, 1]
        elif node["type"] == "KSampler":
            node["widgets_values"][2] = 2  # steps
    return workflow


# As a file holds it: through JSON.stringify in the page (Playwright would turn `undefined` fields into nulls).
TO_PROMPT = "async () => JSON.stringify(await app.graphToPrompt())"


def record(page: Any, name: str, about: str, script: str, rewrite: str | None, workflow: dict[str, Any]
           ) -> dict[str, Any]:
    page.evaluate("async (wf) => { await app.loadGraphData(wf); }", workflow)
    page.evaluate(HELPERS)
    page.evaluate(f"async () => {{ {script} }}")
    first = json.loads(page.evaluate(TO_PROMPT))
    saved = first["workflow"]
    if rewrite is not None:  # the saved file edited as another frontend (or a person) would have written it
        saved = json.loads(page.evaluate(f"(saved) => JSON.stringify(({rewrite})(saved))", saved))
    # the saved file, loaded into a fresh graph: the prompt the frontend queues from it is the ground truth
    page.evaluate("async (wf) => { await app.loadGraphData(wf); }", saved)
    try:
        again = json.loads(page.evaluate(TO_PROMPT))
    except Exception as exc:  # the frontend cannot queue it: recorded, the test says what we do instead
        message = str(exc).split("\n")[0].removeprefix("Page.evaluate: ")
        return {"about": about, "frontend": "1.58.1", "workflow": saved, "prompt": None, "frontend_error": message}
    if saved is first["workflow"] and again["output"] != first["output"]:
        raise AssertionError(f"{name}: the frontend reads its own saved file back as another prompt:\n"
                             f"{json.dumps(first['output'])}\n{json.dumps(again['output'])}")
    return {"about": about, "frontend": "1.58.1", "workflow": saved, "prompt": again["output"]}


def main(argv: list[str]) -> int:
    from playwright.sync_api import sync_playwright

    from tests.compat.conftest import FRONTEND_VERSION, SETTINGS, api
    from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, make_base_dir
    from tests.server.conftest import start_server

    import comfyui_frontend_package

    assert comfyui_frontend_package.__version__ == FRONTEND_VERSION
    root = Path(comfyui_frontend_package.__file__).parent / "static"
    chosen = argv or list(SCENARIOS)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        live = start_server(make_base_dir(Path(tmp)), "--front-end-root", str(root))
        try:
            api(live, "/api/settings", SETTINGS)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_context(viewport={"width": 1600, "height": 900}).new_page()
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(live.url)
                page.wait_for_function("() => window.app?.graph && window.app.api?.socket?.readyState === 1",
                                       timeout=90_000)
                for name in chosen:
                    about, script, *rewrite = SCENARIOS[name]
                    fixture = record(page, name, about, script, rewrite[0] if rewrite else None, txt2img())
                    (FIXTURES / f"{name}.json").write_text(json.dumps(fixture, indent=1) + "\n")
                    print(f"{name}: {sorted(fixture['prompt'] or [])} {fixture.get('frontend_error', '')}", flush=True)
                browser.close()
                if errors:
                    print("page errors:", errors, file=sys.stderr)
        finally:
            live.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
