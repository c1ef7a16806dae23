// The canvas tooltip: shown after the pointer rests on something with a description (app/tooltips.js).
import { h } from './dom.js';

export function createTooltip(host, { delay = 450 } = {}) {
  const el = h('div.canvas-tooltip', { role: 'tooltip', hidden: true });
  host.append(el);
  let timer = null;
  let key = null;

  function hide() {
    clearTimeout(timer);
    timer = null;
    key = null;
    el.hidden = true;
  }

  /** Shows `tip` ({title, text}) at the client point after the delay; the same tip again keeps its timer. */
  function show(tip, at, tipKey) {
    if (!tip) return hide();
    if (tipKey === key) return undefined;
    hide();
    key = tipKey;
    timer = setTimeout(() => {
      el.replaceChildren(h('div.tt-title', { text: tip.title }), tip.text ? h('div.tt-text', { text: tip.text }) : null);
      el.hidden = false;
      const x = Math.min(at[0] + 14, window.innerWidth - el.offsetWidth - 8);
      const y = Math.min(at[1] + 18, window.innerHeight - el.offsetHeight - 8);
      el.style.left = `${x}px`;
      el.style.top = `${y}px`;
    }, delay);
    return undefined;
  }

  return { show, hide, get element() { return el; } };
}
