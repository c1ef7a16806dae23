// Modal prompt / confirm dialogs (promise-based), and a generic overlay panel.
import { h } from './dom.js';

export function createDialogs(container) {
  function modal(content, { onClose } = {}) {
    const backdrop = h('div.modal-backdrop', {}, h('div.modal', {}, content));
    const close = () => { backdrop.remove(); onClose?.(); };
    backdrop.addEventListener('pointerdown', (e) => { if (e.target === backdrop) close(); });
    backdrop.addEventListener('keydown', (e) => { if (e.key === 'Escape') { e.stopPropagation(); close(); } });
    container.append(backdrop);
    return { backdrop, close };
  }

  /** Asks for a text; resolves to it, or null when cancelled. */
  function prompt(title, value = '', { okLabel = 'OK' } = {}) {
    return new Promise((resolve) => {
      let done = false;
      const input = h('input.modal-input', { value, spellcheck: 'false' });
      const finish = (v) => { if (done) return; done = true; m.close(); resolve(v); };
      const m = modal([
        h('div.modal-title', { text: title }), input,
        h('div.modal-buttons', {}, h('button', { text: 'Cancel', onclick: () => finish(null) }),
          h('button.primary', { text: okLabel, onclick: () => finish(input.value) })),
      ], { onClose: () => finish(null) });
      input.addEventListener('keydown', (e) => {
        e.stopPropagation();
        if (e.key === 'Enter') finish(input.value);
        if (e.key === 'Escape') finish(null);
      });
      input.focus();
      input.select();
    });
  }

  function confirm(title, { okLabel = 'OK', danger = false } = {}) {
    return new Promise((resolve) => {
      let done = false;
      const finish = (v) => { if (done) return; done = true; m.close(); resolve(v); };
      const ok = h(`button.${danger ? 'danger' : 'primary'}`, { text: okLabel, onclick: () => finish(true) });
      const m = modal([h('div.modal-title', { text: title }),
        h('div.modal-buttons', {}, h('button', { text: 'Cancel', onclick: () => finish(false) }), ok)],
      { onClose: () => finish(false) });
      ok.focus();
    });
  }

  return { modal, prompt, confirm };
}
