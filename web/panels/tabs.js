// Workflow tabs along the top bar: name, unsaved dot, close; "+" opens a new empty workflow.
import { h } from './dom.js';

export function renderTabs(container, workspace, { onActivate, onClose, onNew }) {
  const active = workspace.active;
  container.replaceChildren(
    ...workspace.docs.map((doc) => h(`div.tab${doc === active ? '.active' : ''}${doc.modified ? '.modified' : ''}`, {
      title: doc.path ?? `${doc.name} (not saved)`, dataset: { key: doc.key },
      onpointerdown: (e) => { if (e.button === 0) onActivate(doc); },
      onauxclick: (e) => { if (e.button === 1) onClose(doc); },
    }, h('span.tab-name', { text: doc.name }), h('span.tab-dot', { title: 'Unsaved changes', text: '●' }),
    h('button.tab-close', { title: 'Close', text: '×', onpointerdown: (e) => { e.stopPropagation(); onClose(doc); } }))),
    h('button.tab-new', { title: 'New workflow', text: '+', onclick: onNew }),
  );
}
