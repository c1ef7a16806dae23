import test from 'node:test';
import assert from 'node:assert/strict';
import { alignNodes, distributeNodes } from './align.js';

const nodes = () => [
  { pos: [10, 0], size: [100, 50] },
  { pos: [50, 200], size: [200, 80] },
  { pos: [0, 500], size: [150, 40] },
];

test('align left and bottom use the selection\'s bounding box', () => {
  const ns = nodes();
  alignNodes(ns, 'left');
  assert.deepEqual(ns.map((n) => n.pos[0]), [0, 0, 0]);
  alignNodes(ns, 'bottom');
  assert.deepEqual(ns.map((n) => n.pos[1] + n.size[1]), [540, 540, 540]);
});

test('distribute vertically leaves equal gaps and keeps both ends', () => {
  const ns = nodes();
  distributeNodes(ns, 'vertical', 0);
  const gaps = [ns[1].pos[1] - (ns[0].pos[1] + 50), ns[2].pos[1] - (ns[1].pos[1] + 80)];
  assert.ok(Math.abs(gaps[0] - gaps[1]) < 1e-9);
  assert.equal(ns[0].pos[1], 0);
  assert.equal(ns[2].pos[1] + 40, 540);
});

test('an unknown edge is an error', () => {
  assert.throws(() => alignNodes(nodes(), 'middle'), /unknown edge/);
});
