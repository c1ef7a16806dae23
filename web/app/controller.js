// The editor's commands (keyboard, menus, buttons) and its reactions to the server: queueing, saving and
// opening workflows, uploads, drag-and-drop, the websocket's execution events and reconnects.

import { Mode, normId } from '../graph/model.js';
import { getWidgetValue, setWidgetValue, WidgetKind } from '../graph/schema.js';
import { graphFromApiPrompt } from '../graph/serialize.js';
import { computeSize, nodeTitle } from '../canvas/layout.js';
import { toGraph } from '../canvas/viewport.js';
import { showHelp } from '../panels/help.js';
import { showSettings } from '../panels/settings.js';
import * as cmd from './commands.js';
import { WorkflowDoc } from './document.js';
import { readDroppedFile } from './files.js';
import { imageRefFromValue } from './images.js';
import { queueWorkflow, QueueError } from './runner.js';
import { resolveSettings } from './settings.js';

function download(name, text) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([text], { type: 'application/json' }));
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

const safeName = (name) => name.replace(/[\\/:*?"<>|]+/g, '_').replace(/\.json$/i, '').trim();

/**
 * @param deps {api, workspace, getDefs, setDefs, tracker, ui: {toasts, dialogs, errors, lightbox, runBar, tabs,
 *   sidebar}, storage (localStorage), settingsStore: {stored, save(id, v)}, fixtures: bool}
 */
export function createController(deps) {
  const { api, workspace, tracker, ui, storage, settingsStore } = deps;
  let editor = null;
  let pasteKeepsLinks = false;
  let persistTimer = null;

  const doc = () => workspace.active;
  const notify = (m, kind) => ui.toasts.notify(m, kind);

  function changed(record = false) {
    if (record) doc().checkpoint();
    editor?.redraw();
    ui.tabs.render();
    clearTimeout(persistTimer);
    persistTimer = setTimeout(() => workspace.persist(), 400);
  }

  function imageUrls(d, node) {
    const previews = d.exec.previews.get(node.id);
    if (previews && d.exec.running !== null) return [previews];
    const outs = d.exec.outputs.get(node.id);
    if (outs?.length) return outs.map((im) => api.viewUrl(im));
    const def = deps.getDefs().get(node.type);
    const upload = def?.widgets.find((w) => w.kind === WidgetKind.UPLOAD);
    if (upload) {
      const target = def.widgets.find((w) => w.name === upload.target);
      const value = getWidgetValue(node, target);
      if (value) return [api.viewUrl(imageRefFromValue(value))];
    }
    return [];
  }

  // ---- opening workflows ----

  function openDoc(newDoc) {
    workspace.open(newDoc);
    activate(newDoc);
    return newDoc;
  }

  function openWorkflow(json, { name, path = null } = {}) {
    try {
      const d = workspace.openWorkflow(json, { name: workspace.uniqueName(name ?? 'Unsaved Workflow'), path });
      activate(d);
      ui.tour?.opened(d);
      return d;
    } catch (e) {
      notify(`Cannot open ${name ?? 'workflow'}: ${e.message}`, 'error');
      return null;
    }
  }

  function openApiPrompt(prompt, name) {
    const defs = deps.getDefs();
    const graph = graphFromApiPrompt(prompt, { defs,
      sizeOf: (node, def) => computeSize(node, def?.widgets ?? [], nodeTitle(node, def)) });
    const d = openDoc(new WorkflowDoc({ graph, defs, name: workspace.uniqueName(name) }));
    editor.fit();
    return d;
  }

  function activate(d) {
    workspace.activate(d.key);
    editor?.closeEditors();
    ui.errors.close();
    if (d.graph.nodes.size && !d.graph.extra.ds && editor) editor.fit();
    changed();
    updateProgress();
  }

  async function openTemplate(module, name) {
    try {
      const json = deps.fixtures ? await (await fetch('test/fixtures/default_workflow.json')).json()
        : await api.template(module, name);
      const d = openWorkflow(json, { name });
      if (d) editor?.fit();
      return d;
    } catch (e) {
      notify(`Cannot open the template ${name}: ${e.message}`, 'error');
      return null;
    }
  }

  async function openSaved(path, name) {
    try {
      const json = await api.getUserData(path);
      return openWorkflow(json, { name, path });
    } catch (e) {
      notify(`Cannot open ${path}: ${e.message}`, 'error');
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

  // ---- saving ----

  async function save({ as = false } = {}) {
    const d = doc();
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
          notify(`Saved ${safeName(name)}`, 'success');
          changed();
          ui.sidebar.refreshWorkflows();
          return true;
        } catch (e) {
          if (e.status !== 409) { notify(`Save failed: ${e.message}`, 'error'); return false; }
          if (!(await ui.dialogs.confirm(`"${safeName(name)}" exists. Overwrite it?`, { okLabel: 'Overwrite' }))) return false;
        }
      }
    }
    try {
      await api.saveUserData(path, d.toWorkflow(), { overwrite: true });
      d.markSaved({ path, name: path.replace(/^workflows\//, '').replace(/\.json$/, '') });
      notify(`Saved ${d.name}`, 'success');
      changed();
      ui.sidebar.refreshWorkflows();
      return true;
    } catch (e) {
      notify(`Save failed: ${e.message}`, 'error');
      return false;
    }
  }

  async function exportApi() {
    try {
      const { prompt } = await api.convertWorkflow(doc().toWorkflow());
      download(`${safeName(doc().name)}_api.json`, JSON.stringify(prompt, null, 2));
    } catch (e) {
      notify(`Export (API) failed: ${e.message}`, 'error');
    }
  }

  // ---- running ----

  async function queue({ front = false, count = ui.runBar.batchCount() } = {}) {
    const d = doc();
    editor.closeEditors();
    ui.errors.close();
    try {
      const queued = await queueWorkflow({ api, doc: d, tracker, front, count });
      notify(`Queued ${queued.length > 1 ? `${queued.length} runs` : `#${queued[0].number}`}${front ? ' at the front' : ''}`,
        'success');
    } catch (e) {
      if (e instanceof QueueError && e.nodeErrors.size) ui.errors.showValidation(e.message, e.nodeErrors, d);
      else ui.errors.showMessage('Cannot queue', e.message);
    }
    changed();
    ui.sidebar.refreshQueue();
  }

  function updateProgress() {
    const p = tracker.progress();
    if (!p) {
      ui.runBar.setProgress(null);
      document.title = `${doc()?.modified ? '*' : ''}${doc()?.name ?? ''} - Chisel`;
      return;
    }
    const d = workspace.docs.find((x) => x.exec.promptIds.has(p.promptId)) ?? doc();
    const node = d?.graph.getNode(p.node);
    ui.runBar.setProgress({ ...p, nodeTitle: node ? nodeTitle(node, deps.getDefs().get(node.type)) : '' });
    document.title = `[${Math.round((p.overall ?? p.nodeFraction) * 100)}%] ${doc()?.name ?? ''} - Chisel`;
  }

  /** Execution events; a node with new results has already grown to show them (node_area.js). */
  function onExecution(kind, detail) {
    if (kind === 'queue') ui.runBar.setQueue(detail.queueRemaining);
    if (kind === 'error') {
      ui.errors.showExecution(detail, detail.doc);
      notify(`Run failed: ${detail.exception_message}`, 'error');
    }
    if (kind === 'done' || kind === 'success' || kind === 'interrupted' || kind === 'error') ui.sidebar.refreshQueue();
    updateProgress();
    editor?.redraw();
  }

  /** After a reconnect (or at start): adopt what is running; finish what ended while we were away. */
  async function resync() {
    let q;
    try {
      q = await api.getQueue();
    } catch {
      return;
    }
    const running = q.queue_running?.[0];
    const ours = tracker.running;
    if (ours && running?.[1] !== ours.promptId) {
      try {
        const hist = await api.getHistoryItem(ours.promptId);
        const entry = hist?.[ours.promptId];
        const d = workspace.docs.find((x) => x.exec.promptIds.has(ours.promptId));
        if (entry && d) {
          for (const [id, out] of Object.entries(entry.outputs ?? {})) tracker.showOutput(d, normId(id), out);
        }
      } catch {
        // history unavailable: just clear the running state
      }
      tracker.finish(ours.promptId);
    }
    if (running && !ours) tracker.adoptPrompt(running[1], doc(), Object.keys(running[2] ?? {}).length);
    ui.runBar.setQueue((q.queue_running?.length ?? 0) + (q.queue_pending?.length ?? 0));
    ui.sidebar.refreshQueue();
    updateProgress();
    editor?.redraw();
  }

  // ---- files, uploads, paste ----

  async function uploadTo(node, file) {
    const def = deps.getDefs().get(node.type);
    const upload = def?.widgets.find((w) => w.kind === WidgetKind.UPLOAD);
    const target = def?.widgets.find((w) => w.name === upload?.target);
    if (!target) return;
    try {
      const res = await api.uploadImage(file);
      const value = res.subfolder ? `${res.subfolder}/${res.name}` : res.name;
      if (!target.choices.includes(value)) target.choices.push(value);
      setWidgetValue(node, target, value);
      changed(true);
    } catch (e) {
      notify(`Upload failed: ${e.message}`, 'error');
    }
  }

  function chooseUpload(node) {
    const input = document.createElement('input');
    input.type = 'file';
    input.accept = 'image/*';
    input.onchange = () => input.files[0] && uploadTo(node, input.files[0]);
    input.click();
  }

  function loadImageNodeAt(pos) {
    const d = doc();
    const node = cmd.createNode(d, 'LoadImage', pos);
    d.selection = new Set([node.id]);
    return node;
  }

  /** Opens dropped files; an image dropped on a LoadImage node (or onto the canvas) is uploaded to it. */
  async function handleFiles(files, screenPoint = null) {
    const at = screenPoint ? toGraph(doc().vp, screenPoint) : editor.center();
    for (const file of files) {
      let got;
      try {
        got = await readDroppedFile(file);
      } catch (e) {
        notify(`Cannot read ${file.name}: ${e.message}`, 'error');
        continue;
      }
      if (got.kind === 'workflow') openWorkflow(got.json, { name: got.name });
      else if (got.kind === 'api') openApiPrompt(got.json, got.name);
      else if (got.kind === 'image') {
        const hit = screenPoint ? nodeAt(at) : null;
        const target = hit && deps.getDefs().get(hit.type)?.widgets.some((w) => w.kind === WidgetKind.UPLOAD) ? hit
          : doc().selectedNodes().find((n) => n.type === 'LoadImage') ?? loadImageNodeAt(at);
        await uploadTo(target, file);
      } else notify(got.reason, 'warn');
    }
  }

  function nodeAt(p) {
    const nodes = [...doc().graph.nodes.values()].reverse();
    return nodes.find((n) => p[0] >= n.pos[0] && p[0] <= n.pos[0] + n.size[0] && p[1] >= n.pos[1] - 30
      && p[1] <= n.pos[1] + n.size[1]) ?? null;
  }

  function onPaste(e) {
    if (/^(INPUT|TEXTAREA)$/.test(e.target?.tagName ?? '')) return;
    const files = [...(e.clipboardData?.files ?? [])];
    if (files.length) {
      e.preventDefault();
      handleFiles(files);
      return;
    }
    const text = e.clipboardData?.getData('text/plain');
    if (text && /^\s*\{/.test(text)) {
      try {
        const json = JSON.parse(text);
        if (Array.isArray(json.nodes) && Array.isArray(json.links)) {
          e.preventDefault();
          openWorkflow(json, { name: 'Pasted workflow' });
          return;
        }
      } catch {
        // not JSON: fall through to the node clipboard
      }
    }
    e.preventDefault();
    pasteAt(editor.pointer ?? editor.center(), pasteKeepsLinks);
  }

  function pasteAt(at, keepInputLinks) {
    const added = cmd.pasteClipboard(doc(), storage, at, { keepInputLinks });
    if (added.length) changed();
  }

  // ---- titles ----

  async function renameNode(node) {
    const def = deps.getDefs().get(node.type);
    const title = await ui.dialogs.prompt('Node title', nodeTitle(node, def));
    if (title === null) return;
    if (!title || title === def?.displayName) delete node.title;
    else node.title = title;
    changed(true);
  }

  async function renameGroup(group) {
    const title = await ui.dialogs.prompt('Group title', group.title);
    if (title === null) return;
    group.title = title;
    changed(true);
  }

  // ---- settings ----

  function openSettings() {
    showSettings(ui.dialogs, settingsStore.stored, (id, value) => {
      settingsStore.save(id, value);
      editor.redraw();
    });
  }

  // ---- the command table (keymap names) ----

  const selectedOrAll = () => (doc().selection.size ? doc().selectedNodes() : []);
  const table = {
    queue: (opts = {}) => queue({ ...opts, front: false }),
    queueFront: (opts = {}) => queue({ ...opts, front: true }),
    interrupt: () => api.interrupt(tracker.running?.promptId).catch((e) => notify(e.message, 'error')),
    undo: () => { if (doc().undo()) changed(); },
    redo: () => { if (doc().redo()) changed(); },
    save: () => save(),
    saveAs: () => save({ as: true }),
    open: () => ui.openFilePicker(),
    newWorkflow,
    selectAll: () => { cmd.selectAll(doc()); editor.redraw(); },
    copy: () => { if (cmd.copySelection(doc(), storage)) notify(`Copied ${doc().selection.size} node(s)`, 'info'); },
    paste: () => pasteAt(editor.pointer ?? editor.center(), false),
    pasteWithLinks: () => pasteAt(editor.pointer ?? editor.center(), true),
    duplicate: () => { cmd.duplicateSelection(doc()); changed(); },
    delete: () => { if (cmd.deleteSelection(doc())) changed(); else editor.redraw(); },
    group: () => { if (cmd.groupSelection(doc())) changed(); },
    mute: () => { cmd.toggleMode(doc(), Mode.NEVER); changed(); },
    bypass: () => { cmd.toggleMode(doc(), Mode.BYPASS); changed(); },
    collapse: () => { cmd.toggleCollapse(doc()); changed(); },
    pin: () => { cmd.togglePin(doc()); changed(); },
    fitView: () => editor.fit(selectedOrAll()),
    zoomIn: () => editor.zoom(1.1),
    zoomOut: () => editor.zoom(1 / 1.1),
    clear: async () => {
      if (await ui.dialogs.confirm('Remove every node of this workflow?', { okLabel: 'Clear', danger: true })) {
        cmd.clearGraph(doc());
        changed();
      }
    },
    refresh: () => deps.refreshDefs().then(() => { notify('Node definitions refreshed', 'info'); editor.redraw(); }),
    togglePanelQueue: () => ui.sidebar.toggle('queue'),
    togglePanelWorkflows: () => ui.sidebar.toggle('workflows'),
    settings: openSettings,
    help: () => showHelp(ui.dialogs),
    exportWorkflow: () => download(`${safeName(doc().name)}.json`, JSON.stringify(doc().toWorkflow(), null, 2)),
    exportApi,
  };

  return {
    table,
    run(name) {
      const fn = table[name];
      if (fn) fn();
    },
    setEditor(e) { editor = e; },
    setPasteKeepsLinks(v) { pasteKeepsLinks = v; },
    changed,
    redraw: () => editor?.redraw(),
    imageUrls,
    openWorkflow,
    openApiPrompt,
    openTemplate,
    openSaved,
    closeTab,
    activate,
    newWorkflow,
    handleFiles,
    onPaste,
    pasteAt,
    chooseUpload,
    renameNode,
    renameGroup,
    onExecution,
    resync,
    updateProgress,
    addNodeAt: (type, at) => { cmd.addNode(doc(), type, at); changed(); },
    addGroupAt: (at) => {
      doc().graph.addGroup({ title: 'Group', bounding: [at[0], at[1], 400, 300] });
      changed(true);
    },
    resolveSettings: () => resolveSettings(settingsStore.stored),
  };
}
