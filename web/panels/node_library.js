// The node library sidebar: every node by category (a tree), a search, a preview card for the node under the
// pointer; a node is dragged onto the canvas (or clicked: added at the centre).
import { searchNodes } from './fuzzy.js';
import { h } from './dom.js';
import { nodeCard } from './node_card.js';

export const NODE_DRAG_TYPE = 'application/x-chisel-node';

/** Categories as a tree: {children: Map(name -> tree), nodes: [def]}. */
export function categoryTree(defs) {
  const root = { children: new Map(), nodes: [] };
  for (const def of defs.values()) {
    if (def.deprecated || def.name === 'Reroute' || def.subgraph || def.subgraphIO) continue;
    let t = root;
    for (const part of (def.category || 'other').split('/')) {
      if (!t.children.has(part)) t.children.set(part, { children: new Map(), nodes: [] });
      t = t.children.get(part);
    }
    t.nodes.push(def);
  }
  return root;
}

export function createNodeLibrary(host, { getDefs, onAdd }) {
  const search = h('input.lib-search', { placeholder: 'Search nodes…', spellcheck: 'false', type: 'search' });
  const list = h('div.lib-tree');
  const card = h('div.lib-card');
  host.replaceChildren(h('div.panel-head', {}, h('h3', { text: 'Node library' })), search, list, card);

  function row(def) {
    const el = h('div.lib-row', { draggable: 'true', dataset: { type: def.name }, title: def.description || def.name,
      onclick: () => onAdd(def.name) }, def.displayName);
    el.addEventListener('dragstart', (e) => {
      e.dataTransfer.setData(NODE_DRAG_TYPE, def.name);
      e.dataTransfer.effectAllowed = 'copy';
    });
    el.addEventListener('pointerenter', () => card.replaceChildren(nodeCard(def)));
    return el;
  }

  function branch(name, tree, depth) {
    const kids = [...tree.children.entries()].sort((a, b) => a[0].localeCompare(b[0]))
      .map(([n, t]) => branch(n, t, depth + 1));
    const rows = tree.nodes.sort((a, b) => a.displayName.localeCompare(b.displayName)).map(row);
    return h('details.lib-branch', { dataset: { category: name } }, h('summary', { text: name }), ...kids, ...rows);
  }

  function render() {
    const q = search.value.trim();
    if (q) {
      const found = searchNodes(getDefs(), q, { limit: 60 });
      list.replaceChildren(...found.map(row));
      if (found[0]) card.replaceChildren(nodeCard(found[0]));
      return;
    }
    const tree = categoryTree(getDefs());
    list.replaceChildren(...[...tree.children.entries()].sort((a, b) => a[0].localeCompare(b[0]))
      .map(([n, t]) => branch(n, t, 0)));
  }

  search.addEventListener('input', render);
  search.addEventListener('keydown', (e) => e.stopPropagation());
  return { refresh: render };
}
