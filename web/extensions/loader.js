// Loads custom node packs' frontend extensions (GET /extensions: the .js files of their WEB_DIRECTORY) into the
// ComfyUI `app` shim and runs the hooks Chisel's editor supports. Each extension runs alone: one that fails to
// import, throws in a hook, or needs hooks the editor does not run is reported through `notify`, and the rest (and
// the editor) go on.

import { app as sharedApp, SUPPORTED_HOOKS } from './app.js';
import { bindApi } from './api.js';

const KNOWN_UNSUPPORTED = ['nodeCreated', 'loadedGraphNode', 'getCustomWidgets', 'beforeConfigureGraph',
  'afterConfigureGraph', 'getSelectionToolboxCommands', 'commands', 'keybindings', 'menuCommands',
  'settings', 'bottomPanelTabs', 'aboutPageBadges'];

/**
 * @param {object} deps api (Chisel's client: fetch helper + on()), objectInfo ({name: entry}), notify(text, kind),
 *   importModule(url) (injectable for tests), listExtensions() -> urls, app (the shim; tests pass their own)
 * @returns {Promise<{loaded: string[], failed: {url?: string, name?: string, error: string}[], unsupported: object}>}
 */
export async function loadExtensions({
  api, objectInfo = {}, notify = () => {}, importModule = (url) => import(url),
  listExtensions = async () => (await globalThis.fetch('/extensions')).json(), app = sharedApp,
} = {}) {
  if (api) bindApi(api);
  const failed = [];
  const unsupported = {};
  let urls = [];
  try {
    urls = await listExtensions();
  } catch (error) {
    failed.push({ error: `listing extensions failed: ${error.message}` });
  }
  const before = app.extensions.length;
  for (const url of urls) {
    try {
      await importModule(url);
    } catch (error) {
      failed.push({ url, error: error.message });
      notify(`Custom node extension ${url} failed to load: ${error.message}`, 'warn');
    }
  }
  const added = app.extensions.slice(before);
  const alive = [];
  for (const extension of added) {
    const missing = Object.keys(extension).filter((key) => typeof extension[key] === 'function'
      && !SUPPORTED_HOOKS.includes(key) && KNOWN_UNSUPPORTED.includes(key));
    if (missing.length) {
      unsupported[extension.name] = missing;
      notify(`Custom node extension ${extension.name} uses ${missing.join(', ')}, which Chisel's editor does `
        + 'not run; its other hooks run.', 'info');
    }
    alive.push(extension);
  }
  const run = async (extension, hook, ...args) => {
    if (typeof extension[hook] !== 'function' || !alive.includes(extension)) return;
    try {
      await extension[hook](...args);
    } catch (error) {
      alive.splice(alive.indexOf(extension), 1);
      failed.push({ name: extension.name, error: `${hook}: ${error.message}` });
      notify(`Custom node extension ${extension.name} failed in ${hook}: ${error.message}`, 'warn');
    }
  };
  for (const extension of [...alive]) await run(extension, 'init', app);
  for (const [name, nodeData] of Object.entries(objectInfo)) {
    const nodeType = app.nodeTypes[name] ?? class {};
    nodeType.comfyClass = name;
    nodeType.title = nodeData.display_name ?? name;
    app.nodeTypes[name] = nodeType;
    for (const extension of [...alive]) await run(extension, 'beforeRegisterNodeDef', nodeType, nodeData, app);
    for (const extension of [...alive]) await run(extension, 'addedNodeDef', nodeType, nodeData, app);
  }
  for (const extension of [...alive]) await run(extension, 'setup', app);
  return { loaded: alive.map((e) => e.name), failed, unsupported };
}
