// The inspection panels drawn in a node's area below its widgets (the denoising strip, the noising slider, the
// schedule plot, ...) and the small sigma curve of sampler nodes. panelLayout() is the one geometry that drawing
// and hit-testing share; the panel itself is a plain description (app/inspect.js describePanel).
//
// Drawn on the canvas rather than as DOM laid over the node: the strip then pans, zooms, culls and stacks with
// its node like everything else (a DOM overlay would float above nodes dragged over it and need repositioning on
// every pan), hit-testing is the rectangle arithmetic below, and scrubbing stays smooth because a drag only moves
// an index and redraws (at most once per animation frame) from images that were preloaded when the run finished.

import { textWidth } from './layout.js';
import { drawPlot } from './plot.js';
import { theme as DARK } from './theme.js';

export const PANEL = Object.freeze({
  HEADER_H: 18, LABEL_H: 16, GAP: 6, PLOT_H: 76, SLIDER_H: 28, ROW2_TITLE_H: 18, FOOTER_H: 18, LEGEND_H: 16,
  GUTTER: 36, MAX_VIEW_H: 260, CURVE_H: 64,
});

const FONT = `12px ${DARK.font}`;
const FONT_SMALL = `10px ${DARK.font}`;

function legendItems(series, x, w) {
  const items = [];
  let cx = 0, row = 0;
  for (const s of series) {
    const iw = textWidth(s.name, 11) + 26;
    if (cx > 0 && cx + iw > w) { cx = 0; row++; }
    items.push({ name: s.name, color: s.color, rect: [x + cx, row, iw, PANEL.LEGEND_H] });
    cx += iw;
  }
  return { items, rows: items.length ? row + 1 : 0 };
}

/**
 * Where each part of a panel goes in `area` {x, y, w, h} (absolute graph units): {header, views: [{key, cell,
 * label}], plot, slider, legend: [{name, color, rect}], row2Title, toggle, row2: [...], footer, natural}.
 * Image rows (and a tall plot) share what the fixed rows leave; `natural` is the height with nothing squeezed.
 */
export function panelLayout(spec, area) {
  const { GAP } = PANEL;
  const w = area.w;
  const n = spec.views.length;
  const cw = n ? (w - GAP * (n - 1)) / n : 0;
  const viewH = n ? Math.min(cw, PANEL.MAX_VIEW_H, n === 1 ? w * 0.62 : Infinity) : 0;
  const r2 = spec.row2?.views ?? [];
  const cw2 = r2.length ? (w - GAP * (r2.length - 1)) / r2.length : 0;
  const row2H = r2.length ? Math.min(cw2 * 0.7, 170) : 0;
  const plot = spec.plot;
  const plotX = area.x + PANEL.GUTTER, plotW = Math.max(10, w - PANEL.GUTTER - 8);
  const legend = plot?.legend ? legendItems(plot.series, area.x + PANEL.GUTTER, plotW) : { items: [], rows: 0 };
  const tallH = plot?.tall ? Math.max(PANEL.PLOT_H, w * 0.5) : 0;
  const fixed = (spec.header ? PANEL.HEADER_H : 0) + (n ? PANEL.LABEL_H + GAP : 0)
    + (plot && !plot.tall ? PANEL.PLOT_H + GAP : 0) + (plot?.tall ? GAP : 0) + (spec.slider ? PANEL.SLIDER_H : 0)
    + legend.rows * PANEL.LEGEND_H + (r2.length ? PANEL.ROW2_TITLE_H + PANEL.LABEL_H + GAP : 0)
    + (spec.footer ? PANEL.FOOTER_H : 0);
  const flex = viewH + row2H + tallH;
  const natural = fixed + flex;
  const k = area.h >= natural || flex === 0 ? 1 : Math.max(0, (area.h - fixed) / flex);
  const out = { header: null, views: [], plot: null, slider: null, legend: [], row2Title: null, toggle: null, row2: [],
    footer: null, natural };
  let y = area.y;
  if (spec.header) { out.header = [area.x, y, w, PANEL.HEADER_H]; y += PANEL.HEADER_H; }
  const row = (views, width, h, into) => {
    views.forEach((v, i) => {
      const x = area.x + i * (width + GAP);
      into.push({ key: v.key, cell: [x, y, width, h], label: [x, y + h, width, PANEL.LABEL_H] });
    });
    y += h + PANEL.LABEL_H + GAP;
  };
  if (n) row(spec.views, cw, viewH * k, out.views);
  if (plot) {
    const ph = plot.tall ? tallH * k : PANEL.PLOT_H;
    out.plot = [plotX, y, plotW, ph];
    y += ph + GAP;
  }
  if (spec.slider) { out.slider = [plotX, y, plotW, PANEL.SLIDER_H]; y += PANEL.SLIDER_H; }
  if (legend.rows) {
    out.legend = legend.items.map((it) => ({ ...it, rect: [it.rect[0], y + it.rect[1] * PANEL.LEGEND_H, it.rect[2], it.rect[3]] }));
    y += legend.rows * PANEL.LEGEND_H;
  }
  if (r2.length) {
    out.row2Title = [area.x, y, w, PANEL.ROW2_TITLE_H];
    if (spec.row2.toggle) out.toggle = [area.x + w - 70, y + 1, 70, PANEL.ROW2_TITLE_H - 3];
    y += PANEL.ROW2_TITLE_H;
    row(r2, cw2, row2H * k, out.row2);
  }
  if (spec.footer) out.footer = [area.x, y, w, PANEL.FOOTER_H];
  return out;
}

/** A node's area below its widgets in absolute graph units {x, y, w, h}, or null when it has none. */
export function areaRect(frame, node) {
  const a = frame.infoOf(node).layout.images;
  return a ? { x: node.pos[0] + a.x, y: node.pos[1] + a.y, w: a.w, h: a.h } : null;
}

/** The preferred height of a panel `width` wide. */
export function panelHeight(spec, width) {
  return Math.ceil(panelLayout(spec, { x: 0, y: 0, w: width, h: Infinity }).natural) + 4;
}

/** The rectangle an iw x ih image takes centred in `cell` without distortion. */
export function containRect(iw, ih, [x, y, w, h]) {
  const s = Math.min(w / iw, h / ih);
  const dw = iw * s, dh = ih * s;
  return [x + (w - dw) / 2, y + (h - dh) / 2, dw, dh];
}

/** The sampler nodes' curve at the bottom of their area: {label, plot, rest (the height left above it)}. */
export function curveLayout(area) {
  const top = area.y + area.h - PANEL.CURVE_H;
  return { label: [area.x, top, area.w, 14], plot: [area.x + 4, top + 15, area.w - 8, PANEL.CURVE_H - 19],
    rest: Math.max(0, area.h - PANEL.CURVE_H) };
}

function ring(ctx, [x, y, w, h], theme) {
  ctx.save();
  ctx.strokeStyle = theme.highlight;
  ctx.lineWidth = 2.5;
  ctx.shadowColor = theme.highlight;
  ctx.shadowBlur = 8;
  ctx.beginPath();
  ctx.roundRect(x - 3, y - 3, w + 6, h + 6, 5);
  ctx.stroke();
  ctx.restore();
}

function text(ctx, s, x, y, { align = 'left', color = DARK.nodeText, font = FONT } = {}) {
  ctx.font = font;
  ctx.fillStyle = color;
  ctx.textAlign = align;
  ctx.textBaseline = 'middle';
  ctx.fillText(s, x, y);
}

function drawView(ctx, v, slot, fit, theme) {
  const [x, y, w, h] = slot.cell;
  if (h < 6) return;
  ctx.fillStyle = theme.panelBg;
  ctx.fillRect(x, y, w, h);
  const img = v.img;
  if (img?.naturalWidth) ctx.drawImage(img, ...containRect(img.naturalWidth, img.naturalHeight, slot.cell));
  else text(ctx, v.empty ?? (v.ref ? 'loading…' : '—'), x + w / 2, y + h / 2, { align: 'center', color: theme.widgetLabel,
    font: FONT_SMALL });
  ctx.font = FONT_SMALL;
  text(ctx, fit(v.label, w - 4), x + w / 2, slot.label[1] + PANEL.LABEL_H / 2, { align: 'center', font: FONT_SMALL,
    color: theme.widgetText });
}

function drawSlider(ctx, s, [x, y, w], theme) {
  const ty = y + 9;
  const px = (v) => x + (s.xMax > 0 ? (w * v) / s.xMax : 0);
  ctx.lineCap = 'round';
  ctx.lineWidth = 4;
  ctx.strokeStyle = theme.sliderTrack;
  ctx.beginPath(); ctx.moveTo(x, ty); ctx.lineTo(x + w, ty); ctx.stroke();
  const tx = px(s.xs[s.index] ?? 0);
  ctx.strokeStyle = theme.accent;
  ctx.beginPath(); ctx.moveTo(x, ty); ctx.lineTo(tx, ty); ctx.stroke();
  if (s.xs.length <= 100) {
    ctx.fillStyle = theme.sliderTick;
    for (const v of s.xs) ctx.fillRect(px(v) - 0.5, ty + 4, 1, 3);
  }
  if (s.mark !== undefined && s.mark !== null) {
    const mx = px(s.mark);
    ctx.fillStyle = theme.highlight;
    ctx.beginPath(); ctx.moveTo(mx, ty + 4); ctx.lineTo(mx - 4, ty + 10); ctx.lineTo(mx + 4, ty + 10); ctx.fill();
  }
  ctx.fillStyle = theme.sliderKnob;
  ctx.strokeStyle = theme.accent;
  ctx.lineWidth = 2;
  ctx.beginPath(); ctx.arc(tx, ty, 7, 0, Math.PI * 2); ctx.fill(); ctx.stroke();
  text(ctx, `← ${s.left}`, x, y + 22, { font: FONT_SMALL, color: theme.widgetLabel });
  text(ctx, `${s.right} →`, x + w, y + 22, { align: 'right', font: FONT_SMALL, color: theme.widgetLabel });
  text(ctx, 'drag to scrub', x + w / 2, y + 22, { align: 'center', font: FONT_SMALL, color: theme.hint });
}

/**
 * Draws a described panel in `area`. `opts` = {fit(text, w) -> text, highlight: the part to ring ('x0', 'plot',
 * 'slider', 'row2', 'footer', ...) or null}. Returns the layout it drew.
 */
export function drawPanel(ctx, spec, area, { fit = (t) => t, highlight = null, palette: theme = DARK } = {}) {
  const L = panelLayout(spec, area);
  const bottom = area.y + area.h;
  ctx.save();
  ctx.beginPath();
  ctx.rect(area.x - 4, area.y - 2, area.w + 8, area.h + 4);
  ctx.clip();
  if (L.header) {
    ctx.font = FONT;
    text(ctx, fit(spec.header, area.w), area.x, L.header[1] + PANEL.HEADER_H / 2, { color: theme.widgetText });
  }
  spec.views.forEach((v, i) => drawView(ctx, v, L.views[i], fit, theme));
  if (L.plot && L.plot[1] + 10 < bottom) drawPlot(ctx, spec.plot, L.plot, { palette: theme });
  if (L.slider && L.slider[1] + 10 < bottom) drawSlider(ctx, spec.slider, L.slider, theme);
  for (const it of L.legend) {
    ctx.fillStyle = it.color;
    ctx.fillRect(it.rect[0], it.rect[1] + 6, 14, 3);
    text(ctx, it.name, it.rect[0] + 18, it.rect[1] + 8, { font: FONT_SMALL, color: theme.nodeText });
  }
  if (L.row2Title) {
    ctx.font = FONT_SMALL;
    text(ctx, fit(spec.row2.title, area.w - 80), area.x, L.row2Title[1] + 8, { font: FONT_SMALL, color: theme.widgetText });
    if (L.toggle) {
      const [tx, ty, tw, th] = L.toggle;
      ctx.fillStyle = theme.widgetBg;
      ctx.strokeStyle = theme.widgetOutline;
      ctx.lineWidth = 1;
      ctx.beginPath(); ctx.roundRect(tx, ty, tw, th, th / 2); ctx.fill(); ctx.stroke();
      text(ctx, spec.row2.toggle, tx + tw / 2, ty + th / 2, { align: 'center', font: FONT_SMALL, color: theme.widgetText });
    }
    spec.row2.views.forEach((v, i) => drawView(ctx, v, L.row2[i], fit, theme));
  }
  if (L.footer) {
    ctx.font = FONT;
    text(ctx, fit(spec.footer, area.w), area.x, L.footer[1] + PANEL.FOOTER_H / 2, { color: theme.widgetText });
  }
  const target = highlightRect(L, spec, highlight);
  if (target) ring(ctx, target, theme);
  ctx.restore();
  return L;
}

/** The rectangle of a highlighted part (a view key or 'plot' / 'slider' / 'row2' / 'footer' / 'header'). */
export function highlightRect(L, spec, key) {
  if (!key) return null;
  const view = L.views.find((v) => v.key === key) ?? L.row2.find((v) => v.key === key);
  if (view) return [view.cell[0], view.cell[1], view.cell[2], view.cell[3] + PANEL.LABEL_H];
  if (key === 'row2' && L.row2.length) {
    const last = L.row2[L.row2.length - 1];
    return [L.row2Title[0], L.row2Title[1], L.row2Title[2], last.label[1] + PANEL.LABEL_H - L.row2Title[1]];
  }
  if (key === 'plot' && L.plot) return [L.plot[0] - PANEL.GUTTER + 4, L.plot[1], L.plot[2] + PANEL.GUTTER - 4, L.plot[3]];
  return { slider: L.slider, footer: L.footer, header: L.header }[key] ?? null;
}

/** The sampler nodes' small curve ({series, xMax, marker, range, label, span}) at the bottom of `area`. */
export function drawCurve(ctx, curve, area, { highlight = false, palette: theme = DARK } = {}) {
  const c = curveLayout(area);
  text(ctx, curve.label, c.label[0] + 2, c.label[1] + 7, { font: FONT_SMALL, color: theme.widgetLabel });
  if (curve.span) {
    text(ctx, curve.span, c.label[0] + c.label[2] - 2, c.label[1] + 7, { align: 'right', font: FONT_SMALL,
      color: theme.nodeText });
  }
  drawPlot(ctx, curve, c.plot, { compact: true, palette: theme });
  if (highlight) ring(ctx, [c.label[0], c.label[1], c.label[2], PANEL.CURVE_H], theme);
  return c;
}
