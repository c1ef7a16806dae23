import test from 'node:test';
import assert from 'node:assert/strict';
import { createSigmaCurves, hasScheduleWidgets, queryString, sigmaQuery } from './sigma_curves.js';
import { WorkflowDoc } from './document.js';
import { fixtureDefs, readFixture } from '../test/fixtures.js';

const defs = fixtureDefs();
const payloads = readFixture('inspect_payloads.json');
const tick = () => new Promise((r) => setTimeout(r, 0));

function setup() {
  const doc = WorkflowDoc.fromWorkflow(readFixture('default_workflow.json'), { defs, name: 'd' });
  const ks = doc.graph.getNode(3);
  const calls = [];
  let loads = 0;
  const curves = createSigmaCurves({
    fetchSigmas: async (q) => { calls.push(q); if (q.scheduler === 'broken') throw new Error('HTTP 400'); return payloads.sigmas_route.response; },
    onLoad: () => { loads++; },
  });
  return { doc, ks, calls, curves, loads: () => loads };
}

test('sampler nodes are those with a scheduler and steps', () => {
  assert.ok(hasScheduleWidgets(defs.get('KSampler')));
  assert.ok(hasScheduleWidgets(defs.get('KSamplerAdvanced')));
  assert.ok(!hasScheduleWidgets(defs.get('CLIPTextEncode')));
  assert.ok(!hasScheduleWidgets(undefined));
});

test("a KSampler's query is its own scheduler, steps and denoise", () => {
  const { ks } = setup();
  const q = sigmaQuery(ks, defs.get('KSampler'));
  assert.deepEqual(q, { scheduler: 'normal', steps: '20', denoise: '1', model_sampling: 'eps', sampler_name: 'euler' });
  assert.equal(queryString(q), 'scheduler=normal&steps=20&denoise=1&model_sampling=eps&sampler_name=euler');
  assert.equal(sigmaQuery(ks, defs.get('CLIPTextEncode')), null);
});

test('a setting fed by a link is unknown, so there is no curve', () => {
  const { doc, ks } = setup();
  const def = defs.get('KSampler');
  const prim = doc.graph.addNode({ type: 'PrimitiveNode', pos: [0, 0], size: [100, 50],
    outputs: [{ name: 'INT', type: 'INT', links: [] }] });
  const slot = doc.graph.widgetInputSlot(ks.id, 'steps', 'INT');
  doc.graph.connect(prim.id, 0, ks.id, slot);
  assert.equal(sigmaQuery(ks, def), null);
});

test('one request per distinct setting, shared by nodes; the curve carries a label and the run marker', async () => {
  const { doc, ks, calls, curves, loads } = setup();
  const def = defs.get('KSampler');
  assert.equal(curves.curveFor(doc, ks, def), null, 'loading');
  assert.equal(curves.curveFor(doc, ks, def), null);
  await tick();
  assert.equal(calls.length, 1);
  assert.equal(loads(), 1);
  const c = curves.curveFor(doc, ks, def);
  assert.equal(c.series[0].points.length, 21);
  assert.equal(c.xMax, 20);
  assert.equal(c.marker, null);
  assert.match(c.label, /normal · 20 steps|normal {2}· {2}20 steps/);
  assert.equal(curves.curveFor(doc, ks, def, 0.5).marker, 10);
  const other = WorkflowDoc.fromWorkflow(readFixture('default_workflow.json'), { defs, name: 'o' });
  assert.ok(curves.curveFor(other, other.graph.getNode(3), def));
  assert.equal(calls.length, 1, 'same settings: no new request');
});

test('a changed setting keeps the last curve on screen until its own arrives; errors are remembered', async () => {
  const { doc, ks, calls, curves } = setup();
  const def = defs.get('KSampler');
  curves.curveFor(doc, ks, def);
  await tick();
  assert.ok(curves.curveFor(doc, ks, def), 'drawn once the curve arrived (onLoad redraws)');
  ks.widgets_values[2] = 30; // steps
  const during = curves.curveFor(doc, ks, def);
  assert.equal(during.series[0].points.length, 21, 'the old curve while loading');
  assert.equal(during.pending, true);
  ks.widgets_values[5] = 'broken'; // scheduler
  curves.curveFor(doc, ks, def);
  await tick();
  const n = calls.length;
  curves.curveFor(doc, ks, def);
  curves.curveFor(doc, ks, def);
  assert.equal(calls.length, n, 'a failed setting is not asked again every frame');
});

test("KSamplerAdvanced's start and end steps shade the part it does not run", async () => {
  const { doc, curves } = setup();
  const def = defs.get('KSamplerAdvanced');
  const node = doc.graph.addNode({ type: 'KSamplerAdvanced', pos: [0, 0], size: [315, 334],
    widgets_values: def.widgets.map((w) => w.default) });
  node.widgets_values[def.widgets.findIndex((w) => w.name === 'start_at_step')] = 5;
  node.widgets_values[def.widgets.findIndex((w) => w.name === 'end_at_step')] = 15;
  curves.curveFor(doc, node, def);
  await tick();
  assert.deepEqual(curves.curveFor(doc, node, def).range, [5, 15]);
});
