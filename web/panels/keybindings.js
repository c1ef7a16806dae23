// The keybinding editor: every command with its keys; "Set" records the next key chord (Escape cancels),
// "Reset" restores the default. A chord already bound elsewhere moves here (the other command is unbound).
import { boundTo, chordOf, SHORTCUTS, withBindings } from '../app/keymap.js';
import { h } from './dom.js';

export const KEYBINDINGS_SETTING = 'Chisel.Keybindings';

export function showKeybindings(dialogs, stored, save) {
  let overrides = { ...(stored[KEYBINDINGS_SETTING] ?? {}) };
  const commands = [...new Map(SHORTCUTS.filter((s) => s.command).map((s) => [s.command, s.label])).entries()];
  const list = h('div.kb-list');
  let recording = null;

  function keysOf(command, table) {
    return table.filter((s) => s.command === command).map((s) => s.keys).join(', ');
  }

  function render() {
    const table = withBindings(overrides);
    list.replaceChildren(...commands.map(([command, label]) => h('div.kb-row', { dataset: { command } },
      h('span.kb-label', { text: label }),
      h('kbd.kb-keys', { text: recording === command ? 'press keys…' : keysOf(command, table) || '—' }),
      h('button.kb-set', { text: 'Set', onclick: () => { recording = command; render(); } }),
      command in overrides ? h('button.kb-reset', { text: 'Reset', onclick: () => {
        delete overrides[command];
        commit();
      } }) : null)));
  }

  function commit() {
    save(KEYBINDINGS_SETTING, { ...overrides });
    render();
  }

  const onKey = (e) => {
    if (!recording || ['Control', 'Shift', 'Alt', 'Meta'].includes(e.key)) return;
    e.preventDefault();
    e.stopPropagation();
    if (e.key === 'Escape') {
      recording = null;
      render();
      return;
    }
    const chord = chordOf(e);
    for (const other of boundTo(chord, withBindings(overrides))) {
      if (other === recording) continue;
      const rest = withBindings(overrides).filter((s) => s.command === other && s.keys.toUpperCase() !== chord.toUpperCase());
      overrides[other] = rest[0]?.keys ?? '';
    }
    overrides[recording] = chord;
    recording = null;
    commit();
  };
  window.addEventListener('keydown', onKey, true);
  render();
  const m = dialogs.modal([h('div.modal-title', { text: 'Keyboard shortcuts' }), list,
    h('div.modal-buttons', {}, h('button', { text: 'Reset all', onclick: () => { overrides = {}; commit(); } }),
      h('button.primary', { text: 'Done', onclick: () => m.close() }))],
  { onClose: () => window.removeEventListener('keydown', onKey, true) });
  return m;
}
