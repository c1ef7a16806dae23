// Opening workflows into tabs: UI workflows, API prompts (laid out), templates, saved files, new and closed tabs.

import { graphFromApiPrompt } from '../graph/serialize.js';
import { computeSize, nodeTitle } from '../canvas/layout.js';
import { layoutGraph } from '../graph/auto_layout.js';
import { WorkflowDoc } from './document.js';

/** @param c the controller context (controller.js): api, workspace, ui, deps, editor(), notify, changed, updateProgress */
export function createOpening(c) {
  const { workspace, ui, deps } = c;

  function openDoc(newDoc) {
    workspace.open(newDoc);
    activate(newDoc);
    return newDoc;
  }

  /** Opens a UI workflow; it shows all its nodes (a saved view may leave the output off screen). */
  function openWorkflow(json, { name, path = null, keepView = false } = {}) {
    try {
      const d = workspace.openWorkflow(json, { name: workspace.uniqueName(name ?? 'Unsaved Workflow'), path });
      activate(d);
      if (!keepView && d.graph.nodes.size) c.editor()?.fit();
      ui.tour?.opened(d);
      return d;
    } catch (e) {
      c.notify(`Cannot open ${name ?? 'workflow'}: ${e.message}`, 'error');
      return null;
    }
  }

  /** Opens an API prompt (no positions): its nodes are laid out in columns along the links. */
  function openApiPrompt(prompt, name) {
    const defs = deps.getDefs();
    const graph = graphFromApiPrompt(prompt, { defs,
      sizeOf: (node, def) => computeSize(node, def?.widgets ?? [], nodeTitle(node, def)) });
    layoutGraph(graph);
    const d = openDoc(new WorkflowDoc({ graph, defs, name: workspace.uniqueName(name) }));
    c.editor().fit();
    return d;
  }

  function activate(d) {
    const editor = c.editor();
    workspace.activate(d.key);
    editor?.closeEditors();
    ui.errors.close();
    if (d.graph.nodes.size && !d.graph.extra.ds && editor) editor.fit();
    c.changed();
    c.updateProgress();
  }

  async function openTemplate(module, name) {
    try {
      const json = deps.fixtures ? await (await fetch('test/fixtures/default_workflow.json')).json()
        : await c.api.template(module, name);
      return openWorkflow(json, { name });
    } catch (e) {
      c.notify(`Cannot open the template ${name}: ${e.message}`, 'error');
      return null;
    }
  }

  async function openSaved(path, name) {
    try {
      const json = await c.api.getUserData(path);
      return openWorkflow(json, { name, path });
    } catch (e) {
      c.notify(`Cannot open ${path}: ${e.message}`, 'error');
      return null;
    }
  }

  function newWorkflow() {
    openDoc(WorkflowDoc.fromWorkflow({ nodes: [], links: [], version: 0.4 }, { defs: deps.getDefs(),
      name: workspace.uniqueName('Unsaved Workflow') }));
  }

  async function closeTab(d) {
    if (d.modified && !(await ui.dialogs.confirm(`Close "${d.name}" without saving?`, { okLabel: 'Close', danger: true }))) {
      return;
    }
    workspace.close(d.key);
    if (!workspace.docs.length) newWorkflow();
    else activate(workspace.active);
  }

  return { openDoc, openWorkflow, openApiPrompt, activate, openTemplate, openSaved, newWorkflow, closeTab };
}
