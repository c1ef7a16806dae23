"""The subgraph fixtures (tests/fixtures/subgraphs/) are still what ComfyUI's frontend makes: each saved workflow,
loaded into the real frontend (1.58.1) against our server, gives the recorded prompt with `app.graphToPrompt()`, and
our server's /workflow/convert gives the same one. (tests/compat/make_subgraph_fixtures.py writes them.)"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.compat.conftest import api
from tests.compat.make_subgraph_fixtures import TO_PROMPT

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "subgraphs"


def test_the_frontend_and_our_converter_flatten_every_subgraph_fixture_alike(frontend, compat_server) -> None:
    page, traffic = frontend
    checked = []
    for path in sorted(FIXTURES.glob("*.json")):
        fixture = json.loads(path.read_text())
        page.evaluate("async (wf) => { await app.loadGraphData(wf); }", fixture["workflow"])
        if fixture["prompt"] is None:  # the frontend cannot queue it (recorded with its error)
            with pytest.raises(Exception, match="No output node found"):
                page.evaluate(TO_PROMPT)
            continue
        frontend_prompt = json.loads(page.evaluate(TO_PROMPT))["output"]
        assert frontend_prompt == fixture["prompt"], f"{path.name}: the frontend now makes another prompt"
        ours = api(compat_server, "/workflow/convert", {"workflow": fixture["workflow"]})["prompt"]
        assert ours == fixture["prompt"], f"{path.name}: our /workflow/convert differs"
        checked.append(path.stem)
    assert len(checked) >= 9, checked
    assert not traffic.page_errors, traffic.page_errors


def test_comfyuis_frontend_reads_a_subgraph_saved_by_our_editor(frontend, compat_server) -> None:
    """web/subgraph/ (run under Node by editor_subgraph.mjs) converts, promotes two widgets and sets them; the file
    it saves loads into ComfyUI's frontend as one instance, and both make the same prompt with the set values."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (the editor's modules run under Node here)")
    made = subprocess.run([node, str(Path(__file__).with_name("editor_subgraph.mjs"))], capture_output=True,
                          text=True, timeout=60, check=True)
    workflow = json.loads(made.stdout)
    page, traffic = frontend
    page.evaluate("async (wf) => { await app.loadGraphData(wf); }", workflow)
    instance = page.evaluate("""() => app.graph.nodes.filter((n) => n.isSubgraphNode?.()).map((n) => ({
        id: String(n.id), widgets: Object.fromEntries(n.widgets.map((w) => [w.name, w.value])) }))""")
    assert len(instance) == 1 and instance[0]["widgets"] == {"seed": 4321, "text": "a blue square"}, instance
    frontend_prompt = json.loads(page.evaluate(TO_PROMPT))["output"]
    ours = api(compat_server, "/workflow/convert", {"workflow": workflow})["prompt"]
    assert frontend_prompt == ours
    sampler = f"{instance[0]['id']}:3"
    assert ours[sampler]["inputs"]["seed"] == 4321 and ours[f"{instance[0]['id']}:6"]["inputs"]["text"] == \
        "a blue square"
    assert not traffic.page_errors, traffic.page_errors
