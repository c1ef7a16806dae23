// The workflows sidebar: workflows saved on the server (userdata/workflows) and the built-in templates.
import { h, timeAgo } from './dom.js';

export function createWorkflowsPanel(container, { api, onOpenSaved, onOpenTemplate, onSave, notify, dialogs }) {
  async function refresh() {
    let files = [];
    let templates = {};
    try {
      files = await api.listWorkflows();
    } catch (e) {
      if (e.status !== 404) notify(`Cannot list workflows: ${e.message}`, 'error');
    }
    try {
      templates = await api.templates();
    } catch {
      templates = {};
    }
    render(Array.isArray(files) ? files : [], templates ?? {});
  }

  const pathOf = (f) => (typeof f === 'string' ? f : f.path);

  function fileRow(f) {
    const path = pathOf(f);
    const name = path.replace(/\.json$/i, '');
    return h('div.wf-item', { dataset: { path }, title: path },
      h('span.wf-name', { text: name, onclick: () => onOpenSaved(`workflows/${path}`, name) }),
      typeof f === 'object' && f.modified ? h('span.wf-time', { text: timeAgo(f.modified * (f.modified < 1e12 ? 1000 : 1)) })
        : null,
      h('button.q-btn', { title: 'Rename', text: '✎', onclick: async () => {
        const to = await dialogs.prompt('Rename workflow', name);
        if (!to || to === name) return;
        await api.moveUserData(`workflows/${path}`, `workflows/${to.replace(/\.json$/i, '')}.json`)
          .catch((e) => notify(e.message, 'error'));
        refresh();
      } }),
      h('button.q-btn.danger', { title: 'Delete', text: '×', onclick: async () => {
        if (!(await dialogs.confirm(`Delete the workflow "${name}"?`, { okLabel: 'Delete', danger: true }))) return;
        await api.deleteUserData(`workflows/${path}`).catch((e) => notify(e.message, 'error'));
        refresh();
      } }));
  }

  function render(files, templates) {
    const tpl = Object.entries(templates).flatMap(([module, names]) => names.map((n) => [module, n]));
    container.replaceChildren(
      h('div.panel-section', {}, h('div.panel-title', {}, h('span', { text: 'Saved workflows' }),
        h('button.q-btn', { text: 'Save current', onclick: onSave })),
      ...(files.length ? files.sort((a, b) => pathOf(a).localeCompare(pathOf(b))).map(fileRow)
        : [h('div.panel-empty', { text: 'No saved workflows yet (Ctrl+S saves)' })])),
      h('div.panel-section', {}, h('div.panel-title', {}, h('span', { text: 'Templates' })),
        ...(tpl.length ? tpl.map(([module, name]) => h('div.wf-item.template', { dataset: { template: name } },
          h('span.wf-name', { text: name, onclick: () => onOpenTemplate(module, name) })))
          : [h('div.panel-empty', { text: 'No templates' })])),
    );
  }

  return { refresh };
}
