import test from 'node:test';
import assert from 'node:assert/strict';
import { WorkflowDoc } from './document.js';
import * as cmd from './commands.js';
import { Mode, typesCompatible } from '../graph/model.js';
import { fixtureDefs, readFixture } from '../test/fixtures.js';

const defs = fixtureDefs();
const open = () => WorkflowDoc.fromWorkflow(readFixture('default_workflow.json'), { defs, name: 'default' });

function memoryStorage() {
  const m = new Map();
  return { getItem: (k) => (m.has(k) ? m.get(k) : null), setItem: (k, v) => m.set(k, String(v)) };
}

test('adding a node is one undo step and undo removes it', () => {
  const doc = open();
  const node = cmd.addNode(doc, 'KSampler', [100, 100]);
  assert.equal(doc.graph.nodes.size, 8);
  assert.ok(node.size[0] >= 315 && node.size[1] > 200, `sized for its widgets: ${node.size}`);
  assert.ok(doc.modified);
  doc.undo();
  assert.equal(doc.graph.nodes.size, 7);
  assert.ok(!doc.modified, 'back to the opened state');
  doc.redo();
  assert.equal(doc.graph.nodes.size, 8);
});

test('a paste of several nodes is a single undo step', () => {
  const doc = open();
  const storage = memoryStorage();
  doc.selection = new Set([3, 5, 8]);
  cmd.copySelection(doc, storage);
  const added = cmd.pasteClipboard(doc, storage, [0, 1000]);
  assert.equal(added.length, 3);
  assert.equal(doc.graph.nodes.size, 10);
  doc.undo();
  assert.equal(doc.graph.nodes.size, 7);
  assert.equal(doc.graph.links.size, 9);
});

test('the clipboard works across documents (tabs) through shared storage', () => {
  const a = open();
  const b = WorkflowDoc.fromWorkflow({ nodes: [], links: [], version: 0.4 }, { defs });
  const storage = memoryStorage();
  a.selection = new Set([4, 6]);
  cmd.copySelection(a, storage);
  cmd.pasteClipboard(b, storage, [0, 0]);
  assert.deepEqual([...b.graph.nodes.values()].map((n) => n.type).sort(), ['CLIPTextEncode', 'CheckpointLoaderSimple']);
  assert.equal(b.graph.links.size, 1);
});

test('deleting a multi-node selection is one step and undo restores nodes and links', () => {
  const doc = open();
  doc.selection = new Set([3, 4, 9]);
  cmd.deleteSelection(doc);
  assert.equal(doc.graph.nodes.size, 4);
  doc.undo();
  assert.equal(doc.graph.nodes.size, 7);
  assert.equal(doc.graph.links.size, 9);
  assert.equal(doc.graph.getNode(3).inputs[0].link, 1);
});

test('bypass toggles on, then off when every selected node is bypassed', () => {
  const doc = open();
  doc.selection = new Set([3, 8]);
  cmd.toggleMode(doc, Mode.BYPASS);
  assert.deepEqual(doc.selectedNodes().map((n) => n.mode), [4, 4]);
  cmd.toggleMode(doc, Mode.BYPASS);
  assert.deepEqual(doc.selectedNodes().map((n) => n.mode), [0, 0]);
  cmd.toggleMode(doc, Mode.NEVER);
  assert.deepEqual(doc.selectedNodes().map((n) => n.mode), [2, 2]);
  doc.undo();
  assert.deepEqual(doc.selectedNodes().map((n) => n.mode), [0, 0]);
});

test('duplicate copies the selection with its internal links, offset', () => {
  const doc = open();
  doc.selection = new Set([3, 8]);
  const added = cmd.duplicateSelection(doc);
  assert.equal(added.length, 2);
  assert.equal(doc.graph.links.size, 10);
  assert.deepEqual(added[0].pos, [893, 216]);
});

test('grouping surrounds the selection and moving is a separate step', () => {
  const doc = open();
  doc.selection = new Set([6, 7]);
  const g = cmd.groupSelection(doc, 'Prompts');
  assert.deepEqual(doc.graph.nodesInGroup(g).map((n) => n.id).sort(), [6, 7]);
  assert.equal(doc.history.undoStack.length, 1);
});

test('a connection refused for its types leaves no undo step', () => {
  const doc = open();
  assert.throws(() => cmd.connect(doc, 4, 0, 8, 1), /MODEL/);
  assert.equal(doc.history.canUndo, false);
});

test('dropping a link on a node picks the first compatible input, widgets included', () => {
  const doc = open();
  const ks = doc.graph.getNode(3);
  assert.equal(cmd.firstCompatibleInput(doc, ks, 'LATENT', typesCompatible), 3);
  const slot = cmd.firstCompatibleInput(doc, ks, 'INT', typesCompatible);
  assert.equal(ks.inputs[slot].widget.name, 'seed');
  assert.equal(cmd.firstCompatibleInput(doc, doc.graph.getNode(9), 'MODEL', typesCompatible), -1);
});

test('panning the view is not an edit', () => {
  const doc = open();
  doc.vp.offset[0] += 100;
  assert.equal(doc.checkpoint(), false);
  assert.ok(!doc.modified);
  assert.equal(doc.toWorkflow().extra.ds.offset[0], 100);
});

test('a Primitive linked to a widget takes its value and shows it as its own widget', async () => {
  const { widgetsOf } = await import('../graph/schema.js');
  const doc = open();
  const prim = cmd.createNode(doc, 'PrimitiveNode', [0, 0]);
  const slot = doc.graph.widgetInputSlot(3, 'steps', 'INT');
  cmd.seedPrimitive(doc, doc.graph.connect(prim.id, 0, 3, slot));
  assert.deepEqual(prim.widgets_values, [20, 'fixed']);
  assert.equal(prim.title, 'steps');
  assert.equal(widgetsOf(prim, doc.defs, doc.graph)[0].options.max, 10000);
});

test('a Primitive takes the range of the widget it feeds; a second link keeps its value within the new range', async () => {
  const { widgetsOf } = await import('../graph/schema.js');
  const doc = open();
  const prim = cmd.createNode(doc, 'PrimitiveNode', [0, 0]);
  prim.widgets_values = [12345, 'increment']; // left over from an earlier link
  cmd.seedPrimitive(doc, doc.graph.connect(prim.id, 0, 3, doc.graph.widgetInputSlot(3, 'seed', 'INT')));
  const seed = doc.graph.getNode(3).widgets_values[0];
  assert.deepEqual(prim.widgets_values, [seed, 'increment'], 'the first link takes the target\'s value');
  const [value] = widgetsOf(prim, doc.defs, doc.graph);
  assert.deepEqual([value.kind, value.options.min, value.options.max], ['INT', 0, 0xffffffffffffffff]);

  const other = cmd.createNode(doc, 'KSampler', [400, 0]);
  prim.widgets_values[0] = 50000;
  cmd.seedPrimitive(doc, doc.graph.connect(prim.id, 0, other.id, doc.graph.widgetInputSlot(other.id, 'steps', 'INT')));
  assert.deepEqual(prim.widgets_values, [10000, 'increment'], 'steps allows at most 10000');
});
