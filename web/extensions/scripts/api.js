// ComfyUI's /scripts/api.js: the one api shim (web/extensions/api.js).
export * from '/extensions/api.js';
