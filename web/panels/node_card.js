// A node's preview card (search, node library): its name, category, description, inputs with types, widgets
// with their defaults and ranges, and outputs.
import { WidgetKind } from '../graph/schema.js';
import { h } from './dom.js';

function widgetLine(w) {
  const o = w.options ?? {};
  let detail = '';
  if (w.kind === WidgetKind.COMBO) detail = `${w.choices?.length ?? 0} choices`;
  else if (o.min !== undefined || o.max !== undefined) detail = `${o.min ?? ''} to ${o.max ?? ''}`;
  const value = typeof w.default === 'string' && w.default.length > 24 ? `${w.default.slice(0, 24)}…` : w.default;
  return h('li', { title: o.tooltip ?? '' }, h('span.nc-name', { text: w.name }),
    h('span.nc-type', { text: `${value === '' ? '""' : value}${detail ? `  (${detail})` : ''}` }));
}

export function nodeCard(def) {
  if (!def) return h('div.node-card.empty');
  const inputs = def.sockets.map((s) => h('li', { title: s.options?.tooltip ?? '' }, h('span.nc-name', { text: s.name }),
    h('span.nc-type', { text: `${s.type}${s.optional ? ' (optional)' : ''}` })));
  const widgets = def.widgets.filter((w) => w.kind !== WidgetKind.CONTROL && w.kind !== WidgetKind.UPLOAD).map(widgetLine);
  const outputs = def.outputs.map((o) => h('li', { title: o.tooltip ?? '' }, h('span.nc-name', { text: o.name }),
    h('span.nc-type', { text: o.type })));
  const section = (label, items) => (items.length ? [h('div.nc-label', { text: label }), h('ul.nc-list', {}, items)] : []);
  return h('div.node-card', { dataset: { type: def.name } },
    h('div.nc-title', { text: def.displayName }),
    h('div.nc-cat', { text: `${def.category}${def.name !== def.displayName ? ` · ${def.name}` : ''}` }),
    h('p.nc-desc', { text: def.description || 'No description.' }),
    ...section('Inputs', inputs), ...section('Widgets', widgets), ...section('Outputs', outputs));
}
