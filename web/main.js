// Wiring only: builds the API client, node definitions, workspace, editor, panels and controller, and connects
// their events. `?fixtures` runs without a server (fixture object_info, no websocket) for development and the
// redraw benchmark.

import { createApi } from './api.js';
import { buildNodeDefs } from './graph/schema.js';
import { createEditor } from './app/editor.js';
import { createController } from './app/controller.js';
import { createExecutionTracker } from './app/execution.js';
import { createImageStore } from './app/images.js';
import { createNodeArea } from './app/node_area.js';
import { queryString } from './app/sigma_curves.js';
import { areaRect } from './canvas/inspector.js';
import { toGraph } from './canvas/viewport.js';
import { commandFor, withBindings } from './app/keymap.js';
import { KEYBINDINGS_SETTING } from './panels/keybindings.js';
import * as menuItems from './app/menus.js';
import { Workspace } from './app/workspace.js';
import { createMenus } from './panels/contextmenu.js';
import { createDialogs } from './panels/dialogs.js';
import { createErrorPanel } from './panels/errors.js';
import { createLightbox } from './panels/lightbox.js';
import { createMaskEditor } from './panels/mask_editor.js';
import { createModelLibrary, MODEL_DRAG_TYPE } from './panels/model_library.js';
import { createNodeLibrary, NODE_DRAG_TYPE } from './panels/node_library.js';
import { createMinimap } from './panels/minimap.js';
import { paletteOf } from './canvas/theme.js';
import { tooltipFor } from './app/tooltips.js';
import { createTooltip } from './panels/tooltip.js';
import { createQueuePanel } from './panels/queue.js';
import { createAssetsPanel } from './panels/assets.js';
import { createSearchBox } from './panels/search.js';
import { createSidebar } from './panels/sidebar.js';
import { renderTabs } from './panels/tabs.js';
import { createToasts } from './panels/toasts.js';
import { createRunBar } from './panels/topbar.js';
import { createTourPanel } from './panels/tour.js';
import { createWorkflowsPanel } from './panels/workflows.js';
import { createEditors } from './widgets/editors.js';
import { createBreadcrumb } from './subgraph/breadcrumb.js';
import { registerSubgraphDefs } from './subgraph/definition.js';
import { loadExtensions } from './extensions/loader.js';
import { breadcrumb, topGraph } from './subgraph/navigate.js';

const $ = (sel) => document.querySelector(sel);

function icon(path) {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('viewBox', '0 0 20 20');
  svg.setAttribute('width', '18');
  svg.setAttribute('height', '18');
  svg.innerHTML = `<path d="${path}" fill="none" stroke="currentColor" stroke-width="1.6" stroke-linejoin="round"/>`;
  return svg;
}
const fixtures = new URLSearchParams(window.location.search).has('fixtures');

async function loadObjectInfo(api) {
  if (fixtures) return (await fetch('test/fixtures/object_info.json')).json();
  return api.objectInfo();
}

function createSettingsStore(api, stored) {
  return {
    stored,
    save(id, value) {
      stored[id] = value;
      localStorage.setItem('chisel.settings', JSON.stringify(stored));
      if (!fixtures) api.setSetting(id, value).catch(() => {});
    },
  };
}

async function boot() {
  const api = createApi();
  const toasts = createToasts($('#toasts'));
  let defs;
  let objectInfo;
  try {
    objectInfo = await loadObjectInfo(api);
    defs = buildNodeDefs(objectInfo);
  } catch (e) {
    $('#boot-error').hidden = false;
    $('#boot-error .message').textContent = `Cannot load the node definitions: ${e.message}`;
    return;
  }
  const localSettings = JSON.parse(localStorage.getItem('chisel.settings') ?? '{}');
  const stored = fixtures ? localSettings : await api.getSettings().catch(() => localSettings);
  const settingsStore = createSettingsStore(api, { ...(stored ?? {}) });

  const workspace = new Workspace({ defs, storage: localStorage });
  const dialogs = createDialogs(document.body);
  const menus = createMenus(document.body);
  const lightbox = createLightbox(document.body);
  const maskEditor = createMaskEditor(document.body);
  const search = createSearchBox(document.body, () => defs);
  let controller = null;
  let editor = null;
  let nodeArea = null;
  let tour = null;
  const tracker = createExecutionTracker({
    docs: () => workspace.docs, active: () => workspace.active,
    onChange: (kind, detail) => {
      nodeArea?.onExecution(kind, detail);
      controller?.onExecution(kind, detail);
      tour?.onExecution(kind);
    },
    createUrl: (blob) => URL.createObjectURL(blob), revokeUrl: (url) => URL.revokeObjectURL(url),
  });

  const runBar = createRunBar($('#run'), {
    onQueue: ({ front, count }) => controller.table[front ? 'queueFront' : 'queue']?.({ count }),
    onInterrupt: () => controller.run('interrupt'),
  });
  const errors = createErrorPanel(document.body, { onShowNode: (node) => {
    workspace.active.selection = new Set([node.id]);
    editor.centerOn(node);
  } });
  const sidebar = createSidebar($('#rail'), $('#sidebar'), {
    nodes: { icon: icon('M3 3h6v6H3zM11 11h6v6h-6zM9 6h4v5'), title: 'Node library (N)', label: 'Nodes',
      onOpen: () => nodeLibrary.refresh() },
    models: { icon: icon('M10 2l7 4v8l-7 4-7-4V6zM3 6l7 4 7-4M10 10v8'), title: 'Model library (M)', label: 'Models',
      onOpen: () => modelLibrary.refresh() },
    queue: { icon: icon('M3 5h14M3 10h14M3 15h9'), title: 'Queue and history (Q)', label: 'Queue',
      onOpen: () => queuePanel.refresh() },
    assets: { icon: icon('M3 3h6v6H3zM11 3h6v6h-6zM3 11h6v6H3zM11 11h6v6h-6z'), title: 'Assets: past runs\' images',
      label: 'Assets', onOpen: () => assetsPanel.refresh() },
    workflows: { icon: icon('M3 6h5l2 2h7v8H3z'), title: 'Workflows (W)', label: 'Workflows',
      onOpen: () => workflowsPanel.refresh() },
  });
  const nodeLibrary = createNodeLibrary(sidebar.body('nodes'), { getDefs: () => defs,
    onAdd: (type) => controller.addNodeAt(type, editor.center()) });
  const modelLibrary = createModelLibrary(sidebar.body('models'), { api, notify: toasts.notify,
    onAdd: (folder, name) => controller.addModelLoader(folder, name) });
  const queuePanel = createQueuePanel(sidebar.body('queue'), {
    api, notify: toasts.notify,
    onImage: (urls, i) => lightbox.open(urls, i),
    onLoadWorkflow: (wf, id) => (wf ? controller.openWorkflow(wf, { name: `Run ${id.slice(0, 8)}` })
      : toasts.notify('This run has no workflow attached', 'warn')),
  });
  const assetsPanel = createAssetsPanel(sidebar.body('assets'), {
    api, lightbox, notify: toasts.notify, onQueued: () => ui.sidebar.refreshQueue(),
    onLoadWorkflow: (wf, id) => (wf ? controller.openWorkflow(wf, { name: `Run ${id.slice(0, 8)}` })
      : toasts.notify('This run has no workflow attached', 'warn')),
  });
  const workflowsPanel = createWorkflowsPanel(sidebar.body('workflows'), {
    api, dialogs, notify: toasts.notify,
    onOpenSaved: (path, name) => controller.openSaved(path, name),
    onOpenTemplate: (module, name) => controller.openTemplate(module, name),
    onSave: () => controller.run('save'),
  });
  const tabsEl = $('#tabs');
  const crumbs = createBreadcrumb($('#canvas-wrap'), { onGo: (depth) => controller.subgraphs.exit(depth) });
  const ui = {
    toasts, dialogs, errors, lightbox, runBar, maskEditor,
    tabs: { render: () => {
      renderTabs(tabsEl, workspace, {
        onActivate: (d) => controller.activate(d), onClose: (d) => controller.closeTab(d), onNew: () => controller.newWorkflow(),
      });
      tour?.refresh();
      if (workspace.active) crumbs.render(breadcrumb(workspace.active));
    } },
    sidebar: {
      toggle: sidebar.toggle,
      refreshQueue: () => (sidebar.isOpen('queue') ? queuePanel.refresh()
        : sidebar.isOpen('assets') && assetsPanel.refresh()),
      refreshWorkflows: () => sidebar.isOpen('workflows') && workflowsPanel.refresh(),
    },
    openFilePicker: () => $('#file-open').click(),
  };
  controller = createController({
    api, workspace, tracker, ui, storage: localStorage, settingsStore, fixtures,
    getDefs: () => defs,
    refreshDefs: async () => {
      defs = buildNodeDefs(await loadObjectInfo(api));
      workspace.defs = defs;
      for (const d of workspace.docs) { d.defs = defs; registerSubgraphDefs(topGraph(d), defs); }
    },
  });

  const images = createImageStore({ onLoad: () => editor?.redraw(), limit: 600 });
  nodeArea = createNodeArea({
    getDefs: () => defs, viewUrl: (ref) => api.viewUrl(ref), image: (url) => images.get(url),
    fetchSigmas: (q) => (fixtures ? Promise.reject(new Error('no server')) : api.request(`/chisel/sigmas?${queryString(q)}`)),
    redraw: () => editor?.redraw(), commit: () => controller.changed(true),
  });
  let settingsCache = controller.resolveSettings();
  const editors = createEditors($('#overlay'), { weightDelta: () => settingsCache.weightDelta });
  const tooltip = createTooltip(document.body);
  const minimap = createMinimap($('#canvas-wrap'), {
    getScene: () => ({ graph: workspace.active.graph, vp: workspace.active.vp, screen: editor.size,
      exec: workspace.active.exec, selection: workspace.active.selection, theme: paletteOf(settingsCache.palette) }),
    onMove: () => editor.redraw(),
  });
  const ctxFor = (at) => ({ doc: workspace.active, defs, at, commands: { ...controller, run: controller.run,
    lightbox: (node) => lightbox.open(controller.imageUrls(workspace.active, node)),
    compareImages: (node) => lightbox.open(controller.imageUrls(workspace.active, node).slice(0, 2), 1,
      { comparing: true }) },
  imageUrls: (node) => controller.imageUrls(workspace.active, node) });
  editor = createEditor({
    canvas: $('#graph-canvas'), getDoc: () => workspace.active, getDefs: () => defs,
    settings: () => settingsCache, editors, menus,
    imagesFor: (d, node) => controller.imageUrls(d, node).map((u) => images.get(u)), area: nodeArea,
    onChange: () => controller.changed(),
    afterDraw: [() => {
      if (minimap.visible !== settingsCache.showMinimap) minimap.setVisible(settingsCache.showMinimap);
      document.body.classList.toggle('light', settingsCache.palette === 'light');
      minimap.draw();
    }],
    hooks: {
      hover: (hit, at) => {
        const tip = hit && tooltipFor(hit, defs);
        tooltip.show(tip, at, tip && `${hit.node.id}|${hit.kind}|${hit.slot ?? ''}|${hit.widget?.name ?? ''}`);
      },
      openSearch: (opts) => search.open(opts),
      closePopups: () => menus.close(),
      notify: (m, kind) => toasts.notify(m, kind),
      nodeMenu: (node, at) => menus.open(menuItems.nodeMenu(ctxFor(null), node), at),
      canvasMenu: (p, at) => menus.open(menuItems.canvasMenu(ctxFor(p)), at),
      groupMenu: (group, at) => menus.open(menuItems.groupMenu(ctxFor(null), group), at),
      linkMenu: (link, at, point) => menus.open(menuItems.linkMenu(ctxFor(null), link, point), at),
      rerouteMenu: (r, at) => menus.open(menuItems.rerouteMenu(ctxFor(null), r), at),
      lightbox: (node) => lightbox.open(nodeArea.imageUrls(workspace.active, node)
        ?? controller.imageUrls(workspace.active, node)),
      areaGesture: (node, p) => {
        const rect = areaRect(editor.scene().frame, node);
        return rect && nodeArea.gesture(workspace.active, node, rect, p);
      },
      chooseUpload: (node) => controller.chooseUpload(node),
      renameNode: (node) => controller.renameNode(node),
      openSubgraph: (node) => controller.subgraphs.open(node.id),
      renameGroup: (group) => controller.renameGroup(group),
    },
  });
  controller.setEditor(editor);
  tour = createTourPanel($('#canvas-wrap'), { workspace, area: nodeArea, editor, run: () => controller.run('queue'),
    openTemplate: (name) => controller.openTemplate('chisel', name) });
  ui.tour = tour;
  const origSave = settingsStore.save;
  settingsStore.save = (id, v) => { origSave(id, v); settingsCache = controller.resolveSettings(); editor.redraw(); };

  // first start: the default template; later starts: the tabs left open
  if (!workspace.restore()) {
    const templates = fixtures ? { chisel: ['txt2img'] } : await api.templates().catch(() => ({}));
    const d = templates?.chisel?.includes('txt2img') ? await controller.openTemplate('chisel', 'txt2img') : null;
    if (!d) controller.newWorkflow();
  } else controller.activate(workspace.active);

  // keyboard, paste, drop, file open
  let pasteFallback = null;
  window.addEventListener('keydown', (e) => {
    if (document.querySelector('.modal-backdrop') || lightbox.isOpen || maskEditor.isOpen) return;
    const command = commandFor(e, withBindings(settingsStore.stored[KEYBINDINGS_SETTING]));
    if (!command) return;
    if (command === 'paste' || command === 'pasteWithLinks') {
      // the paste event follows (with any image on the system clipboard); paste nodes if it does not come
      controller.setPasteKeepsLinks(command === 'pasteWithLinks');
      clearTimeout(pasteFallback);
      pasteFallback = setTimeout(() => controller.run(command), 80);
      return;
    }
    e.preventDefault();
    controller.run(command);
  });
  document.addEventListener('paste', (e) => {
    clearTimeout(pasteFallback);
    controller.onPaste(e);
  });
  const wrap = $('#canvas-wrap');
  wrap.addEventListener('dragover', (e) => {
    e.preventDefault();
    const types = [...(e.dataTransfer?.types ?? [])];
    if (!types.includes(NODE_DRAG_TYPE) && !types.includes(MODEL_DRAG_TYPE)) wrap.classList.add('dropping');
  });
  wrap.addEventListener('dragleave', () => wrap.classList.remove('dropping'));
  wrap.addEventListener('drop', (e) => {
    e.preventDefault();
    wrap.classList.remove('dropping');
    const r = wrap.getBoundingClientRect();
    const at = toGraph(workspace.active.vp, [e.clientX - r.left, e.clientY - r.top]);
    const nodeType = e.dataTransfer?.getData(NODE_DRAG_TYPE);
    if (nodeType) return void controller.addNodeAt(nodeType, at);
    const model = e.dataTransfer?.getData(MODEL_DRAG_TYPE);
    if (model) {
      const { folder, name } = JSON.parse(model);
      return void controller.addModelLoader(folder, name, at);
    }
    controller.handleFiles([...(e.dataTransfer?.files ?? [])], [e.clientX - r.left, e.clientY - r.top]);
  });
  $('#file-open').addEventListener('change', (e) => {
    controller.handleFiles([...e.target.files]);
    e.target.value = '';
  });
  $('#menu-button').addEventListener('click', (e) => {
    const r = e.currentTarget.getBoundingClientRect();
    const t = controller.table;
    menus.open([
      { label: 'New', action: t.newWorkflow },
      { label: 'Open…', hint: 'Ctrl+O', action: t.open },
      { label: 'Save', hint: 'Ctrl+S', action: t.save },
      { label: 'Save as…', hint: 'Ctrl+Shift+S', action: t.saveAs },
      { label: 'Export', action: t.exportWorkflow },
      { label: 'Export (API)', action: t.exportApi },
      { label: 'Templates…', action: () => sidebar.toggle('workflows') },
      { label: 'Guided tour', action: () => tour.open(workspace.active) },
      { separator: true },
      { label: 'Undo', hint: 'Ctrl+Z', action: t.undo },
      { label: 'Redo', hint: 'Ctrl+Y', action: t.redo },
      { separator: true },
      { label: 'Settings', hint: 'Ctrl+,', action: t.settings },
      { label: 'Keyboard shortcuts', hint: '?', action: t.help },
      { label: 'Edit keybindings…', action: t.keybindings },
    ], [r.left, r.bottom + 4]);
  });
  $('#help-button').addEventListener('click', () => controller.run('help'));
  $('#settings-button').addEventListener('click', () => controller.run('settings'));
  window.addEventListener('beforeunload', () => workspace.persist());

  // server events
  api.on('message', (msg) => tracker.handle(msg));
  api.on('binary', (msg) => { if (msg.image) tracker.handlePreview(msg); });
  api.on('connected', () => { runBar.setConnected(true); controller.resync(); });
  api.on('reconnected', () => { runBar.setConnected(true); toasts.notify('Reconnected', 'success'); controller.resync(); });
  api.on('disconnected', () => { runBar.setConnected(false); toasts.notify('Connection lost, reconnecting…', 'warn'); });
  if (!fixtures) api.connect();
  // Custom node packs' frontend extensions: each runs alone; a failing one is reported, never the editor.
  if (!fixtures) {
    loadExtensions({ api, objectInfo, notify: toasts.notify })
      .catch((e) => toasts.notify(`Custom node extensions: ${e.message}`, 'warn'));
  }

  controller.changed();
  editor.drawNow();
  document.body.classList.add('ready');
  performance.mark('chisel-ready');
  window.chisel = { api, workspace, editor, controller, tracker, area: nodeArea, tour, lightbox, maskEditor,
    get defs() { return defs; } };
}

boot();
