// The model library sidebar: the server's model folders (/models) and their files, filtered by a search; a
// file dragged onto the canvas (or clicked) adds its loader with that file (app/model_drop.js).
import { h } from './dom.js';

export const MODEL_DRAG_TYPE = 'application/x-chisel-model';

export function createModelLibrary(host, { api, onAdd, notify }) {
  const search = h('input.lib-search', { placeholder: 'Search models…', spellcheck: 'false', type: 'search' });
  const list = h('div.lib-tree');
  host.replaceChildren(h('div.panel-head', {}, h('h3', { text: 'Model library' })), search, list);
  let folders = [];

  function row(folder, name) {
    const el = h('div.lib-row.model-row', { draggable: 'true', dataset: { folder, name }, title: `${folder}/${name}`,
      onclick: () => onAdd(folder, name) }, name);
    el.addEventListener('dragstart', (e) => {
      e.dataTransfer.setData(MODEL_DRAG_TYPE, JSON.stringify({ folder, name }));
      e.dataTransfer.effectAllowed = 'copy';
    });
    return el;
  }

  function render() {
    const q = search.value.trim().toLowerCase();
    list.replaceChildren(...folders.filter((f) => f.files.length).map((f) => {
      const files = f.files.filter((n) => !q || n.toLowerCase().includes(q) || f.folder.includes(q));
      if (!files.length) return null;
      return h('details.lib-branch', { open: true, dataset: { category: f.folder } },
        h('summary', { text: `${f.folder} (${files.length})` }), ...files.map((n) => row(f.folder, n)));
    }).filter(Boolean));
    if (!list.children.length) list.append(h('div.lib-empty', { text: 'No model files found' }));
  }

  async function refresh() {
    try {
      const kinds = await api.modelFolders();
      folders = await Promise.all(kinds.map(async (folder) => ({ folder,
        files: await api.modelFiles(folder).catch(() => []) })));
    } catch (e) {
      notify(`Cannot list the models: ${e.message}`, 'error');
      folders = [];
    }
    render();
  }

  search.addEventListener('input', render);
  search.addEventListener('keydown', (e) => e.stopPropagation());
  return { refresh };
}
