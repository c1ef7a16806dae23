import test from 'node:test';
import assert from 'node:assert/strict';
import { Graph, GraphError, typesCompatible } from './model.js';

function twoNodes() {
  const g = new Graph();
  const a = g.addNode({ type: 'A', outputs: [{ name: 'LATENT', type: 'LATENT' }, { name: 'IMAGE', type: 'IMAGE' }] });
  const b = g.addNode({ type: 'B', inputs: [{ name: 'samples', type: 'LATENT' }, { name: 'any', type: '*' }],
    outputs: [{ name: 'LATENT', type: 'LATENT' }] });
  return { g, a, b };
}

test('type compatibility follows litegraph: equal, wildcard, or overlapping unions', () => {
  assert.ok(typesCompatible('LATENT', 'LATENT'));
  assert.ok(typesCompatible('IMAGE', '*'));
  assert.ok(typesCompatible('*', 'MODEL'));
  assert.ok(typesCompatible('IMAGE,MASK', 'MASK'));
  assert.ok(!typesCompatible('IMAGE', 'LATENT'));
  assert.ok(!typesCompatible('INT', 'FLOAT'));
});

test('new nodes get increasing ids and keep explicit ones', () => {
  const g = new Graph();
  assert.equal(g.addNode({ type: 'X' }).id, 1);
  assert.equal(g.addNode({ type: 'X', id: 10 }).id, 10);
  assert.equal(g.addNode({ type: 'X' }).id, 11);
  assert.equal(g.addNode({ type: 'X', id: 10 }).id, 12, 'a taken id is replaced');
});

test('connect records the link on both slots and replaces an input\'s old link', () => {
  const { g, a, b } = twoNodes();
  const l1 = g.connect(a.id, 0, b.id, 0);
  assert.deepEqual(a.outputs[0].links, [l1.id]);
  assert.equal(b.inputs[0].link, l1.id);
  assert.equal(l1.type, 'LATENT');
  const c = g.addNode({ type: 'A', outputs: [{ name: 'LATENT', type: 'LATENT' }] });
  const l2 = g.connect(c.id, 0, b.id, 0);
  assert.equal(b.inputs[0].link, l2.id);
  assert.deepEqual(a.outputs[0].links, [], 'the replaced link left the old output');
  assert.equal(g.links.size, 1);
});

test('an output feeds many inputs', () => {
  const { g, a, b } = twoNodes();
  g.connect(a.id, 0, b.id, 0);
  g.connect(a.id, 1, b.id, 1);
  assert.equal(g.links.size, 2);
});

test('connecting mismatched types is refused with a GraphError naming the types', () => {
  const { g, a, b } = twoNodes();
  assert.throws(() => g.connect(a.id, 1, b.id, 0), (e) => e instanceof GraphError && /IMAGE.*LATENT/.test(e.message));
  assert.equal(g.links.size, 0);
});

test('a link that would close a cycle is refused', () => {
  const { g, a, b } = twoNodes();
  const c = g.addNode({ type: 'C', inputs: [{ name: 'x', type: 'LATENT' }], outputs: [{ name: 'y', type: 'LATENT' }] });
  g.connect(b.id, 0, c.id, 0);
  assert.match(g.connectionError(c.id, 0, b.id, 0), /cycle/);
  assert.match(g.connectionError(b.id, 0, b.id, 0), /itself/);
  assert.equal(g.connectionError(a.id, 0, b.id, 0), null);
});

test('removing a node removes its links from the other nodes', () => {
  const { g, a, b } = twoNodes();
  g.connect(a.id, 0, b.id, 0);
  g.removeNode(b.id);
  assert.equal(g.links.size, 0);
  assert.deepEqual(a.outputs[0].links, []);
});

test('a widget input is added on demand and reused', () => {
  const g = new Graph();
  const n = g.addNode({ type: 'KSampler', inputs: [{ name: 'model', type: 'MODEL' }] });
  assert.equal(g.widgetInputSlot(n.id, 'seed', 'INT'), 1);
  assert.equal(g.widgetInputSlot(n.id, 'seed', 'INT'), 1);
  assert.deepEqual(n.inputs[1], { name: 'seed', type: 'INT', link: null, widget: { name: 'seed' } });
});

test('groups contain the nodes whose centre lies inside them', () => {
  const g = new Graph();
  const inside = g.addNode({ type: 'X', pos: [10, 40], size: [100, 50] });
  g.addNode({ type: 'X', pos: [500, 40], size: [100, 50] });
  const group = g.addGroup({ title: 'G', bounding: [0, 0, 300, 200] });
  assert.deepEqual(g.nodesInGroup(group), [inside]);
});

test('reroutes chain from origin to target and are removed with their last link', () => {
  const { g, a, b } = twoNodes();
  const link = g.connect(a.id, 0, b.id, 0);
  const r1 = g.addReroute(link.id, [50, 50]);
  const r2 = g.addReroute(link.id, [80, 50]);
  assert.deepEqual(g.rerouteChain(link), [r1.id, r2.id]);
  const r0 = g.addReroute(link.id, [20, 50], { beforeId: r1.id });
  assert.deepEqual(g.rerouteChain(link), [r0.id, r1.id, r2.id]);
  g.removeReroute(r1.id);
  assert.deepEqual(g.rerouteChain(link), [r0.id, r2.id]);
  g.removeLink(link.id);
  assert.equal(g.reroutes.size, 0);
});

test('execution order puts every node after the nodes that feed it', () => {
  const { g, a, b } = twoNodes();
  const c = g.addNode({ type: 'C', id: 0, inputs: [{ name: 'x', type: 'LATENT' }] });
  g.connect(b.id, 0, c.id, 0);
  g.connect(a.id, 0, b.id, 0);
  const order = g.executionOrder();
  assert.ok(order.indexOf(a.id) < order.indexOf(b.id));
  assert.ok(order.indexOf(b.id) < order.indexOf(c.id));
});

test('bringToFront moves a node to the end of the draw order', () => {
  const { g, a, b } = twoNodes();
  g.bringToFront(a.id);
  assert.deepEqual([...g.nodes.keys()], [b.id, a.id]);
});
