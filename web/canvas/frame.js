// Per-frame geometry of the graph on screen: node layouts (cached for one frame), absolute slot positions and
// the points each link passes through. Shared by the renderer and hit-testing so both agree.

import { widgetsOf } from '../graph/schema.js';
import { collapsedWidth, nodeLayout, nodeTitle, TITLE_H } from './layout.js';

export function createFrame({ graph, defs, hasImages = () => false }) {
  const cache = new Map();

  function infoOf(node) {
    let info = cache.get(node);
    if (!info) {
      const def = defs.get(node.type);
      const widgets = widgetsOf(node, defs, graph);
      const title = nodeTitle(node, def);
      const images = hasImages(node);
      info = { def, widgets, title, layout: nodeLayout(node, widgets, { hasImages: images }),
        collapsedW: node.flags.collapsed ? collapsedWidth(node, title) : 0 };
      cache.set(node, info);
    }
    return info;
  }

  /** The node's outline on screen [x, y, w, h] in graph units, title bar included. */
  function nodeRect(node) {
    if (node.flags.collapsed) return [node.pos[0], node.pos[1] - TITLE_H, infoOf(node).collapsedW, TITLE_H];
    return [node.pos[0], node.pos[1] - TITLE_H, node.size[0], node.size[1] + TITLE_H];
  }

  function inputPos(node, slot) {
    if (node.flags.collapsed) return [node.pos[0], node.pos[1] - TITLE_H / 2];
    const p = infoOf(node).layout.inputs[slot] ?? [0, 0];
    return [node.pos[0] + p[0], node.pos[1] + p[1]];
  }

  function outputPos(node, slot) {
    if (node.flags.collapsed) return [node.pos[0] + infoOf(node).collapsedW, node.pos[1] - TITLE_H / 2];
    const p = infoOf(node).layout.outputs[slot] ?? [node.size[0], 0];
    return [node.pos[0] + p[0], node.pos[1] + p[1]];
  }

  /** The points a link passes through: origin slot, its reroutes, target slot (null if an end is missing). */
  function linkPoints(link) {
    const origin = graph.nodes.get(link.origin_id);
    const target = graph.nodes.get(link.target_id);
    if (!origin || !target) return null;
    const pts = [outputPos(origin, link.origin_slot)];
    for (const rid of graph.rerouteChain(link)) pts.push(graph.reroutes.get(rid).pos);
    pts.push(inputPos(target, link.target_slot));
    return pts;
  }

  return { infoOf, nodeRect, inputPos, outputPos, linkPoints };
}
