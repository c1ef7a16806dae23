import test from 'node:test';
import assert from 'node:assert/strict';
import { applyControlAfterGenerate, RANDOM_MAX } from './control.js';
import { loadWorkflow } from './serialize.js';
import { fixtureDefs, readFixture } from '../test/fixtures.js';

const defs = fixtureDefs();

function withControl(mode, seed = 10) {
  const wf = readFixture('default_workflow.json');
  wf.nodes.find((n) => n.id === 3).widgets_values = [seed, mode, 20, 8, 'euler', 'normal', 1];
  return loadWorkflow(wf, { defs });
}

test('increment and decrement move the seed by its step', () => {
  const g = withControl('increment');
  applyControlAfterGenerate(g, defs);
  assert.equal(g.getNode(3).widgets_values[0], 11);
  const d = withControl('decrement');
  applyControlAfterGenerate(d, defs);
  assert.equal(d.getNode(3).widgets_values[0], 9);
});

test('decrement stops at the minimum', () => {
  const g = withControl('decrement', 0);
  assert.equal(applyControlAfterGenerate(g, defs), 0);
  assert.equal(g.getNode(3).widgets_values[0], 0);
});

test('fixed leaves the value alone', () => {
  const g = withControl('fixed');
  applyControlAfterGenerate(g, defs, { random: () => 0.5 });
  assert.equal(g.getNode(3).widgets_values[0], 10);
});

test('randomize draws an integer within [min, 2**50]', () => {
  const g = withControl('randomize');
  applyControlAfterGenerate(g, defs, { random: () => 0.999999 });
  const v = g.getNode(3).widgets_values[0];
  assert.ok(Number.isInteger(v) && v > 0 && v <= RANDOM_MAX, String(v));
  applyControlAfterGenerate(g, defs, { random: () => 0 });
  assert.equal(g.getNode(3).widgets_values[0], 0);
});

test('a seed fed by a link is not changed', () => {
  const g = withControl('increment');
  const prim = g.addNode({ type: 'PrimitiveNode', outputs: [{ name: 'connect to widget input', type: '*' }],
    widgets_values: [5, 'fixed'] });
  const slot = g.widgetInputSlot(3, 'seed', 'INT');
  g.connect(prim.id, 0, 3, slot);
  applyControlAfterGenerate(g, defs);
  assert.equal(g.getNode(3).widgets_values[0], 10);
});
