// ComfyUI's /scripts/app.js: the one app shim (web/extensions/app.js), whatever URL an extension imports it by.
export * from '/extensions/app.js';
