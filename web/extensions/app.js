// ComfyUI's `scripts/app.js` for custom node packs' frontend extensions (served at /scripts/app.js).
// Extensions call app.registerExtension({name, init, setup, beforeRegisterNodeDef, ...}); the loader
// (extensions/loader.js) imports every pack's scripts, then runs the hooks Chisel's editor supports: init, setup,
// beforeRegisterNodeDef (nodeType: a class per node type, nodeData: its /object_info entry), addedNodeDef. Other
// hooks are reported, and an extension that throws is reported and skipped: never the editor.

import { api } from './api.js';

export const SUPPORTED_HOOKS = Object.freeze(['init', 'setup', 'beforeRegisterNodeDef', 'addedNodeDef']);

function createApp() {
  const extensions = [];
  return {
    api,
    extensions,
    nodeTypes: {},
    /** Registers a frontend extension (ComfyUI's app.registerExtension); a name is required and unique. */
    registerExtension(extension) {
      if (!extension || typeof extension.name !== 'string' || !extension.name) {
        throw new Error('Extensions must have a "name" property.');
      }
      if (extensions.some((e) => e.name === extension.name)) {
        throw new Error(`Extension named '${extension.name}' already registered.`);
      }
      extensions.push(extension);
    },
    ui: { settings: { addSetting() {}, getSettingValue: (id, fallback) => fallback, setSettingValue() {} } },
  };
}

export const app = createApp();
export { createApp };
