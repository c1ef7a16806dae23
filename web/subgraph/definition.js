// Subgraph definitions as ComfyUI 1.58 saves them (`definitions.subgraphs[]` of a workflow: id, name, nodes,
// links as objects, an input node -10 and an output node -20, declared inputs and outputs) and the Graph the editor
// shows for one of them: the definition's nodes plus two boundary nodes whose slots are its inputs and outputs.
// An instance is a node whose type is the definition's id; its node definition (for drawing, widgets and new
// instances) is made here from the subgraph: one socket per declared input, one widget per promoted input (an
// input that feeds an inner widget), one output per declared output.

import { loadWorkflow, saveWorkflow } from '../graph/serialize.js';
import { widgetsOf } from '../graph/schema.js';

export const INPUT_NODE = -10;
export const OUTPUT_NODE = -20;
export const INPUT_TYPE = 'Chisel.SubgraphInputs';
export const OUTPUT_TYPE = 'Chisel.SubgraphOutputs';
const IO_SIZE = [160, 80];

/** A random UUID (ComfyUI names definitions and their slots with one). */
export function uuid() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  const hex = [...Array(32)].map(() => Math.floor(Math.random() * 16).toString(16)).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-a${hex.slice(17, 20)}-${hex.slice(20)}`;
}

/** The workflow's definitions (an empty list when it has none). */
export function definitionsOf(graph) {
  return graph.definitions?.subgraphs ?? [];
}

export function findDefinition(graph, id) {
  return definitionsOf(graph).find((d) => d.id === id) ?? null;
}

/** Adds (or replaces, by id) a definition in the workflow. */
export function putDefinition(graph, definition) {
  graph.definitions ??= {};
  graph.definitions.subgraphs ??= [];
  const list = graph.definitions.subgraphs;
  const at = list.findIndex((d) => d.id === definition.id);
  if (at >= 0) list[at] = definition;
  else list.push(definition);
}

/** Node definitions for the boundary nodes: their slots live on the node itself. */
export function ioNodeDefs() {
  const base = { description: '', aliases: [], outputNode: false, deprecated: false, experimental: false,
    virtual: true, category: 'subgraph', inputs: [], sockets: [], widgets: [], outputs: [], subgraphIO: true };
  return [{ ...base, name: INPUT_TYPE, displayName: 'Inputs' }, { ...base, name: OUTPUT_TYPE, displayName: 'Outputs' }];
}

/** The Graph the editor shows inside a definition (its own copy: edits reach the definition by toDefinition). */
export function definitionGraph(definition, defs) {
  const [ix, iy] = definition.inputNode?.bounding ?? [0, 0];
  const [ox, oy] = definition.outputNode?.bounding ?? [800, 0];
  const io = [
    { id: INPUT_NODE, type: INPUT_TYPE, pos: [ix, iy], size: [...IO_SIZE], inputs: [],
      outputs: (definition.inputs ?? []).map((s) => ({ name: s.name, type: s.type, links: [], slotId: s.id,
        ...(s.label ? { label: s.label } : {}) })) },
    { id: OUTPUT_NODE, type: OUTPUT_TYPE, pos: [ox, oy], size: [...IO_SIZE], outputs: [],
      inputs: (definition.outputs ?? []).map((s) => ({ name: s.name, type: s.type, link: null, slotId: s.id,
        ...(s.label ? { label: s.label } : {}) })) },
  ];
  const json = { version: 1, nodes: [...structuredClone(definition.nodes ?? []), ...io],
    links: structuredClone(definition.links ?? []), groups: structuredClone(definition.groups ?? []),
    reroutes: structuredClone(definition.reroutes ?? []), state: { ...(definition.state ?? {}) },
    extra: structuredClone(definition.extra ?? {}), config: structuredClone(definition.config ?? {}) };
  const graph = loadWorkflow(json, { defs });
  if (definition.definitions) graph.definitions = structuredClone(definition.definitions);
  return graph;
}

/** The definition a Graph made by definitionGraph (and edited) stands for, keeping `base`'s id and name. */
export function toDefinition(graph, base, defs) {
  const saved = saveWorkflow(graph, { defs });
  const inputNode = graph.getNode(INPUT_NODE);
  const outputNode = graph.getNode(OUTPUT_NODE);
  const nodes = saved.nodes.filter((n) => n.id !== INPUT_NODE && n.id !== OUTPUT_NODE);
  const links = [...graph.links.values()].map((l) => ({ id: l.id, origin_id: l.origin_id, origin_slot: l.origin_slot,
    target_id: l.target_id, target_slot: l.target_slot, type: l.type, ...(l.parentId !== undefined
      ? { parentId: l.parentId } : {}) }));
  const slot = (s, linkIds) => ({ id: s.slotId ?? uuid(), name: s.name, type: s.type, linkIds,
    localized_name: s.name, ...(s.label ? { label: s.label } : {}) });
  const out = {
    id: base.id, version: 1,
    state: { lastGroupId: graph.state.lastGroupId, lastNodeId: graph.state.lastNodeId,
      lastLinkId: graph.state.lastLinkId, lastRerouteId: graph.state.lastRerouteId },
    revision: base.revision ?? 0, config: { ...(base.config ?? {}) }, name: base.name ?? 'New Subgraph',
    inputNode: { id: INPUT_NODE, bounding: [...(inputNode?.pos ?? [0, 0]), ...(inputNode?.size ?? IO_SIZE)] },
    outputNode: { id: OUTPUT_NODE, bounding: [...(outputNode?.pos ?? [800, 0]), ...(outputNode?.size ?? IO_SIZE)] },
    // a boundary node deleted by hand: the interface stays, unconnected (the node is back when reopened)
    inputs: inputNode ? inputNode.outputs.map((s) => slot(s, [...s.links]))
      : (base.inputs ?? []).map((s) => ({ ...s, linkIds: [] })),
    outputs: outputNode ? outputNode.inputs.map((s) => slot(s, s.link === null ? [] : [s.link]))
      : (base.outputs ?? []).map((s) => ({ ...s, linkIds: [] })),
    widgets: [], nodes, groups: saved.groups, links, extra: {},
  };
  if (saved.extra?.reroutes?.length) out.reroutes = saved.extra.reroutes;
  if (base.description) out.description = base.description;
  if (graph.definitions) out.definitions = structuredClone(graph.definitions);
  return out;
}

/** Which declared inputs are promoted widgets: for each, the inner widget it feeds first ({input, node, widget}).
 * Instances show these as widgets, in the definition's order (the order of their widgets_values). */
export function promotedInputs(definition, defs) {
  const graph = definitionGraph(definition, defs);
  const out = [];
  (definition.inputs ?? []).forEach((input, index) => {
    for (const lid of graph.getNode(INPUT_NODE)?.outputs[index]?.links ?? []) {
      const link = graph.links.get(lid);
      const node = link && graph.getNode(link.target_id);
      const slot = node?.inputs[link.target_slot];
      if (!slot?.widget) continue;
      const widget = widgetsOf(node, defs, graph).find((w) => w.name === slot.widget.name);
      if (!widget) continue;
      const value = node.widgets_values?.[widget.valueIndex];
      out.push({ input, index, node, widget, value: value === undefined ? widget.default : value });
      return;
    }
  });
  return out;
}

/** The node definition of an instance of `definition` (registered under the definition's id). */
export function instanceNodeDef(definition, defs) {
  const promoted = promotedInputs(definition, defs);
  const byName = new Map(promoted.map((p) => [p.input.name, p]));
  const inputs = (definition.inputs ?? []).map((s) => {
    const p = byName.get(s.name);
    return p ? { name: s.name, type: s.type, optional: false, widgetKind: p.widget.kind, options: p.widget.options,
      choices: p.widget.choices } : { name: s.name, type: s.type, optional: false, widgetKind: null, options: {},
      choices: null };
  });
  const widgets = promoted.map((p, i) => ({ ...p.widget, name: p.input.name, label: p.input.label, inPrompt: true,
    default: p.value, valueIndex: i, target: undefined }));
  return {
    name: definition.id, displayName: definition.name || 'Subgraph', category: 'subgraph',
    description: definition.description ?? '', aliases: [], outputNode: false, deprecated: false,
    experimental: false, virtual: false, subgraph: true, inputs, sockets: inputs.filter((i) => !i.widgetKind),
    widgets, outputs: (definition.outputs ?? []).map((s) => ({ name: s.name, type: s.type, isList: false })),
  };
}

/** Puts the boundary nodes' and every definition's instance node definitions into `defs` (a Map). */
export function registerSubgraphDefs(graph, defs) {
  for (const def of ioNodeDefs()) if (!defs.has(def.name)) defs.set(def.name, def);
  for (const definition of definitionsOf(graph)) defs.set(definition.id, instanceNodeDef(definition, defs));
  return defs;
}

/** The instances of a definition in a graph. */
export function instancesOf(graph, definitionId) {
  return [...graph.nodes.values()].filter((n) => n.type === definitionId);
}
