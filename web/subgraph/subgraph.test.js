import test from 'node:test';
import assert from 'node:assert/strict';
import { loadWorkflow, saveWorkflow } from '../graph/serialize.js';
import { getWidgetValue, setWidgetValue, widgetsOf } from '../graph/schema.js';
import { fixtureDefs, readFixture } from '../test/fixtures.js';
import { convertToSubgraph, unpackSubgraph } from './convert.js';
import { definitionGraph, findDefinition, INPUT_NODE, OUTPUT_NODE, registerSubgraphDefs, toDefinition }
  from './definition.js';
import { addSlot, moveSlot, promoteWidget, removeSlot, renameSlot, syncInstances } from './io.js';
import { isInner, shownNodeId } from './exec_ids.js';
import { emptyExecState } from '../app/document.js';
import { WorkflowDoc } from '../app/document.js';
import { enterSubgraph, execView, exitSubgraph, subgraphPath } from './navigate.js';

function txt2img() {
  const defs = fixtureDefs();
  const graph = loadWorkflow(readFixture('default_workflow.json'), { defs });
  return { defs, graph };
}

const linkOf = (graph, node, name) => graph.links.get(node.inputs.find((s) => s.name === name).link);

test('converting the encoders and the sampler makes one instance wired where they were', () => {
  const { defs, graph } = txt2img();
  const { definition, instance } = convertToSubgraph(graph, [6, 7, 3], defs);
  assert.deepEqual(definition.inputs.map((s) => s.name).sort(), ['clip', 'latent_image', 'model']);
  assert.equal(definition.inputs.length, 3, 'model, latent and one clip input for both encoders');
  assert.equal(definition.inputs.find((s) => s.name === 'clip').linkIds.length, 2);
  assert.deepEqual(definition.outputs.map((s) => [s.name, s.type]), [['LATENT', 'LATENT']]);
  assert.deepEqual([...graph.nodes.keys()].sort(), [4, 5, 8, 9, instance.id].sort());
  assert.equal(linkOf(graph, graph.getNode(8), 'samples').origin_id, instance.id);
  assert.equal(linkOf(graph, instance, 'clip').origin_id, 4);
  assert.equal(linkOf(graph, instance, 'clip').origin_slot, 1);
  assert.deepEqual(definition.nodes.map((n) => n.id).sort(), [3, 6, 7]);
  assert.ok(definition.links.every((l) => typeof l === 'object' && 'origin_id' in l), 'links as objects (schema 1)');
  // the saved workflow carries the definition, and reads back to the same instance
  const saved = saveWorkflow(graph, { defs });
  assert.equal(saved.definitions.subgraphs[0].id, instance.type);
  const again = loadWorkflow(JSON.parse(JSON.stringify(saved)), { defs });
  assert.equal(again.getNode(instance.id).type, definition.id);
});

test('a promoted widget shows on each instance with its own value, and unpacking gives it back to the inner widget',
  () => {
    const { defs, graph } = txt2img();
    const { definition, instance } = convertToSubgraph(graph, [3], defs);
    const inner = definitionGraph(definition, defs);
    const sampler = inner.getNode(3);
    const seed = widgetsOf(sampler, defs, inner).find((w) => w.name === 'seed');
    promoteWidget(inner, 3, seed);
    const after = toDefinition(inner, definition, defs);
    const def = syncInstances(graph, definition, after, defs);
    Object.assign(findDefinition(graph, definition.id), after);
    assert.deepEqual(def.widgets.map((w) => w.name), ['seed']);
    assert.equal(getWidgetValue(instance, def.widgets[0]), getWidgetValue(sampler, seed), 'starts at the inner value');
    assert.equal(linkOf(graph, instance, 'model').origin_id, 4, 'links kept through the sync');
    setWidgetValue(instance, def.widgets[0], 777);
    const saved = saveWorkflow(graph, { defs });
    assert.deepEqual(saved.nodes.find((n) => n.id === instance.id).widgets_values_named, { seed: 777 });

    const nodes = unpackSubgraph(graph, instance.id, defs);
    assert.equal(nodes.length, 1);
    const unpacked = nodes[0];
    assert.equal(getWidgetValue(unpacked, widgetsOf(unpacked, defs, graph).find((w) => w.name === 'seed')), 777);
    assert.equal(linkOf(graph, unpacked, 'model').origin_id, 4);
    assert.equal(linkOf(graph, unpacked, 'positive').origin_id, 6);
    assert.equal(linkOf(graph, graph.getNode(8), 'samples').origin_id, unpacked.id);
    assert.ok(!graph.getNode(instance.id));
  });

test('inputs and outputs can be added, renamed, reordered and removed; instances keep their links by slot', () => {
  const { defs, graph } = txt2img();
  const { definition, instance } = convertToSubgraph(graph, [6, 7, 3], defs);
  const inner = definitionGraph(definition, defs);
  const clip = definition.inputs.findIndex((s) => s.name === 'clip');
  assert.equal(renameSlot(inner, 'input', clip, 'text encoder'), 'text encoder');
  moveSlot(inner, 'input', clip, 0);
  const extra = addSlot(inner, 'output', 'LATENT', 'LATENT');
  assert.equal(inner.getNode(OUTPUT_NODE).inputs[extra].name, 'LATENT_1', 'names are made unique');
  removeSlot(inner, 'output', extra);
  const after = toDefinition(inner, definition, defs);
  assert.equal(after.inputs[0].name, 'text encoder');
  assert.ok(after.links.filter((l) => l.origin_id === INPUT_NODE && l.origin_slot === 0).length === 2,
    'the moved input\'s links follow it');
  syncInstances(graph, definition, after, defs);
  assert.equal(instance.inputs[0].name, 'text encoder');
  assert.equal(linkOf(graph, instance, 'text encoder').origin_slot, 1, 'still the loader\'s CLIP');
  assert.equal(linkOf(graph, instance, 'model').origin_slot, 0);
});

test('registering a workflow\'s definitions gives instances a node definition', () => {
  const { defs, graph } = txt2img();
  const { definition } = convertToSubgraph(graph, [3], defs, { name: 'Sampler' });
  const fresh = fixtureDefs();
  registerSubgraphDefs(graph, fresh);
  const def = fresh.get(definition.id);
  assert.equal(def.displayName, 'Sampler');
  assert.deepEqual(def.sockets.map((s) => s.name).sort(), ['latent_image', 'model', 'negative', 'positive']);
  assert.deepEqual(def.outputs.map((o) => o.type), ['LATENT']);
});

test('execution ids of inner nodes show on the instance at the top and on the inner node inside it', () => {
  assert.equal(shownNodeId('12:5'), 12);
  assert.equal(shownNodeId('9'), 9);
  assert.equal(shownNodeId('12:5', [12]), 5);
  assert.equal(shownNodeId('12:5:3', [12]), 5);
  assert.equal(shownNodeId('12:5:3', [12, 5]), 3);
  assert.equal(shownNodeId('7:1', [12]), null);
  assert.equal(shownNodeId('12', [12]), null);
  assert.ok(isInner('12:5') && !isInner('12') && !isInner('12:5', [12]));
});

test('execution state of inner nodes shows on the instance at the top and on the inner node inside', () => {
  const exec = emptyExecState();
  exec.running = '12:3';
  exec.progress.set('12:3', 0.5);
  exec.outputs.set('12:9', [{ filename: 'a.png' }]);
  exec.outputs.set(9, [{ filename: 'top.png' }]);
  exec.errors.set('12:6', { inputs: new Set(['text']), messages: ['bad text'] });
  exec.errors.set('12:7', { inputs: new Set(), messages: ['bad too'] });
  const top = execView(exec, []);
  assert.equal(top.running, 12);
  assert.equal(top.progress.get(12), 0.5);
  assert.deepEqual(top.outputs.get(9), [{ filename: 'top.png' }], 'a top-level node keeps its own');
  assert.deepEqual(top.errors.get(12).messages, ['bad text', 'bad too']);
  const inside = execView(exec, [12]);
  assert.equal(inside.running, 3);
  assert.deepEqual(inside.outputs.get(9), [{ filename: 'a.png' }]);
  assert.ok(inside.errors.get(6).inputs.has('text'));
  assert.ok(!inside.progress.has(12));
});

test('a widget promoted two levels down reaches the nested instance, and the saved workflow keeps both levels', () => {
  const { defs, graph } = txt2img();
  const doc = WorkflowDoc.fromWorkflow(saveWorkflow(graph, { defs }), { defs, name: 'nested' });
  const { definition: a, instance: ai } = convertToSubgraph(doc.graph, [3], defs, { name: 'A' });
  const { definition: b, instance: bi } = convertToSubgraph(doc.graph, [ai.id, 8], defs, { name: 'B' });
  assert.ok(enterSubgraph(doc, bi.id) && enterSubgraph(doc, ai.id));
  assert.deepEqual(subgraphPath(doc), [bi.id, ai.id]);
  promoteWidget(doc.graph, 3, widgetsOf(doc.graph.getNode(3), defs, doc.graph).find((w) => w.name === 'seed'));
  exitSubgraph(doc, 1);
  const nested = doc.graph.getNode(ai.id);
  assert.deepEqual(defs.get(a.id).widgets.map((w) => w.name), ['seed']);
  setWidgetValue(nested, defs.get(a.id).widgets[0], 99);
  exitSubgraph(doc, 0);
  const saved = doc.toWorkflow();
  const savedB = saved.definitions.subgraphs.find((d) => d.id === b.id);
  const inner = savedB.nodes.find((n) => n.type === a.id);
  assert.deepEqual(inner.widgets_values, [99]);
  assert.equal(saved.definitions.subgraphs.find((d) => d.id === a.id).inputs.at(-1).name, 'seed');
});

test('undo and redo inside an open subgraph stay inside it', () => {
  const { defs, graph } = txt2img();
  const { instance } = convertToSubgraph(graph, [6, 7, 3], defs);
  const doc = WorkflowDoc.fromWorkflow(JSON.parse(JSON.stringify(saveWorkflow(graph, { defs }))), { defs, name: 't' });
  assert.ok(enterSubgraph(doc, instance.id));
  const steps = (g) => {
    const sampler = [...g.nodes.values()].find((n) => n.type === 'KSampler');
    return [sampler, widgetsOf(sampler, defs, g).find((w) => w.name === 'steps')];
  };
  const [sampler, widget] = steps(doc.graph);
  const before = getWidgetValue(sampler, widget);
  setWidgetValue(sampler, widget, before + 7);
  assert.ok(doc.checkpoint());
  assert.ok(doc.undo());
  assert.deepEqual(subgraphPath(doc), [instance.id], 'still inside the subgraph after undo');
  assert.equal(getWidgetValue(...steps(doc.graph)), before);
  assert.ok(doc.redo());
  assert.deepEqual(subgraphPath(doc), [instance.id]);
  assert.equal(getWidgetValue(...steps(doc.graph)), before + 7);
  exitSubgraph(doc, 0);
  assert.deepEqual(subgraphPath(doc), []);
});
