// The node search box (double-click on the canvas, or a link dropped on empty canvas, filtered by its type).

import { searchNodes } from './fuzzy.js';
import { nodeCard } from './node_card.js';

export function createSearchBox(container, getDefs) {
  const box = document.createElement('div');
  box.className = 'search-box';
  box.hidden = true;
  box.innerHTML = `<div class="search-head"><input class="search-input" placeholder="Search nodes…"
    spellcheck="false" autocomplete="off"><span class="search-filter"></span></div>
    <div class="search-results" role="listbox"></div>`;
  const preview = document.createElement('div');
  preview.className = 'search-preview';
  box.appendChild(preview);
  container.appendChild(box);
  const input = box.querySelector('.search-input');
  const list = box.querySelector('.search-results');
  const chip = box.querySelector('.search-filter');
  let state = null;
  let results = [];
  let active = 0;

  function render() {
    results = searchNodes(getDefs(), input.value, { ...state.filter, limit: 40 });
    active = Math.min(active, Math.max(0, results.length - 1));
    list.replaceChildren(...results.map((def, i) => {
      const row = document.createElement('div');
      row.className = `search-row${i === active ? ' active' : ''}`;
      row.dataset.type = def.name;
      const name = document.createElement('span');
      name.className = 'search-name';
      name.textContent = def.displayName;
      const cat = document.createElement('span');
      cat.className = 'search-cat';
      cat.textContent = def.category;
      row.append(name, cat);
      row.addEventListener('pointerdown', (e) => { e.preventDefault(); pick(i); });
      return row;
    }));
    preview.replaceChildren(...(results[active] ? [nodeCard(results[active])] : []));
    if (!results.length) {
      const empty = document.createElement('div');
      empty.className = 'search-empty';
      empty.textContent = 'No matching nodes';
      list.appendChild(empty);
    }
  }

  function pick(i) {
    const def = results[i];
    const s = state;
    close();
    if (def) s.onPick(def);
  }

  function open({ at, filter = {}, onPick, onCancel }) {
    state = { filter, onPick, onCancel };
    const type = filter.inputType ?? filter.outputType;
    chip.textContent = type ? `${filter.inputType ? 'takes' : 'gives'} ${type}` : '';
    chip.hidden = !type;
    input.value = '';
    active = 0;
    box.hidden = false;
    const vw = window.innerWidth, vh = window.innerHeight;
    box.style.left = `${Math.max(8, Math.min(at[0] - 20, vw - 440))}px`;
    box.style.top = `${Math.max(8, Math.min(at[1] - 20, vh - 380))}px`;
    render();
    input.focus();
  }

  function close() {
    if (!state) return;
    const s = state;
    state = null;
    box.hidden = true;
    return s;
  }

  function cancel() {
    close()?.onCancel?.();
  }

  input.addEventListener('input', () => { active = 0; render(); });
  input.addEventListener('keydown', (e) => {
    e.stopPropagation();
    if (e.key === 'ArrowDown') { active = Math.min(active + 1, results.length - 1); render(); e.preventDefault(); }
    else if (e.key === 'ArrowUp') { active = Math.max(active - 1, 0); render(); e.preventDefault(); }
    else if (e.key === 'Enter') { pick(active); e.preventDefault(); }
    else if (e.key === 'Escape') cancel();
  });
  input.addEventListener('blur', () => {
    const opened = state;
    // a click on a result blurs the input first; only a blur that leaves this same search open cancels it
    setTimeout(() => { if (state && state === opened && document.activeElement !== input) cancel(); }, 120);
  });

  return { open, close: cancel, get isOpen() { return state !== null; } };
}
