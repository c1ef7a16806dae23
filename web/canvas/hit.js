// Hit-testing: what lies under a graph-space point. Pure (uses the frame geometry the renderer uses).

import { WidgetKind } from '../graph/schema.js';
import { distanceToSegment, segmentMidpoint, LinkStyle } from './links.js';
import { TITLE_H } from './layout.js';

export const Hit = Object.freeze({
  NONE: 'none', NODE: 'node', TITLE: 'title', COLLAPSE: 'collapse', RESIZE: 'resize', INPUT: 'input',
  OUTPUT: 'output', WIDGET: 'widget', IMAGE: 'image', REROUTE: 'reroute', LINK: 'link', GROUP_TITLE: 'group-title',
  GROUP_RESIZE: 'group-resize', GROUP: 'group',
});

const SLOT_HIT = 10;

function inRect(p, [x, y, w, h]) {
  return p[0] >= x && p[0] <= x + w && p[1] >= y && p[1] <= y + h;
}

/** The thing under `p`, topmost first: {kind, node?, slot?, widget?, rect?, part?, reroute?, link?, group?}. */
export function hitTest(scene, p) {
  const { graph, frame } = scene;
  const slack = Math.max(1, 1 / scene.vp.scale);
  const nodes = [...graph.nodes.values()];
  for (let i = nodes.length - 1; i >= 0; i--) {
    const hit = hitNode(nodes[i], frame, p, slack);
    if (hit) return hit;
  }
  for (const r of graph.reroutes.values()) {
    if (Math.hypot(p[0] - r.pos[0], p[1] - r.pos[1]) <= 8 * slack) return { kind: Hit.REROUTE, reroute: r };
  }
  const link = hitLink(scene, p, slack);
  if (link) return link;
  for (let i = graph.groups.length - 1; i >= 0; i--) {
    const g = graph.groups[i];
    const [x, y, w, h] = g.bounding;
    if (!inRect(p, g.bounding)) continue;
    if (p[0] > x + w - 14 && p[1] > y + h - 14) return { kind: Hit.GROUP_RESIZE, group: g };
    if (p[1] <= y + (g.font_size ?? 24) + 14) return { kind: Hit.GROUP_TITLE, group: g };
    return { kind: Hit.GROUP, group: g };
  }
  return { kind: Hit.NONE };
}

function hitNode(node, frame, p, slack) {
  const r = frame.nodeRect(node);
  const grow = SLOT_HIT * slack;
  if (!inRect(p, [r[0] - grow, r[1], r[2] + 2 * grow, r[3]])) return null;
  const info = frame.infoOf(node);
  const near = (q) => Math.hypot(p[0] - q[0], p[1] - q[1]) <= SLOT_HIT * slack;
  const collapsed = Boolean(node.flags.collapsed);
  for (let s = 0; s < node.outputs.length; s++) {
    if (near(frame.outputPos(node, s))) return { kind: Hit.OUTPUT, node, slot: s };
  }
  for (let s = 0; s < node.inputs.length; s++) {
    if (!collapsed && node.inputs[s].widget && p[0] > node.pos[0] + 6) continue;
    if (near(frame.inputPos(node, s))) return { kind: Hit.INPUT, node, slot: s };
  }
  if (!inRect(p, r)) return null;
  const [x, y] = node.pos;
  if (p[1] < y) return p[0] < x + TITLE_H ? { kind: Hit.COLLAPSE, node } : { kind: Hit.TITLE, node };
  if (p[0] > x + node.size[0] - 12 && p[1] > y + node.size[1] - 12) return { kind: Hit.RESIZE, node };
  for (const wr of info.layout.widgets) {
    const rect = [x + wr.x, y + wr.y, wr.w, wr.h];
    if (!inRect(p, rect)) continue;
    const w = wr.widget;
    const arrows = w.kind === WidgetKind.INT || w.kind === WidgetKind.FLOAT || w.kind === WidgetKind.COMBO
      || w.kind === WidgetKind.CONTROL;
    let part = 'value';
    if (arrows && p[0] < rect[0] + 18) part = 'left';
    else if (arrows && p[0] > rect[0] + rect[2] - 18) part = 'right';
    return { kind: Hit.WIDGET, node, widget: w, rect, part };
  }
  const img = info.layout.images;
  if (img && inRect(p, [x + img.x, y + img.y, img.w, img.h])) return { kind: Hit.IMAGE, node };
  return { kind: Hit.NODE, node };
}

function hitLink(scene, p, slack) {
  const style = scene.settings.linkStyle ?? LinkStyle.SPLINE;
  if (style === LinkStyle.HIDDEN) return null;
  const { graph, frame } = scene;
  for (const link of graph.links.values()) {
    if (link.parentId === undefined && !nearNodes(p, frame, graph.nodes.get(link.origin_id), graph.nodes.get(link.target_id))) {
      continue;
    }
    const pts = frame.linkPoints(link);
    if (!pts) continue;
    const last = pts.length - 1;
    const mid = segmentMidpoint(pts[last - 1], pts[last], style);
    if (Math.hypot(p[0] - mid[0], p[1] - mid[1]) <= 8 * slack) {
      return { kind: Hit.LINK, link, segment: last - 1, point: mid, center: true };
    }
  }
  return null;
}

/** Whether p lies in the box spanned by two nodes (where a link between them can be), with a margin. */
function nearNodes(p, frame, a, b) {
  if (!a || !b) return false;
  const ra = frame.nodeRect(a), rb = frame.nodeRect(b);
  return p[0] >= Math.min(ra[0], rb[0]) - 200 && p[0] <= Math.max(ra[0] + ra[2], rb[0] + rb[2]) + 200
    && p[1] >= Math.min(ra[1], rb[1]) - 20 && p[1] <= Math.max(ra[1] + ra[3], rb[1] + rb[3]) + 20;
}

/** The link segment nearest to `p` within `tolerance` (for adding reroutes on a double-click). */
export function nearestLinkSegment(scene, p, tolerance) {
  const style = scene.settings.linkStyle ?? LinkStyle.SPLINE;
  let best = null;
  for (const link of scene.graph.links.values()) {
    const pts = scene.frame.linkPoints(link);
    if (!pts) continue;
    for (let i = 1; i < pts.length; i++) {
      const a = pts[i - 1], b = pts[i];
      if (p[0] < Math.min(a[0], b[0]) - 60 || p[0] > Math.max(a[0], b[0]) + 60) continue;
      const d = distanceToSegment(p, a, b, style);
      if (d <= tolerance && (!best || d < best.distance)) best = { link, segment: i - 1, distance: d };
    }
  }
  return best;
}

/** Nodes whose outline intersects the rectangle (box selection). */
export function nodesInRect(scene, [x, y, w, h]) {
  const rx = w < 0 ? x + w : x, ry = h < 0 ? y + h : y;
  const rw = Math.abs(w), rh = Math.abs(h);
  const out = [];
  for (const node of scene.graph.nodes.values()) {
    const r = scene.frame.nodeRect(node);
    if (r[0] < rx + rw && rx < r[0] + r[2] && r[1] < ry + rh && ry < r[1] + r[3]) out.push(node);
  }
  return out;
}
