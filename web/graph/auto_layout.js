// Lays out a graph without positions (an imported API prompt): columns by the longest path from a source, each
// column as wide as its widest node, nodes in a column ordered by where their inputs come from, no overlaps.

const TITLE = 30;

/**
 * Places every node of `graph` (sizes must be set); returns the graph.
 * @param {{gapX?: number, gapY?: number, origin?: number[]}} opts
 */
export function layoutGraph(graph, { gapX = 80, gapY = 40, origin = [0, 0] } = {}) {
  const nodes = [...graph.nodes.values()];
  const sources = new Map(nodes.map((n) => [n.id, []]));
  for (const l of graph.links.values()) {
    if (sources.has(l.target_id) && sources.has(l.origin_id)) sources.get(l.target_id).push(l.origin_id);
  }
  const depth = new Map();
  const depthOf = (id, seen) => {
    if (depth.has(id)) return depth.get(id);
    if (seen.has(id)) return 0;
    seen.add(id);
    let d = 0;
    for (const s of sources.get(id)) d = Math.max(d, depthOf(s, seen) + 1);
    depth.set(id, d);
    return d;
  };
  const columns = [];
  for (const n of nodes) {
    const d = depthOf(n.id, new Set());
    (columns[d] ??= []).push(n);
  }
  const rank = new Map();
  let x = origin[0];
  const heights = [];
  for (const col of columns) {
    if (!col) continue;
    const key = (n) => {
      const r = sources.get(n.id).map((s) => rank.get(s)).filter((v) => v !== undefined);
      return r.length ? r.reduce((a, b) => a + b, 0) / r.length : Number.POSITIVE_INFINITY;
    };
    col.sort((a, b) => key(a) - key(b));
    let y = origin[1] + TITLE;
    col.forEach((n, i) => {
      rank.set(n.id, i);
      n.pos = [x, y];
      y += n.size[1] + TITLE + gapY;
    });
    heights.push(y - origin[1]);
    x += Math.max(...col.map((n) => n.size[0])) + gapX;
  }
  // centre the columns on the tallest one
  const tallest = Math.max(0, ...heights);
  let i = 0;
  for (const col of columns) {
    if (!col) continue;
    const shift = Math.round((tallest - heights[i++]) / 2);
    for (const n of col) n.pos[1] += shift;
  }
  return graph;
}

/** True when no two nodes' boxes (title included) overlap. */
export function overlapping(graph) {
  const boxes = [...graph.nodes.values()].map((n) => [n.pos[0], n.pos[1] - TITLE, n.size[0], n.size[1] + TITLE, n.id]);
  const out = [];
  for (let a = 0; a < boxes.length; a++) {
    for (let b = a + 1; b < boxes.length; b++) {
      const [ax, ay, aw, ah] = boxes[a], [bx, by, bw, bh] = boxes[b];
      if (ax < bx + bw && bx < ax + aw && ay < by + bh && by < ay + ah) out.push([boxes[a][4], boxes[b][4]]);
    }
  }
  return out;
}
