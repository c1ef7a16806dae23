// Short notices in the corner (queued, done, refused connections, errors).
import { h } from './dom.js';

export function createToasts(container) {
  return {
    notify(message, kind = 'info', { timeout = kind === 'error' ? 8000 : 3500 } = {}) {
      const el = h(`div.toast.${kind}`, { role: 'status' }, h('span', { text: message }),
        h('button.toast-close', { title: 'Dismiss', text: '×', onclick: () => el.remove() }));
      container.append(el);
      while (container.children.length > 5) container.firstChild.remove();
      if (timeout) setTimeout(() => el.remove(), timeout);
      return el;
    },
  };
}
