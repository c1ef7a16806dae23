// Aligning and spacing a selection of nodes (changes pos only).

/** Lines the nodes up on one edge of the first node's bounding box: 'left' | 'right' | 'top' | 'bottom'. */
export function alignNodes(nodes, edge) {
  if (nodes.length < 2) return;
  const left = Math.min(...nodes.map((n) => n.pos[0]));
  const right = Math.max(...nodes.map((n) => n.pos[0] + n.size[0]));
  const top = Math.min(...nodes.map((n) => n.pos[1]));
  const bottom = Math.max(...nodes.map((n) => n.pos[1] + n.size[1]));
  for (const n of nodes) {
    if (edge === 'left') n.pos[0] = left;
    else if (edge === 'right') n.pos[0] = right - n.size[0];
    else if (edge === 'top') n.pos[1] = top;
    else if (edge === 'bottom') n.pos[1] = bottom - n.size[1];
    else throw new Error(`unknown edge "${edge}" (left, right, top or bottom)`);
  }
}

/** Spreads the nodes with equal gaps between them along 'horizontal' or 'vertical', keeping the two ends. */
export function distributeNodes(nodes, axis, titleHeight = 30) {
  if (nodes.length < 3) return;
  const k = axis === 'horizontal' ? 0 : axis === 'vertical' ? 1 : -1;
  if (k < 0) throw new Error(`unknown axis "${axis}" (horizontal or vertical)`);
  const extent = (n) => n.size[k] + (k === 1 ? titleHeight : 0);
  const sorted = [...nodes].sort((a, b) => a.pos[k] - b.pos[k]);
  const start = sorted[0].pos[k];
  const end = Math.max(...sorted.map((n) => n.pos[k] + extent(n)));
  const gap = (end - start - sorted.reduce((s, n) => s + extent(n), 0)) / (sorted.length - 1);
  let at = start;
  for (const n of sorted) {
    n.pos[k] = at;
    at += extent(n) + gap;
  }
}
