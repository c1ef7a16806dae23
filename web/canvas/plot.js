// Sigma curves on the canvas: scaling (step, σ) points to pixels (log σ when the range spans decades, so the
// small sigmas where the image forms are not squashed onto the axis; σ = 0 sits on the bottom edge) and drawing
// the axes, ticks, curves and the current-step marker.

import { theme } from './theme.js';

const FONT = `10px ${theme.font}`;

/** Scale of `series` ([{points: [[x, σ]]}]) into `rect` [x, y, w, h]: {x(v), y(σ), logY, yMin, yMax, ticks}. */
export function plotScale(series, rect, { xMax = null, logY = null } = {}) {
  const [rx, ry, rw, rh] = rect;
  let top = 0, lowPos = Infinity, right = 0;
  for (const s of series) {
    for (const [x, v] of s.points) {
      if (v > top) top = v;
      if (v > 0 && v < lowPos) lowPos = v;
      if (x > right) right = x;
    }
  }
  const xm = xMax ?? right;
  if (!(top > 0)) top = 1;
  if (!Number.isFinite(lowPos)) lowPos = top;
  const log = logY ?? top / lowPos > 20;
  const floor = log ? lowPos / 2 : 0;
  const l0 = log ? Math.log10(floor) : 0;
  const l1 = log ? Math.log10(top) : 0;
  const frac = log ? (v) => (Math.log10(Math.max(v, floor)) - l0) / (l1 - l0 || 1) : (v) => Math.max(0, v) / top;
  const y = (v) => ry + rh * (1 - frac(v));
  const x = (v) => rx + (xm > 0 ? (rw * v) / xm : 0);
  const ticks = [];
  if (log) {
    for (let e = Math.ceil(l0); e <= Math.floor(l1); e++) ticks.push({ value: 10 ** e, y: y(10 ** e) });
  } else {
    for (const v of [0, top / 2, top]) ticks.push({ value: v, y: y(v) });
  }
  return { x, y, logY: log, yMin: floor, yMax: top, xMax: xm, ticks };
}

/** A series' points in pixels, flat [x0, y0, x1, y1, ...]. */
export function seriesPixels(points, scale) {
  const out = new Array(points.length * 2);
  points.forEach(([x, v], i) => { out[2 * i] = scale.x(x); out[2 * i + 1] = scale.y(v); });
  return out;
}

/** σ at a (possibly fractional) x of a series, interpolated. */
export function valueAt(points, x) {
  if (!points.length) return 0;
  if (x <= points[0][0]) return points[0][1];
  for (let i = 1; i < points.length; i++) {
    if (points[i][0] >= x) {
      const [x0, v0] = points[i - 1], [x1, v1] = points[i];
      return x1 === x0 ? v1 : v0 + ((v1 - v0) * (x - x0)) / (x1 - x0);
    }
  }
  return points[points.length - 1][1];
}

function tickLabel(v) {
  if (v === 0 || v >= 1e-3) return String(Number(v.toPrecision(2)));
  return v.toExponential(0).replace('e-', 'e−');
}

/**
 * Draws `plot` ({series: [{points, color?}], xMax, marker, range?: [x0, x1]}) in `rect`. Returns the scale.
 * `compact` drops the tick labels (the sampler nodes' small curve).
 */
export function drawPlot(ctx, plot, rect, { compact = false, palette = theme } = {}) {
  const [rx, ry, rw, rh] = rect;
  const scale = plotScale(plot.series, rect, { xMax: plot.xMax, logY: plot.logY ?? null });
  ctx.fillStyle = palette.plotBg;
  ctx.fillRect(rx, ry, rw, rh);
  ctx.lineWidth = 1;
  ctx.strokeStyle = palette.plotGrid;
  ctx.beginPath();
  for (const t of scale.ticks) { ctx.moveTo(rx, t.y); ctx.lineTo(rx + rw, t.y); }
  ctx.stroke();
  if (plot.range) {
    ctx.fillStyle = palette.plotShade;
    const a = scale.x(plot.range[0]), b = scale.x(plot.range[1]);
    ctx.fillRect(rx, ry, a - rx, rh);
    ctx.fillRect(b, ry, rx + rw - b, rh);
  }
  if (!compact) {
    ctx.font = FONT;
    ctx.fillStyle = palette.widgetLabel;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (const t of scale.ticks) ctx.fillText(tickLabel(t.value), rx - 4, t.y);
    ctx.textBaseline = 'bottom';
    ctx.fillText(scale.logY ? 'log σ' : 'σ', rx - 4, ry + rh);
  }
  ctx.lineWidth = compact ? 1.5 : 2;
  ctx.lineJoin = 'round';
  for (const s of plot.series) {
    const px = seriesPixels(s.points, scale);
    if (px.length < 2) continue;
    ctx.strokeStyle = s.color ?? palette.plotLine;
    ctx.beginPath();
    ctx.moveTo(px[0], px[1]);
    for (let i = 2; i < px.length; i += 2) ctx.lineTo(px[i], px[i + 1]);
    ctx.stroke();
  }
  if (plot.marker !== null && plot.marker !== undefined && plot.series.length) {
    const mx = scale.x(plot.marker);
    const v = valueAt(plot.series[0].points, plot.marker);
    const my = scale.y(v);
    ctx.strokeStyle = palette.plotMarker;
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(mx, ry);
    ctx.lineTo(mx, ry + rh);
    ctx.stroke();
    ctx.fillStyle = palette.highlight;
    ctx.beginPath();
    ctx.arc(mx, my, compact ? 3 : 4, 0, Math.PI * 2);
    ctx.fill();
    if (!compact) {
      ctx.font = FONT;
      ctx.textBaseline = 'bottom';
      ctx.textAlign = mx > rx + rw - 60 ? 'right' : 'left';
      ctx.fillText(`σ ${Number(v.toPrecision(3))}`, mx + (ctx.textAlign === 'right' ? -6 : 6), Math.max(ry + 12, my - 4));
    }
  }
  return scale;
}
