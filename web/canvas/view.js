// The canvas renderer: draws a scene (graph + view state) with culling to the visible rectangle, level of
// detail by zoom, and links batched into one path per colour.

import { Mode } from '../graph/model.js';
import { drawWidget } from '../widgets/draw.js';
import { areaRect, curveLayout, drawCurve, drawPanel, PANEL } from './inspector.js';
import { segmentBounds, segmentMidpoint, tracePath, LinkStyle } from './links.js';
import { SLOT_RADIUS, TITLE_H } from './layout.js';
import { slotColor, theme as DARK } from './theme.js';
import { rectsOverlap, visibleRect } from './viewport.js';

export const Detail = Object.freeze({ FULL: 'full', MEDIUM: 'medium', LOW: 'low' });

/** The smallest text drawn, in screen pixels: below it text is noise, so the level of detail drops. */
export const LEGIBLE_PX = 5.4;
const TEXT_PX = 12; // widget values, slot names, prompt text
const TITLE_PX = 14;
/** Full detail while 12 px text stays legible (45 %, below the 50-60 % fit-view gives a default workflow),
 * titles while 14 px titles do (about 39 %), boxes below. Images are drawn at every level. */
export const FULL_SCALE = LEGIBLE_PX / TEXT_PX;
export const MEDIUM_SCALE = LEGIBLE_PX / TITLE_PX;

export function detailFor(scale) {
  if (scale >= FULL_SCALE - 1e-9) return Detail.FULL;
  if (scale >= MEDIUM_SCALE - 1e-9) return Detail.MEDIUM;
  return Detail.LOW;
}

const FONT_TITLE = `600 ${TITLE_PX}px ${DARK.font}`;
const FONT_SMALL = `${TEXT_PX}px ${DARK.font}`;

/** A renderer with its own text-measurement caches. */
export function createRenderer() {
  const widths = new Map();
  const wraps = new Map();

  function measure(ctx, text) {
    const key = `${ctx.font}|${text}`;
    let w = widths.get(key);
    if (w === undefined) {
      w = ctx.measureText(text).width;
      if (widths.size > 20000) widths.clear();
      widths.set(key, w);
    }
    return w;
  }

  function fit(ctx, text, maxW) {
    if (measure(ctx, text) <= maxW) return text;
    let lo = 0, hi = text.length;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (measure(ctx, `${text.slice(0, mid)}…`) <= maxW) lo = mid;
      else hi = mid - 1;
    }
    return `${text.slice(0, lo)}…`;
  }

  function wrap(ctx, text, maxW) {
    const key = `${Math.round(maxW)}|${text}`;
    let lines = wraps.get(key);
    if (lines) return lines;
    lines = [];
    for (const para of text.split('\n')) {
      let line = '';
      for (const word of para.split(/(\s+)/)) {
        const next = line + word;
        if (line && measure(ctx, next) > maxW) {
          lines.push(line);
          line = word.trimStart();
        } else line = next;
      }
      lines.push(line);
      if (lines.length > 200) break;
    }
    if (wraps.size > 500) wraps.clear();
    wraps.set(key, lines);
    return lines;
  }

  return function render(ctx, scene) {
    const theme = scene.theme ?? DARK;
    const { vp, width, height, dpr = 1, frame, graph } = scene;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = theme.background;
    ctx.fillRect(0, 0, width, height);
    if (scene.settings.showGrid !== false) drawGrid(ctx, vp, width, height, theme);
    ctx.setTransform(dpr * vp.scale, 0, 0, dpr * vp.scale, dpr * vp.scale * vp.offset[0], dpr * vp.scale * vp.offset[1]);
    const view = visibleRect(vp, width, height);
    const detail = detailFor(vp.scale);

    const visible = [];
    for (const node of graph.nodes.values()) {
      const r = frame.nodeRect(node);
      if (rectsOverlap([r[0] - 10, r[1], r[2] + 20, r[3]], view)) visible.push(node);
    }
    drawGroups(ctx, scene, view, detail);
    const links = drawLinks(ctx, scene, view, detail);
    if (detail === Detail.LOW) {
      drawNodesLow(ctx, scene, visible);
      for (const node of visible) if (!node.flags.collapsed) drawAreaImages(ctx, node, scene);
    } else {
      const helpers = { measure: (t) => measure(ctx, t), fit: (t, w) => fit(ctx, t, w), wrap: (t, w) => wrap(ctx, t, w) };
      for (const node of visible) drawNode(ctx, node, scene, detail, helpers);
    }
    drawReroutes(ctx, scene, view);
    drawOverlay(ctx, scene);
    if (!graph.nodes.size) drawEmptyHint(ctx, width, height, dpr, theme);
    return { nodes: visible.length, links, detail };
  };
}

function drawEmptyHint(ctx, width, height, dpr, theme) {
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.textAlign = 'center';
  ctx.textBaseline = 'middle';
  ctx.fillStyle = '#6a6a70';
  ctx.font = `16px ${theme.font}`;
  ctx.fillText('Double-click to add a node, right-click for the node menu', width / 2, height / 2 - 12);
  ctx.font = `13px ${theme.font}`;
  ctx.fillText('or drop a workflow (JSON or PNG) here', width / 2, height / 2 + 14);
}

function drawGrid(ctx, vp, width, height, theme) {
  const step = 20 * vp.scale;
  if (step < 6) return;
  const ox = (vp.offset[0] * vp.scale) % step;
  const oy = (vp.offset[1] * vp.scale) % step;
  const minor = new Path2D();
  const major = new Path2D();
  const firstX = Math.round((-vp.offset[0] * vp.scale + ox) / step);
  const firstY = Math.round((-vp.offset[1] * vp.scale + oy) / step);
  for (let i = 0, x = ox; x < width; x += step, i++) {
    const p = (firstX + i) % 5 === 0 ? major : minor;
    p.moveTo(Math.round(x) + 0.5, 0);
    p.lineTo(Math.round(x) + 0.5, height);
  }
  for (let i = 0, y = oy; y < height; y += step, i++) {
    const p = (firstY + i) % 5 === 0 ? major : minor;
    p.moveTo(0, Math.round(y) + 0.5);
    p.lineTo(width, Math.round(y) + 0.5);
  }
  ctx.lineWidth = 1;
  ctx.strokeStyle = theme.gridMinor;
  ctx.stroke(minor);
  ctx.strokeStyle = theme.gridMajor;
  ctx.stroke(major);
}

function drawGroups(ctx, scene, view, detail) {
  const theme = scene.theme ?? DARK;
  for (const group of scene.graph.groups) {
    const [x, y, w, h] = group.bounding;
    if (!rectsOverlap(group.bounding, view)) continue;
    const color = group.color ?? '#3f789e';
    const fs = group.font_size ?? 24;
    ctx.globalAlpha = 0.22;
    ctx.fillStyle = color;
    ctx.beginPath();
    ctx.roundRect(x, y, w, h, 6);
    ctx.fill();
    ctx.globalAlpha = 0.45;
    ctx.beginPath();
    ctx.roundRect(x, y, w, fs + 14, [6, 6, 0, 0]);
    ctx.fill();
    ctx.globalAlpha = 1;
    if (scene.selectedGroups?.has(group)) {
      ctx.strokeStyle = theme.selected;
      ctx.lineWidth = 2 / scene.vp.scale;
      ctx.strokeRect(x, y, w, h);
    }
    if (detail !== Detail.LOW) {
      ctx.fillStyle = '#e8e8e8';
      ctx.font = `${fs}px ${theme.font}`;
      ctx.textAlign = 'left';
      ctx.textBaseline = 'middle';
      ctx.fillText(group.title ?? '', x + 10, y + (fs + 14) / 2);
    }
  }
}

function drawLinks(ctx, scene, view, detail) {
  const style = scene.settings.linkStyle ?? LinkStyle.SPLINE;
  if (style === LinkStyle.HIDDEN) return 0;
  const paths = new Map();
  const markers = new Map();
  let count = 0;
  const { graph, frame } = scene;
  for (const link of graph.links.values()) {
    if (!maybeVisible(link, graph, frame, view)) continue;
    const pts = frame.linkPoints(link);
    if (!pts) continue;
    let shown = false;
    for (let i = 1; i < pts.length; i++) if (rectsOverlap(segmentBounds(pts[i - 1], pts[i]), view)) shown = true;
    if (!shown) continue;
    count++;
    const color = slotColor(link.type);
    let path = paths.get(color);
    if (!path) paths.set(color, (path = new Path2D()));
    // far away a curve is not told from a line, and lines raster several times faster
    const segStyle = detail === Detail.LOW ? LinkStyle.LINEAR_PLAIN : style;
    for (let i = 1; i < pts.length; i++) tracePath(path, pts[i - 1], pts[i], segStyle);
    if (detail === Detail.FULL) {
      let m = markers.get(color);
      if (!m) markers.set(color, (m = new Path2D()));
      const last = pts.length - 1;
      const mid = segmentMidpoint(pts[last - 1], pts[last], style);
      m.moveTo(mid[0] + 4, mid[1]);
      m.arc(mid[0], mid[1], 4, 0, Math.PI * 2);
    }
  }
  ctx.lineCap = 'round';
  if (detail === Detail.FULL) {
    ctx.lineWidth = 5;
    ctx.strokeStyle = 'rgba(0,0,0,0.35)';
    for (const path of paths.values()) ctx.stroke(path);
  }
  ctx.lineWidth = Math.max(2.5, 1.2 / scene.vp.scale);
  for (const [color, path] of paths) {
    ctx.strokeStyle = color;
    ctx.stroke(path);
  }
  for (const [color, m] of markers) {
    ctx.fillStyle = color;
    ctx.fill(m);
  }
  return count;
}

/** Cheap rejection before a link's exact geometry is computed: its curve stays within its two nodes' outlines,
 * its reroute points and a bulge margin. */
function maybeVisible(link, graph, frame, view) {
  if (link.parentId !== undefined) return true;
  const a = graph.nodes.get(link.origin_id);
  const b = graph.nodes.get(link.target_id);
  if (!a || !b) return false;
  const ra = frame.nodeRect(a);
  const rb = frame.nodeRect(b);
  const x0 = Math.min(ra[0], rb[0]) - 200, y0 = Math.min(ra[1], rb[1]) - 20;
  const x1 = Math.max(ra[0] + ra[2], rb[0] + rb[2]) + 200, y1 = Math.max(ra[1] + ra[3], rb[1] + rb[3]) + 20;
  return rectsOverlap([x0, y0, x1 - x0, y1 - y0], view);
}

/** Far zoom: node boxes and title bars only, batched by colour. */
function drawNodesLow(ctx, scene, nodes) {
  const theme = scene.theme ?? DARK;
  const bodies = new Map();
  const titles = new Map();
  const add = (map, color, r) => {
    let p = map.get(color);
    if (!p) map.set(color, (p = new Path2D()));
    p.rect(r[0], r[1], r[2], r[3]);
  };
  const outlines = [];
  for (const node of nodes) {
    const r = scene.frame.nodeRect(node);
    const bg = node.mode === Mode.BYPASS ? theme.bypassBg : node.bgcolor ?? theme.nodeBg;
    if (!node.flags.collapsed) add(bodies, bg, r);
    add(titles, node.color ?? theme.nodeTitle, [r[0], r[1], r[2], TITLE_H]);
    const ring = outlineColor(node, scene);
    if (ring) outlines.push([r, ring]);
  }
  for (const [c, p] of bodies) { ctx.fillStyle = c; ctx.fill(p); }
  for (const [c, p] of titles) { ctx.fillStyle = c; ctx.fill(p); }
  ctx.lineWidth = 3 / scene.vp.scale;
  for (const [r, c] of outlines) { ctx.strokeStyle = c; ctx.strokeRect(r[0], r[1], r[2], r[3]); }
}

function outlineColor(node, scene) {
  const theme = scene.theme ?? DARK;
  const ex = scene.exec;
  if (ex?.errors?.has(node.id)) return theme.error;
  if (ex?.running === node.id) return theme.running;
  if (scene.area?.highlight(node)) return theme.highlight;
  if (scene.selection.has(node.id)) return theme.selected;
  if (!scene.defs.has(node.type)) return theme.missing;
  return null;
}

function drawNode(ctx, node, scene, detail, h) {
  const theme = scene.theme ?? DARK;
  const info = scene.frame.infoOf(node);
  const [x, y] = node.pos;
  const collapsed = Boolean(node.flags.collapsed);
  const w = collapsed ? info.collapsedW : node.size[0];
  const bodyH = collapsed ? 0 : node.size[1];
  const bypass = node.mode === Mode.BYPASS;
  if (node.mode === Mode.NEVER) ctx.globalAlpha = 0.4;

  ctx.fillStyle = node.bgcolor ?? theme.nodeBg;
  ctx.beginPath();
  ctx.roundRect(x, y - TITLE_H, w, bodyH + TITLE_H, 8);
  ctx.fill();
  ctx.fillStyle = node.color ?? theme.nodeTitle;
  ctx.beginPath();
  ctx.roundRect(x, y - TITLE_H, w, TITLE_H, collapsed ? 8 : [8, 8, 0, 0]);
  ctx.fill();
  if (bypass) {
    ctx.fillStyle = 'rgba(160, 40, 255, 0.33)';
    ctx.beginPath();
    ctx.roundRect(x, y - TITLE_H, w, bodyH + TITLE_H, 8);
    ctx.fill();
  }

  const ring = outlineColor(node, scene);
  if (ring) {
    ctx.strokeStyle = ring;
    ctx.lineWidth = (ring === theme.selected ? 1.5 : 3) / Math.min(1, scene.vp.scale);
    ctx.beginPath();
    ctx.roundRect(x - 1, y - TITLE_H - 1, w + 2, bodyH + TITLE_H + 2, 9);
    ctx.stroke();
  }

  // collapse toggle and title
  ctx.fillStyle = collapsed ? theme.widgetLabel : slotColor(node.outputs[0]?.type ?? '');
  ctx.beginPath();
  ctx.arc(x + 15, y - TITLE_H / 2, 5, 0, Math.PI * 2);
  ctx.fill();
  ctx.textBaseline = 'middle';
  const badge = !collapsed && detail === Detail.FULL && badgeText(node, info.def, scene.settings);
  let badgeW = 0;
  if (badge) {
    ctx.font = FONT_SMALL;
    ctx.textAlign = 'right';
    ctx.fillStyle = theme.widgetLabel;
    ctx.fillText(badge, x + w - 10, y - TITLE_H / 2);
    badgeW = h.measure(badge) + 8;
  }
  ctx.font = FONT_TITLE;
  ctx.textAlign = 'left';
  ctx.fillStyle = scene.selection.has(node.id) ? theme.selectedText : theme.nodeTitleText;
  let title = info.title;
  if (bypass) title += '  · bypassed';
  else if (node.mode === Mode.NEVER) title += '  · muted';
  ctx.fillText(h.fit(title, w - 40 - badgeW), x + 28, y - TITLE_H / 2);

  if (!collapsed) {
    drawSlots(ctx, node, info, scene, detail);
    if (detail === Detail.FULL) {
      drawWidgets(ctx, node, info, scene, h);
      drawArea(ctx, node, scene, h);
    } else {
      drawWidgetBars(ctx, node, info, theme);
      drawAreaImages(ctx, node, scene);
    }
    if (!info.def) {
      ctx.font = FONT_SMALL;
      ctx.fillStyle = theme.missing;
      ctx.textAlign = 'left';
      ctx.fillText(`missing node type: ${node.type}`, x + 10, y + bodyH - 12);
    }
  }
  drawProgress(ctx, node, scene, x, y, w);
  ctx.globalAlpha = 1;
}

/** The title's badge: the node id (when shown) and the custom pack a node comes from (always). */
function badgeText(node, def, settings) {
  const parts = [];
  if (settings.showNodeIds) parts.push(`#${node.id}`);
  if (def?.pack) parts.push(def.pack);
  return parts.join(' · ');
}

function drawProgress(ctx, node, scene, x, y, w) {
  const theme = scene.theme ?? DARK;
  const p = scene.exec?.progress?.get(node.id);
  if (p === undefined || scene.exec.running !== node.id) return;
  ctx.fillStyle = 'rgba(46, 204, 113, 0.25)';
  ctx.fillRect(x, y - 4, w, 4);
  ctx.fillStyle = theme.running;
  ctx.fillRect(x, y - 4, w * Math.max(0, Math.min(1, p)), 4);
}

function drawSlots(ctx, node, info, scene, detail) {
  const theme = scene.theme ?? DARK;
  const { layout } = info;
  const [x, y] = node.pos;
  const errInputs = scene.exec?.errors?.get(node.id)?.inputs;
  const drag = scene.drag?.kind === 'link' ? scene.drag : null;
  ctx.font = FONT_SMALL;
  ctx.textBaseline = 'middle';
  node.inputs.forEach((inp, i) => {
    const p = layout.inputs[i];
    const isWidget = Boolean(inp.widget) && info.widgets.some((w) => w.name === inp.widget.name);
    if (isWidget && inp.link === null && !(drag && drag.fromOutput)) return;
    const px = x + p[0], py = y + p[1];
    ctx.fillStyle = slotColor(inp.type);
    ctx.beginPath();
    ctx.arc(px, py, SLOT_RADIUS, 0, Math.PI * 2);
    if (inp.shape === 7 && inp.link === null) {
      ctx.lineWidth = 1.5;
      ctx.strokeStyle = slotColor(inp.type);
      ctx.stroke();
    } else ctx.fill();
    if (errInputs?.has(inp.name)) {
      ctx.strokeStyle = theme.error;
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.arc(px, py, SLOT_RADIUS + 3, 0, Math.PI * 2);
      ctx.stroke();
    }
    if (detail === Detail.FULL && !isWidget) {
      ctx.textAlign = 'left';
      ctx.fillStyle = errInputs?.has(inp.name) ? theme.error : theme.nodeText;
      ctx.fillText(inp.label ?? inp.localized_name ?? inp.name, px + 10, py);
    }
  });
  node.outputs.forEach((out, i) => {
    const p = layout.outputs[i];
    const px = x + p[0], py = y + p[1];
    ctx.fillStyle = slotColor(out.type);
    ctx.beginPath();
    if (out.shape === 6) ctx.rect(px - 4, py - 4, 8, 8);
    else ctx.arc(px, py, SLOT_RADIUS, 0, Math.PI * 2);
    ctx.fill();
    if (detail === Detail.FULL) {
      ctx.textAlign = 'right';
      ctx.fillStyle = theme.nodeText;
      ctx.fillText(out.label ?? out.localized_name ?? out.name, px - 10, py);
    }
  });
}

function drawWidgets(ctx, node, info, scene, h) {
  const theme = scene.theme ?? DARK;
  if (!info.layout.widgets.length) return;
  const [x, y] = node.pos;
  const errInputs = scene.exec?.errors?.get(node.id)?.inputs;
  const linked = new Set(node.inputs.filter((i) => i.widget && i.link !== null).map((i) => i.widget.name));
  ctx.font = FONT_SMALL;
  for (const r of info.layout.widgets) {
    if (scene.editing?.node === node && scene.editing.widget === r.widget) continue;
    drawWidget(ctx, node, { widget: r.widget, x: x + r.x, y: y + r.y, w: r.w, h: r.h }, {
      linked: linked.has(r.widget.name), error: errInputs?.has(r.widget.name), measure: h.measure, fit: h.fit,
      wrap: h.wrap, theme,
    });
  }
}

function drawWidgetBars(ctx, node, info, theme) {
  const [x, y] = node.pos;
  ctx.fillStyle = theme.widgetBg;
  ctx.beginPath();
  for (const r of info.layout.widgets) ctx.rect(x + r.x, y + r.y, r.w, r.h);
  ctx.fill();
}

/** The area below the widgets: an inspection panel, or images with a sampler's sigma curve under them. */
function drawArea(ctx, node, scene, h) {
  const theme = scene.theme ?? DARK;
  const area = areaRect(scene.frame, node);
  if (!area) return;
  const panel = area.h >= 10 && scene.area?.panel(node);
  if (panel) {
    drawPanel(ctx, panel, area, { fit: h.fit, highlight: scene.area.highlight(node), palette: theme });
    return;
  }
  const curve = scene.area?.curve(node); // asked even without room: the node grows for it once it has arrived
  if (curve && area.h >= PANEL.CURVE_H) {
    drawCurve(ctx, curve, area, { highlight: scene.area.highlight(node) === 'curve', palette: theme });
    area.h = curveLayout(area).rest;
  }
  drawImages(ctx, area, scene.imagesFor?.(node), theme);
}

/** Far zoom: a node's images (results, previews, LoadImage's picture) without panels, curves or captions. */
function drawAreaImages(ctx, node, scene) {
  const theme = scene.theme ?? DARK;
  const imgs = scene.imagesFor?.(node);
  if (!imgs?.length) return;
  const area = areaRect(scene.frame, node);
  if (area) drawImages(ctx, area, imgs, theme, false);
}

function drawImages(ctx, area, imgs, theme, caption = true) {
  if (!imgs?.length || area.h < 10) return;
  const cols = Math.ceil(Math.sqrt(imgs.length));
  const rows = Math.ceil(imgs.length / cols);
  const cw = area.w / cols;
  const ch = (area.h - (imgs.length === 1 ? 16 : 0)) / rows;
  imgs.forEach((img, i) => {
    if (!img.naturalWidth) return;
    const s = Math.min(cw / img.naturalWidth, ch / img.naturalHeight);
    const dw = img.naturalWidth * s, dh = img.naturalHeight * s;
    const cx = area.x + (i % cols) * cw + (cw - dw) / 2;
    const cy = area.y + Math.floor(i / cols) * ch + (ch - dh) / 2;
    ctx.drawImage(img, cx, cy, dw, dh);
  });
  if (caption && imgs.length === 1 && imgs[0].naturalWidth) {
    ctx.font = FONT_SMALL;
    ctx.fillStyle = theme.widgetLabel;
    ctx.textAlign = 'center';
    ctx.textBaseline = 'bottom';
    ctx.fillText(`${imgs[0].naturalWidth} × ${imgs[0].naturalHeight}`, area.x + area.w / 2, area.y + area.h);
  }
}

function drawReroutes(ctx, scene, view) {
  const theme = scene.theme ?? DARK;
  const { graph } = scene;
  if (!graph.reroutes.size) return;
  for (const r of graph.reroutes.values()) {
    if (r.pos[0] < view[0] - 10 || r.pos[1] < view[1] - 10 || r.pos[0] > view[0] + view[2] + 10
      || r.pos[1] > view[1] + view[3] + 10) continue;
    ctx.fillStyle = scene.selectedReroutes?.has(r.id) ? '#ffffff' : theme.reroute;
    ctx.beginPath();
    ctx.arc(r.pos[0], r.pos[1], 6, 0, Math.PI * 2);
    ctx.fill();
    ctx.strokeStyle = '#111';
    ctx.lineWidth = 1.5;
    ctx.stroke();
  }
}

function drawOverlay(ctx, scene) {
  const theme = scene.theme ?? DARK;
  const d = scene.drag;
  if (!d) return;
  if (d.kind === 'link') {
    const style = scene.settings.linkStyle === LinkStyle.HIDDEN ? LinkStyle.SPLINE : scene.settings.linkStyle;
    ctx.strokeStyle = d.valid === false ? theme.error : slotColor(d.type);
    ctx.lineWidth = 3;
    ctx.beginPath();
    if (d.fromOutput) tracePath(ctx, d.from, d.to, style);
    else tracePath(ctx, d.to, d.from, style);
    ctx.stroke();
  } else if (d.kind === 'box') {
    const [x, y, w, h] = d.rect;
    ctx.fillStyle = 'rgba(120, 160, 255, 0.08)';
    ctx.fillRect(x, y, w, h);
    ctx.strokeStyle = 'rgba(160, 190, 255, 0.8)';
    ctx.lineWidth = 1 / scene.vp.scale;
    ctx.setLineDash([6 / scene.vp.scale, 4 / scene.vp.scale]);
    ctx.strokeRect(x, y, w, h);
    ctx.setLineDash([]);
  }
}
