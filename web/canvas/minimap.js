// The minimap: the whole graph scaled into a small rectangle, the visible part outlined; a point on it maps back
// to the graph point the view should centre on. Pure geometry and drawing (the DOM piece is panels/minimap.js).

import { theme } from './theme.js';
import { visibleRect } from './viewport.js';

const PAD = 6;

/** The graph -> minimap transform for a graph whose nodes span `bounds`, also covering the visible rect. */
export function minimapTransform(bounds, view, width, height) {
  const b = bounds ?? view;
  const x0 = Math.min(b[0], view[0]), y0 = Math.min(b[1], view[1]);
  const x1 = Math.max(b[0] + b[2], view[0] + view[2]), y1 = Math.max(b[1] + b[3], view[1] + view[3]);
  const scale = Math.min((width - 2 * PAD) / Math.max(1, x1 - x0), (height - 2 * PAD) / Math.max(1, y1 - y0));
  const ox = PAD + ((width - 2 * PAD) - (x1 - x0) * scale) / 2 - x0 * scale;
  const oy = PAD + ((height - 2 * PAD) - (y1 - y0) * scale) / 2 - y0 * scale;
  return {
    scale,
    toMap: ([x, y]) => [x * scale + ox, y * scale + oy],
    toGraph: ([mx, my]) => [(mx - ox) / scale, (my - oy) / scale],
  };
}

/** Moves the view so that graph point `p` is at the centre of a width x height screen. */
export function centerViewOn(vp, p, width, height) {
  vp.offset[0] = width / (2 * vp.scale) - p[0];
  vp.offset[1] = height / (2 * vp.scale) - p[1];
}

/** Draws the minimap of `graph` into ctx (width x height css px); returns its transform. */
export function drawMinimap(ctx, { graph, vp, screen: [sw, sh], width, height, dpr = 1, exec, selection,
  theme: palette = theme }) {
  const view = visibleRect(vp, sw, sh);
  const bounds = graph.boundsOf([...graph.nodes.values()]);
  const t = minimapTransform(bounds, view, width, height);
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);
  ctx.fillStyle = palette.minimapBg;
  ctx.fillRect(0, 0, width, height);
  const body = new Path2D();
  const marked = new Path2D();
  for (const n of graph.nodes.values()) {
    const [x, y] = t.toMap([n.pos[0], n.pos[1] - 30]);
    const w = Math.max(1.5, n.size[0] * t.scale), h = Math.max(1.5, ((n.flags.collapsed ? 0 : n.size[1]) + 30) * t.scale);
    (selection?.has(n.id) || exec?.running === n.id ? marked : body).rect(x, y, w, h);
  }
  ctx.fillStyle = palette.minimapNode;
  ctx.fill(body);
  ctx.fillStyle = exec?.running !== null && exec?.running !== undefined ? palette.running : palette.minimapMarked;
  ctx.fill(marked);
  const [vx, vy] = t.toMap([view[0], view[1]]);
  ctx.strokeStyle = palette.minimapView;
  ctx.lineWidth = 1;
  ctx.strokeRect(Math.round(vx) + 0.5, Math.round(vy) + 0.5, Math.round(view[2] * t.scale), Math.round(view[3] * t.scale));
  return t;
}
