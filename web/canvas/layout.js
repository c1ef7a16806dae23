// Geometry of a node, shared by the renderer and hit-testing: where its slots, widgets and image area sit
// (relative to node.pos, the top-left of the body; the title bar is above it), and the size a new node needs.

import { WidgetKind } from '../graph/schema.js';

export const TITLE_H = 30;
export const SLOT_H = 20;
export const WIDGET_H = 20;
export const WIDGET_GAP = 4;
export const MULTILINE_MIN_H = 60;
export const IMAGE_MIN_H = 120;
export const SLOT_RADIUS = 5;
export const COLLAPSED_W = 160;

/** Width of text in the editor's fonts, estimated without a canvas so the layout is the same everywhere. */
export function textWidth(text, fontSize = 14) {
  return String(text ?? '').length * fontSize * 0.58;
}

export function isMultiline(w) {
  return w.kind === WidgetKind.STRING && Boolean(w.options?.multiline);
}

/**
 * Layout of a node body. `widgets` is the node's widget list (schema.widgetsOf); `hasImages` reserves the area
 * below the widgets for previews. Coordinates are relative to node.pos.
 */
export function nodeLayout(node, widgets, { hasImages = false } = {}) {
  const width = node.size[0];
  const sockets = [];
  const widgetInputs = new Map();
  node.inputs.forEach((inp, i) => {
    if (inp.widget && widgets.some((w) => w.name === inp.widget.name)) widgetInputs.set(inp.widget.name, i);
    else sockets.push(i);
  });
  const rows = Math.max(sockets.length, node.outputs.length);
  const inputs = new Array(node.inputs.length);
  sockets.forEach((idx, row) => { inputs[idx] = [0, SLOT_H * (row + 0.5) + 4]; });
  const outputs = node.outputs.map((_, row) => [width, SLOT_H * (row + 0.5) + 4]);

  let y = rows ? rows * SLOT_H + 8 : 6;
  const multi = widgets.filter(isMultiline).length;
  const fixed = widgets.filter((w) => !isMultiline(w)).length * (WIDGET_H + WIDGET_GAP);
  const imageReserve = hasImages ? IMAGE_MIN_H : 0;
  const free = node.size[1] - y - fixed - imageReserve - 4;
  const multiH = multi ? Math.max(MULTILINE_MIN_H, free / multi - WIDGET_GAP) : 0;
  const widgetRects = [];
  for (const w of widgets) {
    const h = isMultiline(w) ? multiH : WIDGET_H;
    widgetRects.push({ widget: w, x: 12, y, w: width - 24, h });
    if (widgetInputs.has(w.name)) inputs[widgetInputs.get(w.name)] = [0, y + Math.min(h, WIDGET_H) / 2];
    y += h + WIDGET_GAP;
  }
  for (let i = 0; i < inputs.length; i++) if (!inputs[i]) inputs[i] = [0, y + SLOT_H / 2];
  const images = hasImages ? { x: 6, y: y + 2, w: width - 12, h: Math.max(0, node.size[1] - y - 6) } : null;
  return { inputs, outputs, widgets: widgetRects, images, rows };
}

/** Slot positions of a collapsed node: everything at the title bar's edges. */
export function collapsedWidth(node, title) {
  return Math.max(COLLAPSED_W, Math.min(textWidth(title) + 48, 320));
}

/** The size ComfyUI-like defaults give a new node of this definition. */
export function computeSize(node, widgets, title) {
  const rows = Math.max(node.inputs.filter((i) => !i.widget).length, node.outputs.length);
  let w = Math.max(textWidth(title) + 60, 140);
  for (let r = 0; r < rows; r++) {
    const a = textWidth(node.inputs[r]?.label ?? node.inputs[r]?.name ?? '', 12);
    const b = textWidth(node.outputs[r]?.label ?? node.outputs[r]?.name ?? '', 12);
    w = Math.max(w, a + b + 50);
  }
  let h = rows ? rows * SLOT_H + 8 : 6;
  for (const widget of widgets) {
    if (isMultiline(widget)) {
      w = Math.max(w, 400);
      h += 120 + WIDGET_GAP;
    } else {
      w = Math.max(w, 315);
      h += WIDGET_H + WIDGET_GAP;
    }
  }
  if (widgets.some((x) => x.kind === WidgetKind.UPLOAD)) h += IMAGE_MIN_H + 100;
  return [Math.round(w), Math.round(Math.max(h + 4, 26))];
}

/** Screen-independent title of a node. */
export function nodeTitle(node, def) {
  return node.title ?? def?.displayName ?? node.type;
}

/** The smallest size a node can be resized to without hiding slots or widgets. */
export function minSize(node, widgets) {
  const rows = Math.max(node.inputs.filter((i) => !i.widget).length, node.outputs.length);
  let h = rows ? rows * SLOT_H + 8 : 6;
  for (const w of widgets) h += (isMultiline(w) ? MULTILINE_MIN_H : WIDGET_H) + WIDGET_GAP;
  return [100, h + 4];
}
