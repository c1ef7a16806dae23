// Editing a subgraph's interface while it is open (on the Graph definitionGraph made): add, rename, reorder and
// remove its inputs and outputs (the slots of the boundary nodes), and promote an inner widget to the instances
// (a new input linked to that widget). Then syncInstances brings the workflow's instances in line with the edited
// definition: their slots follow it by slot id (a renamed input keeps its link), promoted values by name.

import { computeSize, nodeTitle } from '../canvas/layout.js';
import { GraphError } from '../graph/model.js';
import { getWidgetValue } from '../graph/schema.js';
import { INPUT_NODE, instanceNodeDef, instancesOf, OUTPUT_NODE, uuid } from './definition.js';

function boundary(graph, kind) {
  const node = graph.getNode(kind === 'input' ? INPUT_NODE : OUTPUT_NODE);
  if (!node) throw new GraphError('not_a_subgraph', 'this graph is not an open subgraph');
  return { node, slots: kind === 'input' ? node.outputs : node.inputs };
}

function freeName(slots, name, except = null) {
  const taken = new Set(slots.filter((s) => s !== except).map((s) => s.name));
  let out = name;
  for (let i = 1; taken.has(out); i++) out = `${name}_${i}`;
  return out;
}

/** Links that end or start at a boundary slot carry its index: renumber them after a reorder or removal. */
function renumber(graph, nodeId, kind) {
  const { slots } = boundary(graph, kind);
  slots.forEach((slot, index) => {
    const ids = kind === 'input' ? slot.links : (slot.link === null ? [] : [slot.link]);
    for (const lid of ids) {
      const link = graph.links.get(lid);
      if (!link) continue;
      if (kind === 'input') link.origin_slot = index;
      else link.target_slot = index;
    }
  });
}

/** A new input (kind 'input') or output ('output') of the subgraph. Returns its index. */
export function addSlot(graph, kind, name, type) {
  const { slots } = boundary(graph, kind);
  const slot = kind === 'input' ? { name: freeName(slots, name), type, links: [], slotId: uuid() }
    : { name: freeName(slots, name), type, link: null, slotId: uuid() };
  slots.push(slot);
  return slots.length - 1;
}

export function renameSlot(graph, kind, index, name) {
  const { slots } = boundary(graph, kind);
  const slot = slots[index];
  if (!slot) throw new GraphError('no_slot', `the subgraph has no ${kind} ${index}`);
  slot.name = freeName(slots, String(name).trim() || slot.name, slot);
  delete slot.label;
  return slot.name;
}

/** Moves slot `from` to position `to` (its links follow). */
export function moveSlot(graph, kind, from, to) {
  const { node, slots } = boundary(graph, kind);
  if (!slots[from] || to < 0 || to >= slots.length) throw new GraphError('no_slot', `cannot move ${kind} ${from}`);
  const [slot] = slots.splice(from, 1);
  slots.splice(to, 0, slot);
  renumber(graph, node.id, kind);
}

export function removeSlot(graph, kind, index) {
  const { node, slots } = boundary(graph, kind);
  if (!slots[index]) throw new GraphError('no_slot', `the subgraph has no ${kind} ${index}`);
  if (kind === 'input') graph.disconnectOutput(node.id, index);
  else graph.disconnectInput(node.id, index);
  slots.splice(index, 1);
  renumber(graph, node.id, kind);
}

/** Shows an inner widget on the instances: a new input, linked to that widget's input. Returns the input index. */
export function promoteWidget(graph, nodeId, widget) {
  const node = graph.getNode(nodeId);
  if (!node) throw new GraphError('no_node', `no node ${nodeId}`);
  const slot = graph.widgetInputSlot(node.id, widget.name, widget.inputType ?? widget.kind);
  if (node.inputs[slot].link !== null) {
    throw new GraphError('already_linked', `${widget.name} is already fed by a link`);
  }
  const index = addSlot(graph, 'input', widget.name, node.inputs[slot].type);
  graph.connect(INPUT_NODE, index, node.id, slot);
  return index;
}

/**
 * After `before` became `after` (same id): every instance in `graph` (or in each of a list of graphs) gets the new slots (matched by slot id, then
 * by name: links kept, renamed slots renamed), its promoted values kept by input name (new ones take the inner
 * widget's value), and `defs` the new instance node definition.
 */
export function syncInstances(graph, before, after, defs) {
  const oldDef = instanceNodeDef(before, defs);
  const newDef = instanceNodeDef(after, defs);
  defs.set(after.id, newDef);
  const oldName = (list, slot) => list.find((s) => s.id === slot.id)?.name ?? slot.name;
  const graphs = Array.isArray(graph) ? [...new Set(graph)] : [graph];
  for (const [home, instance] of graphs.flatMap((g) => instancesOf(g, after.id).map((node) => [g, node]))) {
    const values = new Map(oldDef.widgets.map((w) => [w.name, getWidgetValue(instance, w)]));
    const renamed = new Map((after.inputs ?? []).map((s) => [oldName(before.inputs ?? [], s), s.name]));
    for (const w of oldDef.widgets) if (renamed.has(w.name)) values.set(renamed.get(w.name), values.get(w.name));
    const inputLinks = new Map(instance.inputs.map((s) => [s.name, s.link === null ? null : home.links.get(s.link)]));
    const outputLinks = new Map(instance.outputs.map((s) => [s.name, s.links.map((l) => home.links.get(l))]));
    for (const s of instance.inputs) if (s.link !== null) home.removeLink(s.link);
    for (const s of instance.outputs) for (const l of [...s.links]) home.removeLink(l);
    const shown = new Set(newDef.widgets.map((w) => w.name)); // promoted inputs: widget inputs, drawn as widgets
    instance.inputs = (after.inputs ?? []).map((s) => ({ name: s.name, type: s.type, link: null,
      ...(shown.has(s.name) ? { widget: { name: s.name } } : {}) }));
    instance.outputs = (after.outputs ?? []).map((s, i) => ({ name: s.name, type: s.type, links: [], slot_index: i }));
    instance.widgets_values = newDef.widgets.map((w) => (values.has(w.name) ? values.get(w.name) : w.default));
    const fits = computeSize(instance, newDef.widgets, nodeTitle(instance, newDef)); // room for new slots and widgets
    instance.size = [Math.max(instance.size[0], fits[0]), Math.max(instance.size[1], fits[1])];
    const reconnect = (a, as, b, bs) => {
      try { home.connect(a, as, b, bs); } catch { /* the new type no longer fits: left open */ }
    };
    (after.inputs ?? []).forEach((s, k) => {
      const link = inputLinks.get(oldName(before.inputs ?? [], s));
      if (link) reconnect(link.origin_id, link.origin_slot, instance.id, k);
    });
    (after.outputs ?? []).forEach((s, k) => {
      for (const link of outputLinks.get(oldName(before.outputs ?? [], s)) ?? []) {
        if (link) reconnect(instance.id, k, link.target_id, link.target_slot);
      }
    });
  }
  return newDef;
}
