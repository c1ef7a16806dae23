// The keyboard shortcut overlay, drawn from the keymap table (shortcuts for one action share a row).
import { SHORTCUTS } from '../app/keymap.js';
import { h } from './dom.js';

function keysEl(keys) {
  return h('span.keys', {}, ...keys.split('+').map((k, i) => [i ? '+' : '', h('kbd', { text: k })]));
}

/** @param shortcuts the table in use (the user's bindings applied: app/keymap.js withBindings) */
export function showHelp(dialogs, shortcuts = SHORTCUTS) {
  const byLabel = new Map();
  for (const s of shortcuts) {
    if (!byLabel.has(s.label)) byLabel.set(s.label, []);
    byLabel.get(s.label).push(s.keys);
  }
  const rows = [...byLabel].map(([label, keys]) => h('tr', {},
    h('td', {}, ...keys.map((k, i) => [i ? ' or ' : '', keysEl(k)])), h('td', { text: label })));
  const m = dialogs.modal([
    h('div.modal-title', { text: 'Keyboard shortcuts' }),
    h('div.help-scroll', {}, h('table.help-table', {}, ...rows)),
    h('div.modal-buttons', {}, h('button.primary', { text: 'Close', onclick: () => m.close() })),
  ]);
  m.backdrop.classList.add('help');
  m.backdrop.querySelector('button.primary').focus();
  return m;
}
