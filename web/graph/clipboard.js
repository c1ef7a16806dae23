// Copy and paste of node selections as plain JSON (so the clipboard can live in localStorage and work across
// workflow tabs and browser tabs). A paste is laid out relative to a given point and gets fresh ids.

export const CLIPBOARD_VERSION = 1;

/** The selected nodes with the links among them, plus the links that feed them from outside (which a
 * Ctrl+Shift+V paste keeps). */
export function copyNodes(graph, nodeIds) {
  const ids = new Set(nodeIds.map((id) => graph.getNode(id)?.id).filter((id) => id !== undefined));
  const nodes = [...graph.nodes.values()].filter((n) => ids.has(n.id)).map((n) => structuredClone(n));
  const links = [];
  const inbound = [];
  for (const l of graph.links.values()) {
    if (!ids.has(l.target_id)) continue;
    const row = [l.id, l.origin_id, l.origin_slot, l.target_id, l.target_slot, l.type];
    (ids.has(l.origin_id) ? links : inbound).push(row);
  }
  return { version: CLIPBOARD_VERSION, nodes, links, inbound };
}

/** Adds a copy of the clipboard's nodes with their top-left corner at `at`. With keepInputLinks, links from
 * nodes outside the copy are reconnected when their origin still exists. Returns the new nodes. */
export function pasteNodes(graph, clip, at, { keepInputLinks = false } = {}) {
  if (!clip?.nodes?.length) return [];
  const x0 = Math.min(...clip.nodes.map((n) => n.pos[0]));
  const y0 = Math.min(...clip.nodes.map((n) => n.pos[1]));
  const idMap = new Map();
  const added = [];
  for (const src of clip.nodes) {
    const fields = structuredClone(src);
    fields.id = null;
    fields.pos = [src.pos[0] - x0 + at[0], src.pos[1] - y0 + at[1]];
    for (const i of fields.inputs ?? []) i.link = null;
    for (const o of fields.outputs ?? []) o.links = [];
    const node = graph.addNode(fields);
    idMap.set(src.id, node.id);
    added.push(node);
  }
  const relink = (row, originId) => {
    const [, , originSlot, targetId, targetSlot] = row;
    if (graph.connectionError(originId, originSlot, idMap.get(targetId), targetSlot)) return;
    graph.connect(originId, originSlot, idMap.get(targetId), targetSlot);
  };
  for (const row of clip.links ?? []) relink(row, idMap.get(row[1]));
  if (keepInputLinks) for (const row of clip.inbound ?? []) if (graph.getNode(row[1])) relink(row, row[1]);
  return added;
}
