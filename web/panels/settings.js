// The settings dialog (Ctrl+,): one control per entry of app/settings.js, saved as it changes.
import { SETTINGS } from '../app/settings.js';
import { h } from './dom.js';

export function showSettings(dialogs, stored, onChange) {
  const rows = SETTINGS.map((s) => {
    const value = stored[s.id] ?? s.default;
    let control;
    if (s.type === 'boolean') {
      control = h('input', { type: 'checkbox', checked: Boolean(value), dataset: { setting: s.id },
        onchange: (e) => onChange(s.id, e.target.checked) });
    } else if (s.type === 'select') {
      control = h('select', { dataset: { setting: s.id }, onchange: (e) => onChange(s.id, typeof s.default === 'number' ? Number(e.target.value) : e.target.value) },
        ...s.options.map(([v, label]) => h('option', { value: String(v), selected: v === value, text: label })));
    } else {
      control = h('input', { type: 'number', value: String(value), min: s.min, max: s.max, step: s.step ?? 1,
        dataset: { setting: s.id }, onchange: (e) => onChange(s.id, Number(e.target.value)) });
    }
    return h('label.setting-row', {}, h('span', { text: s.label }), control);
  });
  const m = dialogs.modal([h('div.modal-title', { text: 'Settings' }), h('div.settings-list', {}, ...rows),
    h('div.modal-buttons', {}, h('button.primary', { text: 'Done', onclick: () => m.close() }))]);
  return m;
}
