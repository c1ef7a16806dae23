// Editor settings, stored per user on the server (/api/settings) under ComfyUI's ids where ComfyUI has one.

import { LinkStyle } from '../canvas/links.js';

/** LiteGraph's link render modes as ComfyUI stores them in Comfy.LinkRenderMode. */
const LINK_MODES = { [-1]: LinkStyle.HIDDEN, 0: LinkStyle.STRAIGHT, 1: LinkStyle.LINEAR, 2: LinkStyle.SPLINE };

export const SETTINGS = Object.freeze([
  { id: 'Comfy.LinkRenderMode', key: 'linkStyle', label: 'Link style', type: 'select', default: 2,
    options: [[2, 'Spline'], [1, 'Linear'], [0, 'Straight'], [-1, 'Hidden']] },
  { id: 'Chisel.SnapToGrid', key: 'snapToGrid', label: 'Snap nodes to the grid', type: 'boolean', default: false },
  { id: 'Comfy.SnapToGrid.GridSize', key: 'gridSize', label: 'Grid size', type: 'number', default: 10, min: 1,
    max: 100 },
  { id: 'Comfy.ColorPalette', key: 'palette', label: 'Colour palette', type: 'select', default: 'dark',
    options: [['dark', 'Dark'], ['light', 'Light']] },
  { id: 'Chisel.ShowGrid', key: 'showGrid', label: 'Show the grid', type: 'boolean', default: true },
  { id: 'Chisel.ShowNodeIds', key: 'showNodeIds', label: 'Show node id badges', type: 'boolean',
    default: false },
  { id: 'Comfy.Minimap.Visible', key: 'showMinimap', label: 'Show the minimap', type: 'boolean', default: true },
  { id: 'Comfy.EditAttention.Delta', key: 'weightDelta', label: 'Prompt weight step (Ctrl+Up/Down)',
    type: 'number', default: 0.05, min: 0.01, max: 0.5, step: 0.01 },
]);

/** The editor's settings object from the stored {id: value} map (unknown or bad values fall back). */
export function resolveSettings(stored = {}) {
  const out = {};
  for (const s of SETTINGS) {
    let v = stored[s.id] ?? s.default;
    if (s.type === 'number') v = Number.isFinite(Number(v)) ? Math.min(s.max, Math.max(s.min, Number(v))) : s.default;
    if (s.type === 'boolean') v = Boolean(v);
    out[s.key] = v;
  }
  out.linkStyle = LINK_MODES[out.linkStyle] ?? LinkStyle.SPLINE;
  return out;
}
