// The editor's commands (keyboard, menus, buttons) and its reactions to the server. This file only builds the
// shared context and joins the features, each in its own file: opening.js (tabs, workflows, API prompts,
// templates), saving.js (save, export), running.js (queue, progress, execution events, resync), transfer.js
// (uploads, dropped/pasted files, clipboard, node images, mask editing, model loaders), model_hints.js (the
// loaded model's suggested defaults for new nodes), titles.js, and the command table below.

import { Mode } from '../graph/model.js';
import { showHelp } from '../panels/help.js';
import { KEYBINDINGS_SETTING, showKeybindings } from '../panels/keybindings.js';
import { withBindings } from './keymap.js';
import { showSettings } from '../panels/settings.js';
import * as cmd from './commands.js';
import { createModelHints } from './model_hints.js';
import { createOpening } from './opening.js';
import { createRunning } from './running.js';
import { createSaving } from './saving.js';
import { createTitles } from './titles.js';
import { createTransfer } from './transfer.js';
import { resolveSettings } from './settings.js';
import { createSubgraphEditing } from '../subgraph/editing.js';

/**
 * @param deps {api, workspace, getDefs, setDefs, tracker, ui: {toasts, dialogs, errors, lightbox, runBar, tabs,
 *   sidebar}, storage (localStorage), settingsStore: {stored, save(id, v)}, fixtures: bool}
 */
export function createController(deps) {
  const { api, workspace, tracker, ui, storage, settingsStore } = deps;
  let editor = null;
  let persistTimer = null;

  /** What every feature file gets: the services, the active document, notifications and change handling. */
  const c = {
    api, workspace, tracker, ui, storage, settingsStore, deps,
    editor: () => editor,
    doc: () => workspace.active,
    notify: (m, kind) => ui.toasts.notify(m, kind),
    changed(record = false) {
      if (record) workspace.active.checkpoint();
      hints.update(workspace.active);
      editor?.redraw();
      ui.tabs.render();
      clearTimeout(persistTimer);
      persistTimer = setTimeout(() => workspace.persist(), 400);
    },
    updateProgress: () => running.updateProgress(),
  };
  const hints = createModelHints(c);
  const running = createRunning(c);
  const opening = createOpening(c);
  const saving = createSaving(c);
  const transfer = createTransfer(c, opening);
  const titles = createTitles(c);
  const subgraphs = createSubgraphEditing(c);
  const doc = c.doc;
  const changed = c.changed;

  function openSettings() {
    showSettings(ui.dialogs, settingsStore.stored, (id, value) => {
      settingsStore.save(id, value);
      editor.redraw();
    });
  }

  const selectedOrAll = () => (doc().selection.size ? doc().selectedNodes() : []);
  const here = () => editor.pointer ?? editor.center();
  /** The command table (the keymap's names): every keyboard shortcut, menu item and button runs one of these. */
  const table = {
    queue: (opts = {}) => running.queue({ ...opts, front: false }),
    queueFront: (opts = {}) => running.queue({ ...opts, front: true }),
    queueSelectedOutputs: () => running.queueSelectedOutputs(),
    interrupt: () => api.interrupt(tracker.running?.promptId).catch((e) => c.notify(e.message, 'error')),
    undo: () => { if (doc().undo()) changed(); },
    redo: () => { if (doc().redo()) changed(); },
    save: () => saving.save(),
    saveAs: () => saving.save({ as: true }),
    open: () => ui.openFilePicker(),
    newWorkflow: opening.newWorkflow,
    selectAll: () => { cmd.selectAll(doc()); editor.redraw(); },
    copy: () => { if (cmd.copySelection(doc(), storage)) c.notify(`Copied ${doc().selection.size} node(s)`, 'info'); },
    paste: () => transfer.pasteAt(here(), false),
    pasteWithLinks: () => transfer.pasteAt(here(), true),
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
    refresh: () => deps.refreshDefs().then(() => { c.notify('Node definitions refreshed', 'info'); editor.redraw(); }),
    togglePanelQueue: () => ui.sidebar.toggle('queue'),
    togglePanelWorkflows: () => ui.sidebar.toggle('workflows'),
    togglePanelNodes: () => ui.sidebar.toggle('nodes'),
    togglePanelModels: () => ui.sidebar.toggle('models'),
    toggleMinimap: () => settingsStore.save('Comfy.Minimap.Visible', !resolveSettings(settingsStore.stored).showMinimap),
    settings: openSettings,
    help: () => showHelp(ui.dialogs, withBindings(settingsStore.stored[KEYBINDINGS_SETTING])),
    keybindings: () => showKeybindings(ui.dialogs, settingsStore.stored, (id, v) => settingsStore.save(id, v)),
    exportWorkflow: saving.exportWorkflow,
    exportApi: saving.exportApi,
    ...subgraphs.commands,
  };

  return {
    table,
    run(name) {
      const fn = table[name];
      if (fn) fn();
    },
    setEditor(e) { editor = e; },
    setPasteKeepsLinks: transfer.setPasteKeepsLinks,
    changed,
    redraw: () => editor?.redraw(),
    ...opening,
    ...running,
    ...transfer,
    ...titles,
    subgraphs,
    addNodeAt: (type, at) => {
      const node = cmd.addNode(doc(), type, at);
      changed();
      return node;
    },
    addGroupAt: (at) => {
      doc().graph.addGroup({ title: 'Group', bounding: [at[0], at[1], 400, 300] });
      changed(true);
    },
    resolveSettings: () => resolveSettings(settingsStore.stored),
  };
}
