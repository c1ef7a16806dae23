// In-place DOM editors over the canvas: a one-line input (numbers, strings, titles) and a textarea (prompts,
// with Ctrl+Up/Down weight editing). One at a time; Enter/blur commits, Escape cancels.

import { adjustWeight } from './prompt_weight.js';

export function createEditors(container, { weightDelta = () => 0.05 } = {}) {
  let current = null;

  function finish(commit) {
    if (!current) return;
    const { el, onCommit, onCancel } = current;
    current = null;
    el.remove();
    if (commit) onCommit?.(el.value);
    else onCancel?.();
  }

  function place(el, rect, fontSize) {
    el.style.left = `${rect[0]}px`;
    el.style.top = `${rect[1]}px`;
    el.style.width = `${Math.max(rect[2], 60)}px`;
    el.style.height = `${rect[3]}px`;
    el.style.fontSize = `${fontSize}px`;
  }

  /** A one-line editor over `rect` (screen [x, y, w, h]). */
  function editValue({ rect, value, onCommit, onCancel, fontSize = 13, selectAll = true }) {
    finish(true);
    const el = document.createElement('input');
    el.className = 'inline-editor';
    el.value = String(value ?? '');
    el.spellcheck = false;
    place(el, rect, fontSize);
    container.appendChild(el);
    current = { el, onCommit, onCancel };
    el.addEventListener('keydown', (e) => {
      e.stopPropagation();
      if (e.key === 'Enter') finish(true);
      else if (e.key === 'Escape') finish(false);
    });
    el.addEventListener('blur', () => finish(true));
    el.focus();
    if (selectAll) el.select();
    return el;
  }

  /** A textarea over `rect`; onInput gets every change (so the node updates as you type). */
  function editText({ rect, value, onInput, onCommit, fontSize = 13, weights = false }) {
    finish(true);
    const el = document.createElement('textarea');
    el.className = 'inline-editor text';
    el.value = String(value ?? '');
    el.spellcheck = false;
    place(el, rect, fontSize);
    container.appendChild(el);
    current = { el, onCommit };
    el.addEventListener('input', () => onInput?.(el.value));
    el.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
        finish(true); // and let Ctrl+Enter reach the queue shortcut, as in ComfyUI
        return;
      }
      e.stopPropagation();
      if (e.key === 'Escape') finish(true);
      if (weights && (e.ctrlKey || e.metaKey) && (e.key === 'ArrowUp' || e.key === 'ArrowDown')) {
        const r = adjustWeight(el.value, el.selectionStart, el.selectionEnd,
          (e.key === 'ArrowUp' ? 1 : -1) * weightDelta());
        if (r) {
          el.value = r.text;
          el.setSelectionRange(r.start, r.end);
          onInput?.(el.value);
        }
        e.preventDefault();
      }
    });
    el.addEventListener('blur', () => finish(true));
    el.focus();
    return el;
  }

  return { editValue, editText, close: () => finish(true), get isOpen() { return current !== null; } };
}
