// Subgraphs in the editor: the commands (convert the selection, open an instance, go back out, unpack) and the
// menu items (promote a widget, edit the inputs and outputs on the boundary nodes, add an instance of one of the
// workflow's subgraphs). `c` is the controller's shared context (controller.js).

import { computeSize, nodeTitle } from '../canvas/layout.js';
import { GraphError } from '../graph/model.js';
import { newNodeFields, widgetsOf } from '../graph/schema.js';
import { convertToSubgraph, unpackSubgraph } from './convert.js';
import { definitionsOf, findDefinition, INPUT_NODE, registerSubgraphDefs } from './definition.js';
import { addSlot, moveSlot, promoteWidget, removeSlot, renameSlot } from './io.js';
import { enterSubgraph, exitSubgraph, isBoundary, navOf, topGraph } from './navigate.js';

export function createSubgraphEditing(c) {
  const doc = () => c.doc();
  const sizeOf = (graph, defs) => (node, def) => computeSize(node, widgetsOf(node, defs, graph), nodeTitle(node, def));
  const fail = (e) => c.notify(e instanceof GraphError ? e.message : String(e?.message ?? e), 'warn');

  function convertSelection() {
    const d = doc();
    const ids = [...d.selection].filter((id) => !isBoundary(d.graph.getNode(id)));
    if (!ids.length) return void c.notify('Select the nodes to turn into a subgraph', 'info');
    try {
      const { instance } = convertToSubgraph(d.graph, ids, d.defs, { sizeOf: sizeOf(d.graph, d.defs),
        home: topGraph(d) });
      d.selection = new Set([instance.id]);
      c.changed(true);
    } catch (e) { fail(e); }
  }

  function open(nodeId = [...doc().selection][0]) {
    const d = doc();
    if (!enterSubgraph(d, nodeId)) return false;
    c.editor()?.fit();
    c.changed();
    return true;
  }

  /** Back out to `depth` levels (0: the workflow itself). */
  function exit(depth = navOf(doc()).length - 1) {
    if (!navOf(doc()).length) return;
    exitSubgraph(doc(), depth);
    c.changed(true);
  }

  function unpack(nodeId = [...doc().selection][0]) {
    const d = doc();
    try {
      const nodes = unpackSubgraph(d.graph, nodeId, d.defs, { home: topGraph(d) });
      d.selection = new Set(nodes.map((n) => n.id));
      c.changed(true);
    } catch (e) { fail(e); }
  }

  function edit(fn) {
    try { fn(); c.changed(true); } catch (e) { fail(e); }
  }

  async function renameIO(kind, index, current) {
    const name = await c.ui.dialogs.prompt(kind === 'input' ? 'Input name' : 'Output name', current);
    if (name !== null) edit(() => renameSlot(doc().graph, kind, index, name));
  }

  async function addIO(kind) {
    const name = await c.ui.dialogs.prompt(kind === 'input' ? 'New input name' : 'New output name', kind);
    if (name === null) return;
    const type = await c.ui.dialogs.prompt('Type (e.g. IMAGE, LATENT, MODEL, INT)', '*');
    if (type !== null) edit(() => addSlot(doc().graph, kind, name, type.trim().toUpperCase() || '*'));
  }

  /** Menu items for the boundary nodes: their slots' rename / move / remove, and a new slot. */
  function boundaryItems(node) {
    const kind = node.id === INPUT_NODE ? 'input' : 'output';
    const slots = kind === 'input' ? node.outputs : node.inputs;
    return [
      { label: kind === 'input' ? 'Add input…' : 'Add output…', action: () => addIO(kind) },
      ...slots.map((slot, i) => ({ label: `${kind === 'input' ? 'Input' : 'Output'} “${slot.name}”`, submenu: [
        { label: 'Rename…', action: () => renameIO(kind, i, slot.name) },
        { label: 'Move up', disabled: i === 0, action: () => edit(() => moveSlot(doc().graph, kind, i, i - 1)) },
        { label: 'Move down', disabled: i === slots.length - 1,
          action: () => edit(() => moveSlot(doc().graph, kind, i, i + 1)) },
        { label: 'Remove', action: () => edit(() => removeSlot(doc().graph, kind, i)) },
      ] })),
    ];
  }

  /** Items added to a node's right-click menu. */
  function nodeItems(node) {
    const d = doc();
    if (isBoundary(node)) return boundaryItems(node);
    const items = [];
    if (findDefinition(topGraph(d), node.type)) {
      items.push({ label: 'Open subgraph', action: () => open(node.id) },
        { label: 'Unpack subgraph', action: () => unpack(node.id) });
    }
    items.push({ label: 'Convert to subgraph', hint: 'Ctrl+Shift+E', action: convertSelection });
    if (navOf(d).length) {
      const free = widgetsOf(node, d.defs, d.graph).filter((w) => w.inPrompt
        && !node.inputs.some((s) => s.widget?.name === w.name && s.link !== null));
      if (free.length) {
        items.push({ label: 'Promote widget', submenu: free.map((w) => ({ label: w.name,
          action: () => edit(() => promoteWidget(d.graph, node.id, w)) })) });
      }
    }
    return [{ separator: true }, ...items];
  }

  /** A new instance of one of the workflow's subgraphs at `at`. */
  function addInstance(definitionId, at) {
    const d = doc();
    registerSubgraphDefs(topGraph(d), d.defs);
    const def = d.defs.get(definitionId);
    const node = d.graph.addNode(newNodeFields(def, at));
    node.properties = {};
    node.size = sizeOf(d.graph, d.defs)(node, def);
    d.selection = new Set([node.id]);
    c.changed(true);
    return node;
  }

  /** Items added to the canvas menu: back out of an open subgraph, add an instance of the workflow's subgraphs. */
  function canvasItems(at) {
    const d = doc();
    const items = [];
    if (navOf(d).length) items.push({ label: 'Leave subgraph', action: () => exit() });
    const library = definitionsOf(topGraph(d)).filter((def) => !navOf(d).some((s) => s.definitionId === def.id));
    if (library.length) {
      registerSubgraphDefs(topGraph(d), d.defs);
      items.push({ label: 'Add subgraph', submenu: library.map((def) => ({ label: def.name || def.id,
        action: () => addInstance(def.id, at) })) });
    }
    return items.length ? [{ separator: true }, ...items] : [];
  }

  return {
    commands: { convertToSubgraph: convertSelection, openSubgraph: () => open(), exitSubgraph: () => exit(),
      unpackSubgraph: () => unpack() },
    open, exit, unpack, addInstance, nodeItems, canvasItems,
  };
}
