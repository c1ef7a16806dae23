// Selected nodes -> a new subgraph and one instance of it in their place; an instance -> its nodes again.
// Links that cross the selection's boundary become the subgraph's inputs (one per distinct source) and outputs
// (one per distinct inner output), named after the slots they connect, made unique as ComfyUI does ("text_1").

import { GraphError } from '../graph/model.js';
import { getWidgetValue, widgetsOf } from '../graph/schema.js';
import { definitionGraph, findDefinition, INPUT_NODE, INPUT_TYPE, instanceNodeDef, OUTPUT_NODE, OUTPUT_TYPE,
  promotedInputs, putDefinition, registerSubgraphDefs, toDefinition, uuid } from './definition.js';
import { loadWorkflow } from '../graph/serialize.js';

const IO_GAP = 220;

function uniqueName(name, taken) {
  let out = name || 'input';
  for (let i = 1; taken.has(out); i++) out = `${name}_${i}`;
  taken.add(out);
  return out;
}

/**
 * Replaces the nodes `ids` of `graph` by an instance of a new subgraph holding them. Returns {definition, instance}.
 * `sizeOf(node, def)` sizes the instance (the view's layout); `defs` gets the new instance node definition; `home`
 * is the workflow's own graph when `graph` is an open subgraph.
 */
export function convertToSubgraph(graph, ids, defs, { name = 'New Subgraph', sizeOf = null, home = graph } = {}) {
  const chosen = new Set([...ids].map((id) => graph.getNode(id)?.id).filter((id) => id !== undefined));
  if (!chosen.size) throw new GraphError('empty_selection', 'select the nodes to put in the subgraph');
  const inside = (id) => chosen.has(id);
  const links = [...graph.links.values()];
  const incoming = links.filter((l) => !inside(l.origin_id) && inside(l.target_id));
  const outgoing = links.filter((l) => inside(l.origin_id) && !inside(l.target_id));
  const internal = links.filter((l) => inside(l.origin_id) && inside(l.target_id));
  const nodes = [...chosen].map((id) => graph.getNode(id));
  const [x0, y0, w, h] = graph.boundsOf(nodes) ?? [0, 0, 400, 200];

  // the definition's graph: the chosen nodes (same ids), their own links, and the two boundary nodes
  const inputs = groupBySource(incoming);
  const outputs = groupBySource(outgoing);
  const inNames = new Set();
  const outNames = new Set();
  const inSlots = inputs.map(([first]) => {
    const target = graph.getNode(first.target_id).inputs[first.target_slot];
    return { name: uniqueName(target.name, inNames), type: first.type, links: [], slotId: uuid() };
  });
  const outSlots = outputs.map(([first]) => {
    const source = graph.getNode(first.origin_id).outputs[first.origin_slot];
    return { name: uniqueName(source.name, outNames), type: source.type ?? first.type, link: null, slotId: uuid() };
  });
  const json = {
    version: 1, groups: [], extra: {},
    nodes: [...nodes.map((n) => structuredClone(n)),
      { id: INPUT_NODE, type: INPUT_TYPE, pos: [x0 - IO_GAP, y0], size: [160, 80], inputs: [], outputs: inSlots },
      { id: OUTPUT_NODE, type: OUTPUT_TYPE, pos: [x0 + w + 60, y0], size: [160, 80], outputs: [], inputs: outSlots }],
    links: internal.map((l) => ({ ...l })),
    state: { lastNodeId: graph.state.lastNodeId, lastLinkId: graph.state.lastLinkId },
  };
  const inner = loadWorkflow(json, { defs });
  inputs.forEach((group, k) => {
    for (const l of group) inner.connect(INPUT_NODE, k, l.target_id, l.target_slot);
  });
  outputs.forEach(([first], k) => inner.connect(first.origin_id, first.origin_slot, OUTPUT_NODE, k));
  const definition = toDefinition(inner, { id: uuid(), name }, defs);
  putDefinition(home, definition); // the workflow's own graph holds every definition, nested ones too
  const def = instanceNodeDef(definition, defs);
  defs.set(definition.id, def);

  // the instance, wired where the chosen nodes were
  for (const id of chosen) graph.removeNode(id);
  const instance = graph.addNode({
    type: definition.id, pos: [x0 + w / 2 - 100, y0 + h / 2 - 60],
    inputs: definition.inputs.map((s) => ({ name: s.name, type: s.type, link: null,
      ...(def.widgets.some((w2) => w2.name === s.name) ? { widget: { name: s.name } } : {}) })),
    outputs: definition.outputs.map((s, i) => ({ name: s.name, type: s.type, links: [], slot_index: i })),
    properties: {}, widgets_values: def.widgets.map((w2) => w2.default),
  });
  inputs.forEach(([first], k) => graph.connect(first.origin_id, first.origin_slot, instance.id, k));
  outputs.forEach((group, k) => {
    for (const l of group) graph.connect(instance.id, k, l.target_id, l.target_slot);
  });
  if (sizeOf) instance.size = sizeOf(instance, def);
  return { definition, instance };
}

function groupBySource(links) {
  const groups = new Map();
  for (const l of links) {
    const key = `${l.origin_id}:${l.origin_slot}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(l);
  }
  return [...groups.values()];
}

/**
 * Replaces an instance by copies of its definition's nodes (new ids), wired to what the instance was wired to;
 * its promoted widget values go to the inner widgets they feed. Returns the new nodes. The definition stays.
 */
export function unpackSubgraph(graph, instanceId, defs, { home = graph } = {}) {
  const instance = graph.getNode(instanceId);
  const definition = instance && findDefinition(home, instance.type);
  if (!definition) throw new GraphError('not_a_subgraph', `node ${instanceId} is not a subgraph instance`);
  const inner = definitionGraph(definition, defs);
  const promoted = promotedInputs(definition, defs);
  const instanceDef = defs.get(definition.id) ?? instanceNodeDef(definition, defs);
  const values = new Map(instanceDef.widgets.map((w) => [w.name, getWidgetValue(instance, w)]));
  const [ix, iy] = instance.pos;
  const real = [...inner.nodes.values()].filter((n) => n.id !== INPUT_NODE && n.id !== OUTPUT_NODE);
  const [bx, by] = inner.boundsOf(real) ?? [0, 0];
  const newId = new Map();
  for (const node of real) {
    const copy = structuredClone(node);
    copy.id = null;
    copy.pos = [node.pos[0] - bx + ix, node.pos[1] - by + iy];
    for (const s of copy.inputs) s.link = null;
    for (const s of copy.outputs) s.links = [];
    newId.set(node.id, graph.addNode(copy).id);
  }
  // widgets the instance promoted (and left unconnected) take the instance's values
  for (const p of promoted) {
    const inputSlot = instance.inputs.findIndex((s) => s.name === p.input.name);
    if (inputSlot >= 0 && instance.inputs[inputSlot].link !== null) continue;
    for (const lid of inner.getNode(INPUT_NODE).outputs[p.index].links) {
      const l = inner.links.get(lid);
      const node = graph.getNode(newId.get(l.target_id));
      const slot = inner.getNode(l.target_id).inputs[l.target_slot];
      const widget = node && slot.widget && widgetsOf(node, defs, graph).find((x) => x.name === slot.widget.name);
      if (widget && values.has(p.input.name)) node.widgets_values[widget.valueIndex] = values.get(p.input.name);
    }
  }
  const sources = new Map(instance.inputs.map((slot) => {
    const link = slot.link !== null ? graph.links.get(slot.link) : null;
    return [slot.name, link ? [link.origin_id, link.origin_slot] : null];
  }));
  const source = (name) => sources.get(name) ?? null;
  const consumers = instance.outputs.map((o) => o.links.map((lid) => graph.links.get(lid)).filter(Boolean)
    .map((l) => [l.target_id, l.target_slot]));
  graph.removeNode(instance.id);
  const tryConnect = (a, as, b, bs) => {
    try { graph.connect(a, as, b, bs); } catch { /* a type the outer graph no longer allows: left open */ }
  };
  for (const l of inner.links.values()) {
    if (l.target_id === OUTPUT_NODE) continue;
    const target = newId.get(l.target_id);
    if (l.origin_id === INPUT_NODE) {
      const from = source(definition.inputs[l.origin_slot]?.name);
      if (from) tryConnect(from[0], from[1], target, l.target_slot);
    } else {
      tryConnect(newId.get(l.origin_id), l.origin_slot, target, l.target_slot);
    }
  }
  inner.getNode(OUTPUT_NODE).inputs.forEach((slot, k) => {
    const l = slot.link !== null ? inner.links.get(slot.link) : null;
    if (!l) return;
    const from = l.origin_id === INPUT_NODE ? source(definition.inputs[l.origin_slot]?.name)
      : [newId.get(l.origin_id), l.origin_slot];
    if (from) for (const [t, ts] of consumers[k] ?? []) tryConnect(from[0], from[1], t, ts);
  });
  registerSubgraphDefs(graph, defs);
  return [...newId.values()].map((id) => graph.getNode(id));
}
