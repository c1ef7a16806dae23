import test from 'node:test';
import assert from 'node:assert/strict';
import { createFrame } from './frame.js';
import { Hit, hitTest, nodesInRect } from './hit.js';
import { makeViewport } from './viewport.js';
import { loadWorkflow } from '../graph/serialize.js';
import { fixtureDefs, readFixture } from '../test/fixtures.js';

const defs = fixtureDefs();

function scene() {
  const graph = loadWorkflow(readFixture('default_workflow.json'), { defs });
  return { graph, defs, vp: makeViewport(), settings: { linkStyle: 'spline' }, frame: createFrame({ graph, defs }) };
}

test('slots, title, widgets and body of a node are told apart', () => {
  const s = scene();
  const ks = s.graph.getNode(3);
  const out = s.frame.outputPos(ks, 0);
  assert.deepEqual(hitTest(s, out).kind, Hit.OUTPUT);
  const inp = s.frame.inputPos(ks, 2);
  const h = hitTest(s, inp);
  assert.equal(h.kind, Hit.INPUT);
  assert.equal(h.slot, 2);
  assert.equal(hitTest(s, [ks.pos[0] + 100, ks.pos[1] - 10]).kind, Hit.TITLE);
  assert.equal(hitTest(s, [ks.pos[0] + 10, ks.pos[1] - 15]).kind, Hit.COLLAPSE);
  const steps = s.frame.infoOf(ks).layout.widgets.find((w) => w.widget.name === 'steps');
  const mid = [ks.pos[0] + steps.x + steps.w / 2, ks.pos[1] + steps.y + 10];
  const w = hitTest(s, mid);
  assert.equal(w.kind, Hit.WIDGET);
  assert.equal(w.widget.name, 'steps');
  assert.equal(w.part, 'value');
  assert.equal(hitTest(s, [ks.pos[0] + steps.x + 4, mid[1]]).part, 'left');
  assert.equal(hitTest(s, [ks.pos[0] + ks.size[0] - 3, ks.pos[1] + ks.size[1] - 3]).kind, Hit.RESIZE);
  assert.equal(hitTest(s, [-500, -500]).kind, Hit.NONE);
});

test('the topmost of overlapping nodes wins', () => {
  const s = scene();
  const a = s.graph.getNode(6);
  const b = s.graph.getNode(7);
  b.pos = [a.pos[0] + 20, a.pos[1] + 20];
  s.graph.bringToFront(7);
  assert.equal(hitTest(s, [a.pos[0] + 60, a.pos[1] + 40]).node.id, 7);
  s.graph.bringToFront(6);
  assert.equal(hitTest(s, [a.pos[0] + 60, a.pos[1] + 40]).node.id, 6);
});

test('a link midpoint and a reroute are hit', () => {
  const s = scene();
  const link = s.graph.links.get(7);
  const [a, b] = s.frame.linkPoints(link);
  const mid = [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2];
  const h = hitTest(s, mid);
  assert.equal(h.kind, Hit.LINK);
  assert.equal(h.link.id, 7);
  const r = s.graph.addReroute(8, [1190, 400]);
  assert.equal(hitTest(s, [1192, 401]).reroute, r);
});

test('box selection takes every node the box touches, in any drag direction', () => {
  const s = scene();
  const ids = (rect) => nodesInRect(s, rect).map((n) => n.id).sort();
  assert.deepEqual(ids([400, 150, 500, 600]), [3, 5, 6, 7]);
  assert.deepEqual(ids([900, 750, -500, -600]), [3, 5, 6, 7]);
});
