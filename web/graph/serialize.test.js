import test from 'node:test';
import assert from 'node:assert/strict';
import { detectFormat, graphFromApiPrompt, loadWorkflow, saveWorkflow, WorkflowFormatError } from './serialize.js';
import { fixtureDefs, readFixture } from '../test/fixtures.js';

const defs = fixtureDefs();

function stripNamed(wf) {
  for (const n of wf.nodes) delete n.widgets_values_named;
  return wf;
}

test('the classic default workflow survives load and save unchanged', () => {
  const src = readFixture('default_workflow.json');
  const out = stripNamed(saveWorkflow(loadWorkflow(src, { defs }), { defs }));
  const byId = (wf) => Object.fromEntries(wf.nodes.map((n) => [n.id, n]));
  for (const [id, node] of Object.entries(byId(src))) {
    const got = byId(out)[id];
    for (const key of ['type', 'pos', 'size', 'mode', 'order']) {
      assert.deepEqual(got[key], node[key], `node ${id} ${key}`);
    }
    assert.deepEqual(got.widgets_values, node.widgets_values ?? [], `node ${id} widgets_values`);
    assert.deepEqual(got.inputs ?? [], node.inputs ?? [], `node ${id} inputs`);
    assert.deepEqual(got.outputs.map((o) => [o.name, o.type, [...o.links].sort()]),
      (node.outputs ?? []).map((o) => [o.name, o.type, [...o.links].sort()]), `node ${id} outputs`);
  }
  assert.deepEqual([...out.links].sort((a, b) => a[0] - b[0]), src.links);
  assert.equal(out.last_node_id, 9);
  assert.equal(out.last_link_id, 9);
  assert.equal(out.version, 0.4);
});

test('save writes widgets_values_named including control_after_generate', () => {
  const out = saveWorkflow(loadWorkflow(readFixture('default_workflow.json'), { defs }), { defs });
  const ks = out.nodes.find((n) => n.type === 'KSampler');
  assert.deepEqual(ks.widgets_values_named, { seed: 156680208700286, control_after_generate: 'randomize',
    steps: 20, cfg: 8, sampler_name: 'euler', scheduler: 'normal', denoise: 1 });
});

test('saving twice gives the same document (load/save is a fixed point)', () => {
  const once = saveWorkflow(loadWorkflow(readFixture('default_workflow.json'), { defs }), { defs });
  const twice = saveWorkflow(loadWorkflow(once, { defs }), { defs });
  assert.deepEqual(twice, once);
});

test('old files with pos/size objects and null link lists load', () => {
  const wf = {
    last_node_id: 2, last_link_id: 1, version: 0.4, groups: [], config: {}, extra: {},
    nodes: [
      { id: 1, type: 'EmptyLatentImage', pos: { 0: 5, 1: 6 }, size: { 0: 300, 1: 100 }, flags: {}, mode: 0,
        outputs: [{ name: 'LATENT', type: 'LATENT', links: null }], widgets_values: [512, 512, 1] },
      { id: 2, type: 'VAEDecode', pos: [400, 0], size: [200, 50], flags: {}, mode: 4,
        inputs: [{ name: 'samples', type: 'LATENT', link: 1 }, { name: 'vae', type: 'VAE', link: null }],
        outputs: [{ name: 'IMAGE', type: 'IMAGE', links: null }] },
    ],
    links: [[1, 1, 0, 2, 0, 'LATENT']],
  };
  const g = loadWorkflow(wf, { defs });
  assert.deepEqual(g.getNode(1).pos, [5, 6]);
  assert.deepEqual(g.getNode(1).outputs[0].links, [1]);
  assert.equal(g.getNode(2).mode, 4);
});

test('links to missing nodes or taken inputs are dropped when loading', () => {
  const wf = readFixture('default_workflow.json');
  wf.links.push([20, 99, 0, 3, 0, 'MODEL'], [21, 4, 0, 3, 0, 'MODEL']);
  const g = loadWorkflow(wf, { defs });
  assert.equal(g.links.size, 9);
  assert.equal(g.getNode(3).inputs[0].link, 1);
});

test('schema version 1 (state, link objects, top-level reroutes) is read', () => {
  const wf = {
    id: 'abc', revision: 3, version: 1,
    state: { lastNodeId: 2, lastLinkId: 1, lastRerouteId: 1, lastGroupId: 1 },
    nodes: [
      { id: 1, type: 'EmptyLatentImage', pos: [0, 0], size: [300, 100], flags: {}, order: 0, mode: 0,
        outputs: [{ name: 'LATENT', type: 'LATENT', links: [1] }], widgets_values: [512, 512, 1] },
      { id: 2, type: 'VAEDecode', pos: [400, 0], size: [200, 50], flags: {}, order: 1, mode: 0,
        inputs: [{ name: 'samples', type: 'LATENT', link: 1 }, { name: 'vae', type: 'VAE', link: null }],
        outputs: [{ name: 'IMAGE', type: 'IMAGE', links: [] }] },
    ],
    links: [{ id: 1, origin_id: 1, origin_slot: 0, target_id: 2, target_slot: 0, type: 'LATENT', parentId: 1 }],
    reroutes: [{ id: 1, pos: [350, 20], linkIds: [1] }],
    groups: [{ id: 1, title: 'G', bounding: [0, -40, 700, 200] }],
    config: {}, extra: {},
  };
  const g = loadWorkflow(wf, { defs });
  assert.equal(g.links.get(1).parentId, 1);
  assert.deepEqual(g.rerouteChain(g.links.get(1)), [1]);
  const out = saveWorkflow(g, { defs });
  assert.equal(out.version, 0.4);
  assert.deepEqual(out.extra.reroutes, [{ id: 1, pos: [350, 20], linkIds: [1] }]);
  assert.deepEqual(out.extra.linkExtensions, [{ id: 1, parentId: 1 }]);
  assert.equal(out.last_node_id, 2);
  assert.equal(out.id, 'abc');
});

test('0.4 reroutes (extra.reroutes + linkExtensions) round-trip', () => {
  const wf = readFixture('default_workflow.json');
  wf.extra.reroutes = [{ id: 1, pos: [1190, 300], linkIds: [8] }, { id: 2, parentId: 1, pos: [1200, 320], linkIds: [8] }];
  wf.extra.linkExtensions = [{ id: 8, parentId: 2 }];
  const g = loadWorkflow(wf, { defs });
  assert.deepEqual(g.rerouteChain(g.links.get(8)), [1, 2]);
  const out = saveWorkflow(g, { defs });
  assert.deepEqual(out.extra.reroutes, wf.extra.reroutes);
  assert.deepEqual(out.extra.linkExtensions, wf.extra.linkExtensions);
});

test('unknown node keys, groups, extra and the view position are kept', () => {
  const wf = readFixture('default_workflow.json');
  wf.nodes[0].color = '#322';
  wf.nodes[0].title = 'Negative';
  wf.groups = [{ id: 1, title: 'Prompts', bounding: [400, 100, 450, 500], color: '#3f789e', font_size: 24, flags: {} }];
  wf.extra.someTool = { x: 1 };
  const out = saveWorkflow(loadWorkflow(wf, { defs }), { defs, ds: { scale: 0.5, offset: [10, 20] } });
  const neg = out.nodes.find((n) => n.id === 7);
  assert.equal(neg.color, '#322');
  assert.equal(neg.title, 'Negative');
  assert.deepEqual(out.groups, wf.groups);
  assert.deepEqual(out.extra.someTool, { x: 1 });
  assert.deepEqual(out.extra.ds, { scale: 0.5, offset: [10, 20] });
});

test('format detection tells workflows from API prompts', () => {
  assert.equal(detectFormat(readFixture('default_workflow.json')), 'workflow');
  assert.equal(detectFormat({ 3: { class_type: 'KSampler', inputs: {} } }), 'api');
  assert.equal(detectFormat({ hello: 1 }), null);
  assert.throws(() => loadWorkflow({ hello: 1 }), WorkflowFormatError);
});

test('an API prompt becomes a graph with links and widget values', () => {
  const prompt = {
    4: { class_type: 'CheckpointLoaderSimple', inputs: { ckpt_name: 'v1-5-pruned-emaonly.safetensors' } },
    5: { class_type: 'EmptyLatentImage', inputs: { width: 640, height: 512, batch_size: 1 } },
    6: { class_type: 'CLIPTextEncode', inputs: { text: 'a cat', clip: ['4', 1] }, _meta: { title: 'Positive' } },
    3: { class_type: 'KSampler', inputs: { seed: 5, steps: 4, cfg: 7, sampler_name: 'euler', scheduler: 'normal',
      denoise: 1, model: ['4', 0], positive: ['6', 0], negative: ['6', 0], latent_image: ['5', 0] } },
  };
  const g = graphFromApiPrompt(prompt, { defs, sizeOf: () => [300, 100] });
  assert.equal(g.nodes.size, 4);
  assert.equal(g.links.size, 5);
  assert.deepEqual(g.getNode(3).widgets_values, [5, 'randomize', 4, 7, 'euler', 'normal', 1]);
  assert.equal(g.getNode(6).title, 'Positive');
  assert.ok(g.getNode(3).pos[0] > g.getNode(6).pos[0], 'consumers are laid out right of their sources');
});
