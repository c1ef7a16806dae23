// ComfyUI's `scripts/api.js` for frontend extensions (served at /scripts/api.js): server events and fetchApi,
// bridged to Chisel's API client once the editor binds it (extensions/loader.js).

const events = new EventTarget();
let client = null;
const forwarded = new Set();

function forward(type) {
  if (!client || forwarded.has(type)) return;
  forwarded.add(type);
  client.on(type, (detail) => events.dispatchEvent(new CustomEvent(type, { detail })));
}

export const api = {
  api_base: '',
  get clientId() { return client?.clientId ?? null; },
  /** Listens to a websocket message type (event.detail is its data), as ComfyUI's api does. */
  addEventListener(type, listener, options) {
    events.addEventListener(type, listener, options);
    forward(type);
  },
  removeEventListener(type, listener, options) { events.removeEventListener(type, listener, options); },
  apiURL(path) { return `/api${path}`; },
  fileURL(path) { return path; },
  /** fetch() of an API path (`/api` + path), with the editor's credentials. */
  fetchApi(path, init = {}) {
    return globalThis.fetch(`/api${path}`, { credentials: 'same-origin', ...init });
  },
};

/** Binds the shim to Chisel's API client (web/api.js createApi): events registered before and after it flow. */
export function bindApi(chiselApi) {
  client = chiselApi;
  const types = [...forwarded];
  forwarded.clear();
  for (const type of types) forward(type);
}
