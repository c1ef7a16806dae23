import test from 'node:test';
import assert from 'node:assert/strict';
import { Workspace } from './workspace.js';
import { addNode } from './commands.js';
import { fixtureDefs, readFixture } from '../test/fixtures.js';

const defs = fixtureDefs();

function memoryStorage() {
  const m = new Map();
  return { getItem: (k) => m.get(k) ?? null, setItem: (k, v) => m.set(k, v) };
}

test('tabs persist and restore with their unsaved state and the active tab', () => {
  const storage = memoryStorage();
  const ws = new Workspace({ defs, storage });
  const a = ws.openWorkflow(readFixture('default_workflow.json'), { name: 'a', path: 'workflows/a.json' });
  ws.openWorkflow(readFixture('default_workflow.json'), { name: 'b' });
  addNode(a, 'VAEDecode', [0, 0]);
  ws.activate(a.key);
  ws.persist();
  const again = new Workspace({ defs, storage });
  assert.equal(again.restore(), 2);
  assert.equal(again.active.name, 'a');
  assert.equal(again.active.graph.nodes.size, 8);
  assert.ok(again.active.modified, 'the unsaved marker survives a reload');
  assert.ok(!again.docs[1].modified);
});

test('opening a saved file that is already open switches to its tab', () => {
  const ws = new Workspace({ defs, storage: memoryStorage() });
  const a = ws.openWorkflow(readFixture('default_workflow.json'), { name: 'a', path: 'workflows/a.json' });
  ws.openWorkflow(readFixture('default_workflow.json'), { name: 'b' });
  assert.equal(ws.openWorkflow(readFixture('default_workflow.json'), { name: 'a', path: 'workflows/a.json' }), a);
  assert.equal(ws.docs.length, 2);
  assert.equal(ws.active, a);
});

test('closing the active tab activates its neighbour', () => {
  const ws = new Workspace({ defs, storage: memoryStorage() });
  const a = ws.openWorkflow(readFixture('default_workflow.json'), { name: 'a' });
  const b = ws.openWorkflow(readFixture('default_workflow.json'), { name: 'b' });
  ws.close(b.key);
  assert.equal(ws.active, a);
  assert.equal(ws.uniqueName('a'), 'a (2)');
});
