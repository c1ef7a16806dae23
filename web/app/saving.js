// Saving workflows to the user's files (with overwrite confirmation) and exporting them (UI and API format).

export function download(name, text) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([text], { type: 'application/json' }));
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

export const safeName = (name) => name.replace(/[\\/:*?"<>|]+/g, '_').replace(/\.json$/i, '').trim();

/** @param c the controller context (controller.js) */
export function createSaving(c) {
  const { api, ui } = c;

  async function save({ as = false } = {}) {
    const d = c.doc();
    let path = d.path;
    if (!path || as) {
      const name = await ui.dialogs.prompt('Save workflow as', d.name === 'Unsaved Workflow' ? 'workflow' : d.name,
        { okLabel: 'Save' });
      if (!name || !safeName(name)) return false;
      path = `workflows/${safeName(name)}.json`;
      if (path !== d.path) {
        try {
          await api.saveUserData(path, d.toWorkflow(), { overwrite: false });
          d.markSaved({ path, name: safeName(name) });
          c.notify(`Saved ${safeName(name)}`, 'success');
          c.changed();
          ui.sidebar.refreshWorkflows();
          return true;
        } catch (e) {
          if (e.status !== 409) { c.notify(`Save failed: ${e.message}`, 'error'); return false; }
          if (!(await ui.dialogs.confirm(`"${safeName(name)}" exists. Overwrite it?`, { okLabel: 'Overwrite' }))) return false;
        }
      }
    }
    try {
      await api.saveUserData(path, d.toWorkflow(), { overwrite: true });
      d.markSaved({ path, name: path.replace(/^workflows\//, '').replace(/\.json$/, '') });
      c.notify(`Saved ${d.name}`, 'success');
      c.changed();
      ui.sidebar.refreshWorkflows();
      return true;
    } catch (e) {
      c.notify(`Save failed: ${e.message}`, 'error');
      return false;
    }
  }

  async function exportApi() {
    try {
      const { prompt } = await api.convertWorkflow(c.doc().toWorkflow());
      download(`${safeName(c.doc().name)}_api.json`, JSON.stringify(prompt, null, 2));
    } catch (e) {
      c.notify(`Export (API) failed: ${e.message}`, 'error');
    }
  }

  const exportWorkflow = () => download(`${safeName(c.doc().name)}.json`, JSON.stringify(c.doc().toWorkflow(), null, 2));

  return { save, exportApi, exportWorkflow };
}
