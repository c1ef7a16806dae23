import test from 'node:test';
import assert from 'node:assert/strict';
import { Graph } from './model.js';
import { layoutGraph, overlapping } from './auto_layout.js';

function chain() {
  const g = new Graph();
  const add = (id, w, h, ins, outs) => g.addNode({ id, type: 'T', pos: [0, 0], size: [w, h],
    inputs: ins.map((t) => ({ name: t, type: t, link: null })),
    outputs: outs.map((t, i) => ({ name: t, type: t, links: [], slot_index: i })) });
  add(1, 320, 100, [], ['MODEL', 'CLIP']);
  add(2, 420, 200, ['CLIP'], ['COND']);
  add(3, 420, 200, ['CLIP'], ['COND']);
  add(4, 300, 400, ['MODEL', 'COND', 'COND'], ['LATENT']);
  add(5, 200, 80, [], ['LATENT']);
  g.connect(1, 1, 2, 0);
  g.connect(1, 1, 3, 0);
  g.connect(1, 0, 4, 0);
  g.connect(2, 0, 4, 1);
  g.connect(3, 0, 4, 2);
  return g;
}

test('nodes piled at one point are laid out in columns along the links without overlaps', () => {
  const g = chain();
  assert.ok(overlapping(g).length > 0);
  layoutGraph(g);
  assert.deepEqual(overlapping(g), []);
  const x = (id) => g.getNode(id).pos[0];
  assert.ok(x(1) < x(2) && x(2) < x(4), 'a node sits right of its inputs');
  assert.ok(x(4) >= x(2) + 420, 'a column starts after the widest node before it');
  assert.equal(x(2), x(3));
});
