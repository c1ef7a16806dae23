// Opening a subgraph in a tab: the tab's document shows the definition's Graph (definitionGraph) in place of the
// workflow's, and remembers the way back (doc.subgraphNav: one step per level, outermost first: the instance
// opened, its definition id, the graph and view it was opened from). Edits reach the definition when the workflow
// is saved or snapshotted (flushSubgraphs) and when the level is left (exitSubgraph); instances follow.

import { makeViewport } from '../canvas/viewport.js';
import { definitionGraph, findDefinition, INPUT_NODE, instanceNodeDef, OUTPUT_NODE, putDefinition,
  registerSubgraphDefs, toDefinition } from './definition.js';
import { syncInstances } from './io.js';
import { shownNodeId } from './exec_ids.js';

/** The levels open in this document ([] at the top). */
export function navOf(doc) {
  return doc.subgraphNav ?? [];
}

/** The instance ids from the top to the open level (the prefix of its nodes' execution ids). */
export function subgraphPath(doc) {
  return navOf(doc).map((step) => step.instanceId);
}

/** The workflow's own graph (where the definitions live), whatever level is open. */
export function topGraph(doc) {
  return navOf(doc)[0]?.graph ?? doc.graph;
}

/** Breadcrumb entries: [{label, depth}] from the workflow down to the open subgraph. */
export function breadcrumb(doc, workflowName = doc.name) {
  return [{ label: workflowName, depth: 0 }, ...navOf(doc).map((step, i) => ({
    label: findDefinition(topGraph(doc), step.definitionId)?.name ?? 'Subgraph', depth: i + 1 }))];
}

/** Opens instance `instanceId` of the shown graph. Returns false when it is not an instance. */
export function enterSubgraph(doc, instanceId) {
  const instance = doc.graph.getNode(instanceId);
  const definition = instance && findDefinition(topGraph(doc), instance.type);
  if (!definition) return false;
  registerSubgraphDefs(topGraph(doc), doc.defs);
  doc.subgraphNav = [...navOf(doc), { instanceId: instance.id, definitionId: definition.id, graph: doc.graph,
    vp: doc.vp, selection: doc.selection }];
  doc.graph = definitionGraph(definition, doc.defs);
  doc.vp = makeViewport();
  doc.selection = new Set();
  doc.selectedGroups?.clear();
  doc.selectedReroutes?.clear();
  return true;
}

/** Writes one open level back into its definition; its instances in the graph above follow a changed interface. */
function writeBack(doc, level, graph) {
  const step = navOf(doc)[level];
  const top = topGraph(doc);
  const before = findDefinition(top, step.definitionId);
  const after = toDefinition(graph, before, doc.defs);
  putDefinition(top, after);
  const shape = (d) => JSON.stringify([d.inputs.map((s) => [s.id, s.name, s.type]),
    d.outputs.map((s) => [s.id, s.name, s.type]), instanceNodeDef(d, doc.defs).widgets.map((w) => w.name)]);
  // its instances wherever they are open: the graph above, the workflow's, the other open levels'
  const graphs = [step.graph, top, ...navOf(doc).map((s) => s.graph), doc.graph].filter((g) => g !== graph);
  if (shape(before) !== shape(after)) syncInstances(graphs, before, after, doc.defs);
  else doc.defs.set(after.id, instanceNodeDef(after, doc.defs));
}

/** Writes every open level into its definition (innermost first) and returns the workflow's graph. */
export function flushSubgraphs(doc) {
  const nav = navOf(doc);
  for (let level = nav.length - 1; level >= 0; level--) {
    writeBack(doc, level, level === nav.length - 1 ? doc.graph : nav[level + 1].graph);
  }
  return topGraph(doc);
}

/** Leaves open levels until `depth` remain (0: back to the workflow). */
export function exitSubgraph(doc, depth = navOf(doc).length - 1) {
  while (navOf(doc).length > Math.max(0, depth)) {
    const nav = navOf(doc);
    const step = nav[nav.length - 1];
    writeBack(doc, nav.length - 1, doc.graph);
    doc.graph = step.graph;
    doc.vp = step.vp;
    doc.selection = new Set([step.instanceId]);
    doc.subgraphNav = nav.slice(0, -1);
  }
}

/** Forgets the open levels (the document's graph was replaced, e.g. by undo). */
export function resetNav(doc) {
  doc.subgraphNav = [];
}

/** Opens the instances of `path` (ids from the top, as subgraphPath gives) one level after another, as far as they
 * still exist; `vp` becomes the view of the innermost level reached when the whole path was. Returns the depth. */
export function reopenPath(doc, path, vp = null) {
  let depth = 0;
  for (const instanceId of path) {
    if (!enterSubgraph(doc, instanceId)) break;
    depth++;
  }
  if (vp && depth === path.length && depth > 0) doc.vp = vp;
  return depth;
}

/** Whether a node is one of the boundary nodes of an open subgraph. */
export function isBoundary(node) {
  return node?.id === INPUT_NODE || node?.id === OUTPUT_NODE;
}

const NODE_MAPS = ['progress', 'errors', 'outputs', 'panels', 'previews'];

/** The document's execution state as the open level shows it: "12:5" on instance 12 at the top, on node 5 inside
 * instance 12 (its progress, errors, images, previews). */
export function execView(exec, path) {
  const view = { ...exec, running: exec.running === null ? null : shownNodeId(exec.running, path) };
  for (const key of NODE_MAPS) {
    const out = new Map();
    for (const [id, value] of exec[key] ?? []) {
      const shown = shownNodeId(id, path);
      if (shown === null) continue;
      if (key === 'errors' && out.has(shown)) {
        const merged = out.get(shown);
        out.set(shown, { ...merged, inputs: new Set([...merged.inputs]), messages: [...merged.messages,
          ...value.messages] });
      } else if (!out.has(shown) || String(id) === String(exec.running)) {
        out.set(shown, value);
      }
    }
    view[key] = out;
  }
  return view;
}
