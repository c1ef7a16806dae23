// control_after_generate: after a prompt is queued with the widgets' current values, each seed-like widget is
// moved on according to its control combo (fixed / increment / decrement / randomize), as ComfyUI does.

import { WidgetKind, getWidgetValue, setWidgetValue, widgetsOf } from './schema.js';

/** ComfyUI caps random seeds at 2**50 so that they stay exact in a JS number. */
export const RANDOM_MAX = 1125899906842624;

function nextNumber(value, mode, opts, kind, random) {
  const step = opts.step ?? 1;
  const min = opts.min ?? 0;
  const max = opts.max ?? RANDOM_MAX;
  let v = value;
  if (mode === 'increment') v = value + step;
  else if (mode === 'decrement') v = value - step;
  else if (mode === 'randomize') {
    const hi = Math.min(max, RANDOM_MAX);
    const span = Math.floor((hi - min) / step);
    v = min + Math.floor(random() * (span + 1)) * step;
    if (kind === WidgetKind.INT) v = Math.round(v);
  }
  return Math.min(max, Math.max(min, v));
}

function nextChoice(value, mode, choices, random) {
  if (!choices?.length) return value;
  const i = choices.indexOf(value);
  if (mode === 'increment') return choices[Math.min(choices.length - 1, i + 1)];
  if (mode === 'decrement') return choices[Math.max(0, i - 1)];
  if (mode === 'randomize') return choices[Math.floor(random() * choices.length)];
  return value;
}

/** Applies every control widget of the graph. `random()` returns [0, 1). Returns the number of values changed. */
export function applyControlAfterGenerate(graph, defs, { random = Math.random } = {}) {
  let changed = 0;
  for (const node of graph.nodes.values()) {
    const widgets = widgetsOf(node, defs, graph);
    for (const control of widgets) {
      if (control.kind !== WidgetKind.CONTROL) continue;
      const mode = getWidgetValue(node, control);
      if (mode === 'fixed') continue;
      const target = widgets.find((w) => w.name === control.target);
      const linked = node.inputs.some((i) => i.widget?.name === target?.name && i.link !== null);
      if (!target || linked) continue;
      const value = getWidgetValue(node, target);
      const next = target.kind === WidgetKind.COMBO
        ? nextChoice(value, mode, target.choices, random)
        : nextNumber(Number(value), mode, target.options, target.kind, random);
      if (next !== value) {
        setWidgetValue(node, target, next);
        changed += 1;
      }
    }
  }
  return changed;
}
