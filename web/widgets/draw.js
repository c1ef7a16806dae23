// Drawing the widgets on a node body (canvas 2D). Values come from the node; editing lives in interact.js.

import { getWidgetValue, WidgetKind } from '../graph/schema.js';
import { theme as DARK } from '../canvas/theme.js';
import { formatNumber } from './number.js';

const ARROW_W = 14;

/** How a widget's value reads on the node. */
export function displayValue(widget, value) {
  switch (widget.kind) {
    case WidgetKind.INT:
    case WidgetKind.FLOAT: return formatNumber(value, widget);
    case WidgetKind.BOOLEAN: return value ? (widget.options.label_on ?? 'true') : (widget.options.label_off ?? 'false');
    default: return value === null || value === undefined ? '' : String(value);
  }
}

function arrows(ctx, x, y, w, h, color) {
  const cy = y + h / 2;
  ctx.fillStyle = color;
  ctx.beginPath();
  ctx.moveTo(x + 10, cy - 4); ctx.lineTo(x + 5, cy); ctx.lineTo(x + 10, cy + 4);
  ctx.moveTo(x + w - 10, cy - 4); ctx.lineTo(x + w - 5, cy); ctx.lineTo(x + w - 10, cy + 4);
  ctx.fill();
}

/**
 * Draws one widget. `rect` = {x, y, w, h} absolute; `state` = {linked, error, measure(text) -> px, wrap}.
 */
export function drawWidget(ctx, node, rect, state) {
  const theme = state.theme ?? DARK;
  const { widget } = rect;
  const { x, y, w, h } = rect;
  const value = getWidgetValue(node, widget);
  ctx.lineWidth = 1;
  ctx.fillStyle = theme.widgetBg;
  ctx.strokeStyle = state.error ? theme.error : theme.widgetOutline;
  ctx.beginPath();
  if (widget.kind === WidgetKind.STRING && widget.options?.multiline) ctx.roundRect(x, y, w, h, 6);
  else ctx.roundRect(x, y, w, h, h / 2);
  ctx.fill();
  ctx.stroke();
  ctx.textBaseline = 'middle';
  const cy = y + h / 2;
  if (state.linked) {
    ctx.fillStyle = theme.widgetDisabled;
    ctx.textAlign = 'left';
    ctx.fillText(`${widget.name} (linked)`, x + 12, cy);
    return;
  }
  if (widget.kind === WidgetKind.UPLOAD) {
    ctx.fillStyle = theme.widgetText;
    ctx.textAlign = 'center';
    ctx.fillText('choose file to upload', x + w / 2, cy);
    return;
  }
  if (widget.kind === WidgetKind.STRING && widget.options?.multiline) {
    drawMultiline(ctx, String(value ?? ''), rect, state, widget);
    return;
  }
  const hasArrows = widget.kind !== WidgetKind.STRING && widget.kind !== WidgetKind.BOOLEAN;
  if (hasArrows) arrows(ctx, x, y, w, h, theme.widgetLabel);
  const pad = hasArrows ? ARROW_W + 4 : 12;
  const label = widget.label ?? widget.name;
  const shown = displayValue(widget, value);
  ctx.fillStyle = theme.widgetLabel;
  ctx.textAlign = 'left';
  const labelW = state.measure(label);
  const room = w - 2 * pad;
  if (labelW < room * 0.6) ctx.fillText(label, x + pad, cy);
  const valueRoom = labelW < room * 0.6 ? room - labelW - 8 : room;
  ctx.textAlign = 'right';
  if (widget.kind === WidgetKind.BOOLEAN) {
    ctx.fillStyle = value ? theme.running : theme.widgetOutline;
    ctx.beginPath();
    ctx.arc(x + w - pad - 4, cy, 5, 0, Math.PI * 2);
    ctx.fill();
    ctx.fillStyle = value ? theme.widgetText : theme.widgetLabel;
    ctx.fillText(shown, x + w - pad - 16, cy);
    return;
  }
  ctx.fillStyle = theme.widgetText;
  ctx.fillText(state.fit(shown, valueRoom), x + w - pad, cy);
  if (widget.options?.display === 'color') {
    ctx.fillStyle = `#${(Number(value) >>> 0).toString(16).padStart(6, '0').slice(-6)}`;
    ctx.fillRect(x + w - pad - state.measure(shown) - 22, cy - 5, 14, 10);
  }
}

function drawMultiline(ctx, text, rect, state, widget) {
  const theme = state.theme ?? DARK;
  const { x, y, w, h } = rect;
  ctx.textAlign = 'left';
  ctx.textBaseline = 'top';
  if (!text) {
    ctx.fillStyle = theme.widgetDisabled;
    ctx.fillText(widget.options.placeholder ?? widget.name, x + 8, y + 6);
    return;
  }
  ctx.fillStyle = theme.widgetText;
  const lineH = 15;
  const maxLines = Math.max(1, Math.floor((h - 8) / lineH));
  const lines = state.wrap(text, w - 16);
  for (let i = 0; i < Math.min(lines.length, maxLines); i++) {
    const last = i === maxLines - 1 && lines.length > maxLines;
    ctx.fillText(last ? `${lines[i]}…` : lines[i], x + 8, y + 5 + i * lineH);
  }
}
