// Selecting and moving things on the canvas: node selection (shift/ctrl), dragging nodes (alt-drag copies),
// resizing nodes, moving reroutes, moving and resizing groups (with the nodes inside), snapping on release.

import { widgetsOf } from '../graph/schema.js';
import { copyNodes, pasteNodes } from '../graph/clipboard.js';
import { minSize } from './layout.js';

export function selectNode(doc, node, e) {
  if (e.shiftKey || e.ctrlKey || e.metaKey) {
    if (doc.selection.has(node.id) && (e.ctrlKey || e.metaKey)) doc.selection.delete(node.id);
    else doc.selection.add(node.id);
  } else if (!doc.selection.has(node.id)) {
    doc.selection = new Set([node.id]);
    doc.selectedGroups.clear();
    doc.selectedReroutes.clear();
  }
  doc.graph.bringToFront(node.id);
}

export function startNodeDrag(doc, e, p) {
  if (e.altKey) {
    const clip = copyNodes(doc.graph, [...doc.selection]);
    const x = Math.min(...clip.nodes.map((n) => n.pos[0]));
    const y = Math.min(...clip.nodes.map((n) => n.pos[1]));
    const added = pasteNodes(doc.graph, clip, [x, y]);
    doc.selection = new Set(added.map((n) => n.id));
  }
  const nodes = doc.selectedNodes().filter((n) => !n.flags.pinned);
  return { kind: 'nodes', start: p, origin: nodes.map((n) => [n, [...n.pos]]) };
}

export function startGroupDrag(doc, group, e, p) {
  if (!(e.shiftKey || e.ctrlKey)) {
    doc.selection.clear();
    doc.selectedGroups.clear();
  }
  doc.selectedGroups.add(group);
  const nodes = group.flags?.pinned ? [] : doc.graph.nodesInGroup(group);
  return { kind: 'group', group, start: p, origin: [...group.bounding], nodes: nodes.map((n) => [n, [...n.pos]]) };
}

/** Moves what gesture `g` drags to graph point `p`; false when `g` is not a move of this file's kinds. */
export function moveTo(doc, g, p) {
  const dx = p[0] - g.start?.[0], dy = p[1] - g.start?.[1];
  switch (g.kind) {
    case 'nodes':
      for (const [n, o] of g.origin) { n.pos[0] = o[0] + dx; n.pos[1] = o[1] + dy; }
      return true;
    case 'resize': {
      const [mw, mh] = minSize(g.node, widgetsOf(g.node, doc.defs, doc.graph));
      g.node.size[0] = Math.max(mw, g.size[0] + dx);
      g.node.size[1] = Math.max(mh, g.size[1] + dy);
      return true;
    }
    case 'reroute':
      g.reroute.pos[0] = g.origin[0] + dx;
      g.reroute.pos[1] = g.origin[1] + dy;
      return true;
    case 'group':
      g.group.bounding[0] = g.origin[0] + dx;
      g.group.bounding[1] = g.origin[1] + dy;
      for (const [n, o] of g.nodes) { n.pos[0] = o[0] + dx; n.pos[1] = o[1] + dy; }
      return true;
    case 'group-resize':
      g.group.bounding[2] = Math.max(140, g.origin[2] + dx);
      g.group.bounding[3] = Math.max(80, g.origin[3] + dy);
      return true;
    case 'box':
      g.rect = [g.start[0], g.start[1], dx, dy];
      return true;
    default:
      return false;
  }
}
