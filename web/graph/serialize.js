// ComfyUI UI workflow <-> Graph. Writes version 0.4 (what ComfyUI's frontend writes); reads 0.4, older files
// (pos/size as {0:x,1:y}, boolean control values) and schema version 1 (state, link objects, top-level reroutes).

import { Graph, normId } from './model.js';
import { namedWidgetValues, normalizeWidgetValues, widgetsOf } from './schema.js';

export class WorkflowFormatError extends Error {
  constructor(message) {
    super(message);
    this.name = 'WorkflowFormatError';
  }
}

/** 'workflow' (UI format), 'api' (an API prompt: every value has class_type and inputs), or null. */
export function detectFormat(json) {
  if (!json || typeof json !== 'object' || Array.isArray(json)) return null;
  if (Array.isArray(json.nodes) && (Array.isArray(json.links) || json.version === 1)) return 'workflow';
  const values = Object.values(json);
  if (values.length && values.every((v) => v && typeof v === 'object' && 'class_type' in v && 'inputs' in v)) {
    return 'api';
  }
  return null;
}

function pair(v, what) {
  if (Array.isArray(v)) return [Number(v[0]), Number(v[1])];
  if (v && typeof v === 'object' && '0' in v && '1' in v) return [Number(v[0]), Number(v[1])];
  throw new WorkflowFormatError(`${what} is not a pair of numbers: ${JSON.stringify(v)}`);
}

function readLink(l) {
  if (Array.isArray(l)) {
    const [id, origin_id, origin_slot, target_id, target_slot, type] = l;
    return { id, origin_id, origin_slot, target_id, target_slot, type };
  }
  if (l && typeof l === 'object') {
    const { id, origin_id, origin_slot, target_id, target_slot, type, parentId } = l;
    return { id, origin_id, origin_slot, target_id, target_slot, type, parentId };
  }
  throw new WorkflowFormatError(`a link is neither an array nor an object: ${JSON.stringify(l)}`);
}

/**
 * Builds a Graph from a UI workflow (0.4 or schema 1). With `defs`, widgets_values are normalised to the
 * array form in widget order. Links are the source of truth: slot references are rebuilt from them, and
 * links to missing nodes or slots are dropped (as ComfyUI's link repair does).
 */
export function loadWorkflow(json, { defs = null } = {}) {
  if (detectFormat(json) !== 'workflow') {
    throw new WorkflowFormatError('not a ComfyUI workflow: expected an object with "nodes" and "links"');
  }
  const schema1 = json.version === 1;
  const graph = new Graph({ id: json.id ?? null });
  graph.revision = json.revision ?? 0;
  graph.config = { ...(json.config ?? {}) };
  const extra = { ...(json.extra ?? {}) };
  const rawReroutes = schema1 ? json.reroutes ?? [] : extra.reroutes ?? [];
  const linkExtensions = schema1 ? [] : extra.linkExtensions ?? [];
  delete extra.reroutes;
  delete extra.linkExtensions;
  graph.extra = extra;
  if (json.floatingLinks?.length) graph.floatingLinks = json.floatingLinks;
  if (json.definitions) graph.definitions = json.definitions;
  if (json.models) graph.models = json.models;

  for (const raw of json.nodes) {
    if (!raw || raw.type === undefined) throw new WorkflowFormatError(`a node has no type: ${JSON.stringify(raw)}`);
    const fields = { ...raw, pos: pair(raw.pos ?? [0, 0], `node ${raw.id} pos`),
      size: pair(raw.size ?? [200, 60], `node ${raw.id} size`) };
    const node = graph.addNode(fields);
    for (const inp of node.inputs) inp.link = null;
    for (const out of node.outputs) out.links = [];
    if (defs) normalizeWidgetValues(node, defs.get(node.type));
  }

  for (const r of rawReroutes) {
    graph.reroutes.set(r.id, { id: r.id, pos: pair(r.pos, `reroute ${r.id} pos`),
      ...(r.parentId !== undefined && r.parentId !== null ? { parentId: r.parentId } : {}) });
  }
  const parents = new Map(linkExtensions.map((e) => [e.id, e.parentId]));
  for (const raw of json.links ?? []) {
    if (raw === null) continue;
    const l = readLink(raw);
    const origin = graph.getNode(l.origin_id);
    const target = graph.getNode(l.target_id);
    const out = origin?.outputs[l.origin_slot];
    const inp = target?.inputs[l.target_slot];
    if (!out || !inp || inp.link !== null) continue;
    const link = { id: l.id, origin_id: origin.id, origin_slot: l.origin_slot, target_id: target.id,
      target_slot: l.target_slot, type: l.type ?? out.type };
    const parentId = l.parentId ?? parents.get(l.id);
    if (parentId !== undefined && parentId !== null && graph.reroutes.has(parentId)) link.parentId = parentId;
    graph.links.set(link.id, link);
    out.links.push(link.id);
    inp.link = link.id;
  }

  const s = json.state ?? {};
  const maxKey = (m) => Math.max(0, ...[...m.keys()].filter((k) => typeof k === 'number'));
  graph.state.lastNodeId = Math.max(Number(json.last_node_id ?? s.lastNodeId ?? 0) || 0, maxKey(graph.nodes));
  graph.state.lastLinkId = Math.max(Number(json.last_link_id ?? s.lastLinkId ?? 0) || 0, maxKey(graph.links));
  graph.state.lastRerouteId = Math.max(Number(s.lastRerouteId ?? 0) || 0, maxKey(graph.reroutes));
  graph.groups = (json.groups ?? []).map((g, i) => ({
    ...g, id: g.id ?? i + 1, title: g.title ?? 'Group', bounding: [...(g.bounding ?? [0, 0, 200, 100])],
    flags: { ...(g.flags ?? {}) },
  }));
  graph.state.lastGroupId = Math.max(Number(s.lastGroupId ?? 0) || 0, ...graph.groups.map((g) => Number(g.id) || 0));
  graph.pruneReroutes();
  return graph;
}

const ORDERED_NODE_KEYS = ['id', 'type', 'pos', 'size', 'flags', 'order', 'mode', 'inputs', 'outputs', 'properties',
  'widgets_values'];

function saveNode(node, order, defs, graph) {
  const out = {};
  for (const k of ORDERED_NODE_KEYS) out[k] = node[k];
  out.order = order;
  out.pos = [...node.pos];
  out.size = [...node.size];
  out.flags = { ...node.flags };
  out.inputs = node.inputs.map((i) => ({ ...i }));
  out.outputs = node.outputs.map((o, idx) => ({ ...o, links: [...o.links], slot_index: o.slot_index ?? idx }));
  out.properties = { ...node.properties };
  out.widgets_values = Array.isArray(node.widgets_values) ? [...node.widgets_values] : node.widgets_values;
  for (const [k, v] of Object.entries(node)) if (!(k in out) && k !== 'widgets_values_named') out[k] = v;
  const def = defs?.get(node.type);
  if (def && !def.virtual && Array.isArray(node.widgets_values)) {
    out.widgets_values_named = namedWidgetValues(node, widgetsOf(node, defs, graph));
  }
  return out;
}

/** The graph as a version 0.4 UI workflow (plain JSON; nothing shared with the graph). */
export function saveWorkflow(graph, { defs = null, ds = null } = {}) {
  const order = new Map(graph.executionOrder().map((id, i) => [id, i]));
  const links = [...graph.links.values()].map((l) => [l.id, l.origin_id, l.origin_slot, l.target_id, l.target_slot,
    l.type]);
  const extra = structuredClone(graph.extra);
  if (ds) extra.ds = { scale: ds.scale, offset: [ds.offset[0], ds.offset[1]] };
  if (graph.reroutes.size) {
    const through = graph.rerouteLinkIds();
    extra.reroutes = [...graph.reroutes.values()].map((r) => ({
      id: r.id, ...(r.parentId !== undefined ? { parentId: r.parentId } : {}), pos: [...r.pos],
      linkIds: through.get(r.id),
    }));
    extra.linkExtensions = [...graph.links.values()].filter((l) => l.parentId !== undefined)
      .map((l) => ({ id: l.id, parentId: l.parentId }));
  }
  const out = {
    ...(graph.id ? { id: graph.id } : {}),
    revision: graph.revision,
    last_node_id: graph.state.lastNodeId,
    last_link_id: graph.state.lastLinkId,
    nodes: [...graph.nodes.values()].map((n) => saveNode(n, order.get(n.id), defs, graph)),
    links,
    groups: graph.groups.map((g) => structuredClone(g)),
    config: structuredClone(graph.config),
    extra,
    version: 0.4,
  };
  if (graph.floatingLinks?.length) out.floatingLinks = structuredClone(graph.floatingLinks);
  if (graph.definitions) out.definitions = structuredClone(graph.definitions);
  if (graph.models) out.models = structuredClone(graph.models);
  return out;
}

/**
 * Builds a graph from an API prompt ({id: {class_type, inputs}}), as ComfyUI's loadApiJson does: literal inputs
 * become widget values, [id, slot] pairs become links, nodes are laid out in columns by depth.
 * `sizeOf(node, def)` gives each node's size (the view's layout). Unknown classes become placeholder nodes.
 */
export function graphFromApiPrompt(prompt, { defs, sizeOf }) {
  const graph = new Graph();
  const ids = Object.keys(prompt);
  const depth = new Map();
  const depthOf = (id, seen = new Set()) => {
    if (depth.has(id)) return depth.get(id);
    if (seen.has(id)) return 0;
    seen.add(id);
    let d = 0;
    for (const v of Object.values(prompt[id]?.inputs ?? {})) {
      if (isLinkValue(v) && prompt[v[0]]) d = Math.max(d, depthOf(String(v[0]), seen) + 1);
    }
    depth.set(id, d);
    return d;
  };
  const columns = new Map();
  for (const id of ids) {
    const d = depthOf(id);
    if (!columns.has(d)) columns.set(d, []);
    columns.get(d).push(id);
  }
  for (const [d, colIds] of [...columns].sort((a, b) => a[0] - b[0])) {
    let y = 0;
    for (const id of colIds) {
      const entry = prompt[id];
      const def = defs.get(entry.class_type);
      const node = graph.addNode({
        id: normId(id), type: entry.class_type, pos: [d * 380, y],
        inputs: def ? def.sockets.map((s) => ({ name: s.name, type: s.type, link: null })) : [],
        outputs: def ? def.outputs.map((o, i) => ({ name: o.name, type: o.type, links: [], slot_index: i })) : [],
        properties: { 'Node name for S&R': entry.class_type },
        widgets_values: def ? (def.layoutForNamed?.(entry.inputs) ?? def.widgets).map((w) => (w.inPrompt && w.name in entry.inputs
          && !isLinkValue(entry.inputs[w.name]) ? unwrapValue(entry.inputs[w.name]) : w.default)) : [],
        ...(entry._meta?.title && entry._meta.title !== def?.displayName ? { title: entry._meta.title } : {}),
      });
      node.size = sizeOf(node, def);
      y += node.size[1] + 60;
    }
  }
  for (const id of ids) {
    const target = graph.getNode(id);
    const def = defs.get(target.type);
    for (const [name, v] of Object.entries(prompt[id].inputs ?? {})) {
      if (!isLinkValue(v) || !graph.getNode(v[0])) continue;
      let slot = target.inputs.findIndex((i) => i.name === name);
      if (slot < 0) {
        const w = def?.widgets.find((x) => x.name === name);
        if (!w) continue;
        slot = graph.widgetInputSlot(target.id, name, w.inputType);
      }
      const origin = graph.getNode(v[0]);
      if (!origin.outputs[v[1]]) origin.outputs[v[1]] = { name: `out${v[1]}`, type: '*', links: [] };
      try {
        graph.connect(origin.id, v[1], target.id, slot);
      } catch {
        // a type mismatch in someone's API file: leave that input unconnected rather than refuse the whole file
      }
    }
  }
  return graph;
}

function isLinkValue(v) {
  return Array.isArray(v) && v.length === 2 && (typeof v[0] === 'string' || typeof v[0] === 'number')
    && typeof v[1] === 'number';
}

function unwrapValue(v) {
  return v && typeof v === 'object' && '__value__' in v ? v.__value__ : v;
}
