// Number widget values: limits, step, rounding, dragging and display (pure functions).

import { WidgetKind } from '../graph/schema.js';

function decimalsOf(x) {
  if (!Number.isFinite(x) || Number.isInteger(x)) return 0;
  const s = String(x);
  if (s.includes('e-')) return Number(s.split('e-')[1]);
  return s.split('.')[1]?.length ?? 0;
}

/** The step arrows and dragging move by (INT: 1 unless the schema says; FLOAT: its step, else 0.01). */
export function stepOf(widget) {
  const s = widget.options?.step;
  if (widget.kind === WidgetKind.INT) return s && s >= 1 ? Math.round(s) : 1;
  return s && s > 0 ? s : 0.01;
}

/** The precision FLOAT values are rounded to: `round` when the schema gives one, else the step. */
export function precisionOf(widget) {
  const r = widget.options?.round;
  if (typeof r === 'number' && r > 0) return r;
  return widget.kind === WidgetKind.INT ? 1 : stepOf(widget);
}

/** Clamps to [min, max] and rounds (INT to an integer; FLOAT to its precision, without binary noise). */
export function clampValue(widget, value) {
  let v = Number(value);
  if (!Number.isFinite(v)) v = widget.default ?? 0;
  const { min, max } = widget.options ?? {};
  if (widget.kind === WidgetKind.INT) v = Math.round(v);
  else {
    const p = precisionOf(widget);
    v = Number((Math.round(v / p) * p).toFixed(decimalsOf(p)));
  }
  if (typeof min === 'number') v = Math.max(min, v);
  if (typeof max === 'number') v = Math.min(max, v);
  return v;
}

/** One arrow click: ±step. */
export function stepValue(widget, value, direction) {
  return clampValue(widget, Number(value) + direction * stepOf(widget));
}

/** Dragging horizontally: one step per 5 screen pixels (fine steps with Shift). */
export function dragValue(widget, startValue, dxPixels, { fine = false } = {}) {
  const steps = Math.trunc(dxPixels / (fine ? 20 : 5));
  return clampValue(widget, Number(startValue) + steps * stepOf(widget));
}

/** What the widget shows: INT as an integer, FLOAT with its precision's decimals. */
export function formatNumber(value, widget) {
  const v = Number(value);
  if (!Number.isFinite(v)) return String(value);
  if (widget.kind === WidgetKind.INT) return String(Math.round(v));
  return v.toFixed(Math.min(6, decimalsOf(precisionOf(widget))));
}

/** Parses what the user typed; + - * / and parentheses are allowed ("512*2"), as in ComfyUI. Null if invalid. */
export function parseTyped(widget, text) {
  const v = evaluate(String(text));
  return v === null ? null : clampValue(widget, v);
}

/** A small arithmetic evaluator (no eval): expr = term (('+'|'-') term)*, term = unary (('*'|'/') unary)*. */
export function evaluate(text) {
  const tokens = text.match(/\d*\.?\d+(?:e[-+]?\d+)?|[-+*/()]|\S/gi) ?? [];
  let i = 0;
  const peek = () => tokens[i];
  function unary() {
    if (peek() === '-' || peek() === '+') return (tokens[i++] === '-' ? -1 : 1) * unary();
    if (peek() === '(') {
      i++;
      const v = expr();
      if (tokens[i++] !== ')') throw new Error('missing )');
      return v;
    }
    const t = tokens[i++];
    if (t === undefined || !/^\d*\.?\d+(e[-+]?\d+)?$/i.test(t)) throw new Error(`unexpected ${t}`);
    return Number(t);
  }
  function term() {
    let v = unary();
    while (peek() === '*' || peek() === '/') v = tokens[i++] === '*' ? v * unary() : v / unary();
    return v;
  }
  function expr() {
    let v = term();
    while (peek() === '+' || peek() === '-') v = tokens[i++] === '+' ? v + term() : v - term();
    return v;
  }
  try {
    const v = expr();
    return i === tokens.length && Number.isFinite(v) ? v : null;
  } catch {
    return null;
  }
}
