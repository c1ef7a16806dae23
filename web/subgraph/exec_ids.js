// Execution ids of flattened subgraphs ("12:5": node 5 inside instance 12; "12:5:3" one level deeper) -> the node
// the editor shows them on: at the top level the instance (12), inside an open subgraph the inner node.

/** The id of the node that shows execution id `id` in the graph reached through `path` (instance ids, outermost
 * first; [] at the top level), or null when it is not in that graph. Plain ids map to themselves at the top. */
export function shownNodeId(id, path = []) {
  const parts = String(id).split(':');
  if (parts.length <= path.length) return null;
  for (let i = 0; i < path.length; i++) if (parts[i] !== String(path[i])) return null;
  const local = parts[path.length];
  return /^-?\d+$/.test(local) ? Number(local) : local;
}

/** Whether execution id `id` is a node inside a subgraph (rather than the node itself) at that level. */
export function isInner(id, path = []) {
  return String(id).split(':').length > path.length + 1;
}
