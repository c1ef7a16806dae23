// Edit commands on a workflow document. Each is one undo step: it edits, then calls doc.checkpoint().
// They know nothing of the DOM; the keymap, menus and canvas call them.

import { alignNodes, distributeNodes } from '../graph/align.js';
import { copyNodes, pasteNodes } from '../graph/clipboard.js';
import { Mode } from '../graph/model.js';
import { getWidgetValue, newNodeFields, WidgetKind, widgetsOf } from '../graph/schema.js';
import { computeSize, nodeTitle, TITLE_H } from '../canvas/layout.js';
import { clampValue } from '../widgets/number.js';
import { applyDefaults } from './model_defaults.js';

export const CLIPBOARD_KEY = 'chisel.clipboard';

/** A new node of `type` at `pos` (graph space), sized for its widgets, with the defaults the loaded model
 * suggests (doc.modelDefaults, app/model_hints.js). Not a checkpoint by itself. */
export function createNode(doc, type, pos) {
  const def = doc.defs.get(type);
  if (!def) throw new Error(`unknown node type "${type}"`);
  const fields = newNodeFields(def, pos);
  if (doc.modelDefaults) applyDefaults(fields, def, doc.modelDefaults);
  const node = doc.graph.addNode(fields);
  node.size = computeSize(node, widgetsOf(node, doc.defs, doc.graph), nodeTitle(node, def));
  return node;
}

export function addNode(doc, type, pos) {
  const node = createNode(doc, type, pos);
  doc.selection = new Set([node.id]);
  doc.checkpoint();
  return node;
}

export function deleteSelection(doc) {
  for (const id of doc.selection) doc.graph.removeNode(id);
  for (const g of doc.selectedGroups) doc.graph.removeGroup(g);
  for (const id of doc.selectedReroutes) doc.graph.removeReroute(id);
  doc.selection.clear();
  doc.selectedGroups.clear();
  doc.selectedReroutes.clear();
  return doc.checkpoint();
}

export function copySelection(doc, storage) {
  if (!doc.selection.size) return null;
  const clip = copyNodes(doc.graph, [...doc.selection]);
  storage.setItem(CLIPBOARD_KEY, JSON.stringify(clip));
  return clip;
}

export function pasteClipboard(doc, storage, at, { keepInputLinks = false } = {}) {
  const raw = storage.getItem(CLIPBOARD_KEY);
  if (!raw) return [];
  const added = pasteNodes(doc.graph, JSON.parse(raw), at, { keepInputLinks });
  doc.selection = new Set(added.map((n) => n.id));
  doc.checkpoint();
  return added;
}

/** Copies the selection next to itself (links among the copies kept). */
export function duplicateSelection(doc) {
  const nodes = doc.selectedNodes();
  if (!nodes.length) return [];
  const clip = copyNodes(doc.graph, nodes.map((n) => n.id));
  const x = Math.min(...nodes.map((n) => n.pos[0])) + 30;
  const y = Math.min(...nodes.map((n) => n.pos[1])) + 30;
  const added = pasteNodes(doc.graph, clip, [x, y]);
  doc.selection = new Set(added.map((n) => n.id));
  doc.checkpoint();
  return added;
}

/** Sets the selection's mode, or back to ALWAYS when every selected node already has it (Ctrl+M / Ctrl+B). */
export function toggleMode(doc, mode) {
  const nodes = doc.selectedNodes();
  if (!nodes.length) return false;
  const next = nodes.every((n) => n.mode === mode) ? Mode.ALWAYS : mode;
  for (const n of nodes) n.mode = next;
  return doc.checkpoint();
}

export function setMode(doc, nodes, mode) {
  for (const n of nodes) n.mode = mode;
  return doc.checkpoint();
}

export function toggleCollapse(doc, nodes = doc.selectedNodes()) {
  for (const n of nodes) {
    if (n.flags.collapsed) delete n.flags.collapsed;
    else n.flags.collapsed = true;
  }
  return doc.checkpoint();
}

export function togglePin(doc, nodes = doc.selectedNodes()) {
  for (const n of nodes) {
    if (n.flags.pinned) delete n.flags.pinned;
    else n.flags.pinned = true;
  }
  return doc.checkpoint();
}

/** A group around the selected nodes (Ctrl+G). */
export function groupSelection(doc, title = 'Group') {
  const nodes = doc.selectedNodes();
  if (!nodes.length) return null;
  const [x, y, w, h] = doc.graph.boundsOf(nodes, TITLE_H);
  const pad = 10;
  const group = doc.graph.addGroup({ title, bounding: [x - pad, y - pad - 34, w + 2 * pad, h + 2 * pad + 34] });
  doc.checkpoint();
  return group;
}

export function alignSelection(doc, edge) {
  alignNodes(doc.selectedNodes(), edge);
  return doc.checkpoint();
}

export function distributeSelection(doc, axis) {
  distributeNodes(doc.selectedNodes(), axis, TITLE_H);
  return doc.checkpoint();
}

export function selectAll(doc) {
  doc.selection = new Set(doc.graph.nodes.keys());
}

export function clearGraph(doc) {
  for (const id of [...doc.graph.nodes.keys()]) doc.graph.removeNode(id);
  doc.graph.groups = [];
  doc.graph.reroutes.clear();
  doc.selection.clear();
  return doc.checkpoint();
}

/** Connects, records an undo step, and returns the link (throws GraphError when refused). */
export function connect(doc, originId, originSlot, targetId, targetSlot) {
  const link = doc.graph.connect(originId, originSlot, targetId, targetSlot);
  doc.checkpoint();
  return link;
}

/** The first input of `node` an output of `type` may feed (sockets first, then matching widgets), or -1. */
export function firstCompatibleInput(doc, node, type, typesCompatible) {
  const socket = node.inputs.findIndex((i) => !i.widget && typesCompatible(type, i.type));
  if (socket >= 0) return socket;
  const widget = widgetsOf(node, doc.defs, doc.graph).find((w) => w.inputType && type !== '*'
    && typesCompatible(type, w.inputType));
  return widget ? doc.graph.widgetInputSlot(node.id, widget.name, widget.inputType) : -1;
}

export function firstCompatibleOutput(node, type, typesCompatible) {
  return node.outputs.findIndex((o) => typesCompatible(o.type, type));
}

/** A PrimitiveNode just linked to a widget takes that widget's value and range (its widget is the target's, with
 * min/max: schema.js widgetsOf), as ComfyUI's does: its first link takes the target's current value; a further
 * link keeps the primitive's value, brought within the new target's min/max. */
export function seedPrimitive(doc, link) {
  const origin = doc.graph.getNode(link.origin_id);
  if (!doc.defs.get(origin?.type)?.primitive) return;
  const target = doc.graph.getNode(link.target_id);
  const name = target.inputs[link.target_slot]?.widget?.name;
  const spec = name && widgetsOf(target, doc.defs, doc.graph).find((w) => w.name === name);
  if (!spec) return;
  const had = Array.isArray(origin.widgets_values) && origin.widgets_values.length;
  const first = (origin.outputs[0]?.links ?? []).length <= 1;
  if (had && !first) {
    if (spec.kind === WidgetKind.INT || spec.kind === WidgetKind.FLOAT) {
      origin.widgets_values[0] = clampValue(spec, origin.widgets_values[0]);
    }
    return;
  }
  origin.widgets_values = [getWidgetValue(target, spec), had ? origin.widgets_values[1] ?? 'fixed' : 'fixed'];
  if (!origin.title) origin.title = name;
  const size = computeSize(origin, widgetsOf(origin, doc.defs, doc.graph), origin.title);
  origin.size = [Math.max(origin.size[0], size[0]), Math.max(origin.size[1], size[1])];
}
