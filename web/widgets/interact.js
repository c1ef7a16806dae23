// Pointer editing of a widget on the canvas: number arrows / drag / typing, combo arrows and dropdown,
// toggles, text and prompt editors, and LoadImage's upload button. Every finished change is one undo step.

import { getWidgetValue, setWidgetValue, WidgetKind, widgetsOf } from '../graph/schema.js';
import { minSize } from '../canvas/layout.js';
import { dragValue, parseTyped, stepValue } from './number.js';

function cycle(choices, value, dir) {
  if (!choices?.length) return value;
  const i = choices.indexOf(value);
  return choices[Math.max(0, Math.min(choices.length - 1, (i < 0 ? 0 : i + dir)))];
}

/**
 * Starts an interaction on a widget hit. Returns {move(dxScreen, event), up(moved)} for the pointer gesture.
 * `ui` = {doc, editors, menus, screenRect(graphRect) -> [x,y,w,h], redraw(), commit(), setEditing(w|null),
 *         chooseUpload(node), scale}.
 */
export function widgetGesture(hit, ui) {
  const { node, widget, part } = hit;
  const linked = node.inputs.some((i) => i.widget?.name === widget.name && i.link !== null);
  if (linked) return null;
  const value = getWidgetValue(node, widget);
  const set = (v) => {
    setWidgetValue(node, widget, v);
    if (widget.relayout) { // a DynamicCombo's option reveals other widgets: the node grows to show them
      const [, h] = minSize(node, widgetsOf(node, ui.doc.defs, ui.doc.graph));
      node.size[1] = Math.max(node.size[1], h);
    }
    ui.redraw();
  };

  switch (widget.kind) {
    case WidgetKind.INT:
    case WidgetKind.FLOAT:
      if (part !== 'value') {
        return { move() {}, up() { set(stepValue(widget, value, part === 'left' ? -1 : 1)); ui.commit(); } };
      }
      return {
        move(dx, e) { set(dragValue(widget, value, dx, { fine: e.shiftKey })); },
        up(moved) {
          if (moved) { ui.commit(); return; }
          ui.editors.editValue({
            rect: ui.screenRect(hit.rect), value, fontSize: 12 * Math.min(1.5, ui.scale),
            onCommit: (text) => {
              const v = parseTyped(widget, text);
              if (v !== null) { set(v); ui.commit(); }
            },
          });
        },
      };
    case WidgetKind.COMBO:
    case WidgetKind.CONTROL:
      if (part !== 'value') {
        return { move() {}, up() { set(cycle(widget.choices, value, part === 'left' ? -1 : 1)); ui.commit(); } };
      }
      return {
        move() {},
        up() {
          const r = ui.screenRect(hit.rect);
          const items = (widget.choices ?? []).map((c) => ({
            label: String(c), checked: c === value, action: () => { set(c); ui.commit(); },
          }));
          if (!items.length) items.push({ label: '(no choices)', disabled: true });
          ui.menus.open(items, [r[0] + r[2] / 2 - 60, r[1] + r[3]], { filter: items.length > 14 });
        },
      };
    case WidgetKind.BOOLEAN:
      return { move() {}, up() { set(!value); ui.commit(); } };
    case WidgetKind.STRING:
      return {
        move() {},
        up() {
          if (widget.options?.multiline) {
            ui.setEditing({ node, widget });
            ui.editors.editText({
              rect: ui.screenRect(hit.rect), value, fontSize: 12 * Math.min(1.5, ui.scale), weights: true,
              onInput: (text) => setWidgetValue(node, widget, text),
              onCommit: () => { ui.setEditing(null); ui.redraw(); ui.commit(); },
            });
          } else {
            ui.editors.editValue({
              rect: ui.screenRect(hit.rect), value, fontSize: 12 * Math.min(1.5, ui.scale),
              onCommit: (text) => { set(text); ui.commit(); },
            });
          }
        },
      };
    case WidgetKind.UPLOAD:
      return { move() {}, up() { ui.chooseUpload(node); } };
    default:
      return null;
  }
}
