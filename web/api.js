// REST + websocket client for the ComfyUI-compatible API (plus Chisel's /api/workflow/convert and templates).
// No global instance: main.js creates one and passes it down. The websocket reconnects by itself, keeping the
// client id, and emits 'reconnected' so the UI can re-read the queue.

/** A non-2xx answer; `body` is the parsed JSON (e.g. {error, node_errors}) or the text. */
export class ApiError extends Error {
  constructor(status, body, path) {
    const msg = body?.error?.message ?? body?.error ?? (typeof body === 'string' ? body : '');
    super(`${path}: HTTP ${status}${msg ? ` (${typeof msg === 'string' ? msg : JSON.stringify(msg)})` : ''}`);
    this.name = 'ApiError';
    this.status = status;
    this.body = body;
    this.path = path;
  }
}

export const BinaryType = Object.freeze({ PREVIEW_IMAGE: 1, TEXT: 3, PREVIEW_IMAGE_WITH_METADATA: 4 });

/** Decodes a binary websocket frame: uint32 BE type, then type 1: uint32 format (1 jpeg, 2 png) + image;
 * type 4: uint32 length + JSON metadata + image; type 3: uint32 length + node id + text. */
export function decodeBinaryMessage(buffer) {
  const view = new DataView(buffer);
  const type = view.getUint32(0);
  const bytes = new Uint8Array(buffer);
  if (type === BinaryType.PREVIEW_IMAGE) {
    const format = view.getUint32(4);
    return { type, mime: format === 2 ? 'image/png' : 'image/jpeg', meta: null, image: bytes.subarray(8) };
  }
  if (type === BinaryType.PREVIEW_IMAGE_WITH_METADATA) {
    const len = view.getUint32(4);
    const meta = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + len)));
    return { type, mime: meta.image_type ?? 'image/jpeg', meta, image: bytes.subarray(8 + len) };
  }
  if (type === BinaryType.TEXT) {
    const len = view.getUint32(4);
    const nodeId = new TextDecoder().decode(bytes.subarray(8, 8 + len));
    return { type, nodeId, text: new TextDecoder().decode(bytes.subarray(8 + len)) };
  }
  return { type };
}

/** Delay before reconnect attempt n (0-based): 0.5 s doubling to 8 s. */
export function reconnectDelay(attempt) {
  return Math.min(8000, 500 * 2 ** attempt);
}

function randomId() {
  return Array.from({ length: 16 }, () => Math.floor(Math.random() * 16).toString(16)).join('')
    + Date.now().toString(16);
}

/**
 * @param {object} deps fetch, WebSocket, storage (sessionStorage-like), location ({protocol, host}), base path,
 *   setTimeout — all injectable for tests.
 */
export function createApi({
  fetch: fetchImpl = globalThis.fetch.bind(globalThis), WebSocket: WebSocketImpl = globalThis.WebSocket,
  storage = globalThis.sessionStorage, location = globalThis.location, base = '',
  setTimeout: setTimer = globalThis.setTimeout.bind(globalThis), user = null,
} = {}) {
  const events = new EventTarget();
  let clientId = storage?.getItem('chisel.clientId') ?? randomId();
  let socket = null;
  let attempts = 0;
  let everConnected = false;
  let stopped = false;
  let connected = false;

  const emit = (type, detail) => events.dispatchEvent(new CustomEvent(type, { detail }));
  const url = (path) => `${base}/api${path}`;

  async function request(path, { method = 'GET', body, json, headers = {} } = {}) {
    const init = { method, headers: { ...headers } };
    if (user) init.headers['Comfy-User'] = user;
    if (json !== undefined) {
      init.body = JSON.stringify(json);
      init.headers['Content-Type'] = 'application/json';
    } else if (body !== undefined) init.body = body;
    const res = await fetchImpl(url(path), init);
    const text = await res.text();
    let data = text;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      // not JSON: keep the text
    }
    if (!res.ok) throw new ApiError(res.status, data, path);
    return data;
  }

  const enc = encodeURIComponent;

  const api = {
    events,
    get clientId() { return clientId; },
    get connected() { return connected; },
    on(type, fn) { events.addEventListener(type, (e) => fn(e.detail)); },
    request,

    objectInfo: () => request('/object_info'),
    systemStats: () => request('/system_stats'),
    embeddings: () => request('/embeddings'),
    modelFolders: () => request('/models'),
    modelFiles: (folder) => request(`/models/${enc(folder)}`),
    modelMetadata: (folder, filename) => request(`/view_metadata/${enc(folder)}?filename=${enc(filename)}`),

    /** UI workflow -> API prompt, by the server's converter (throws ApiError with node_errors on 400). */
    convertWorkflow: (workflow) => request('/workflow/convert', { method: 'POST', json: { workflow } }),
    /**
     * Queues an API prompt (the UI workflow goes along as extra_pnginfo), or, without `prompt`, the UI workflow
     * itself: the server converts it (the answer then carries the converted `prompt`) and embeds it as
     * extra_pnginfo.workflow, so one request queues a run. `targets` (output node ids) runs only those outputs
     * and what they need (ComfyUI's partial_execution_targets).
     */
    queuePrompt: ({ prompt, workflow, front = false, number, targets }) => request('/prompt', {
      method: 'POST',
      json: { ...(prompt !== undefined
        ? { prompt, extra_data: { extra_pnginfo: { workflow } } }
        : { workflow }),
      client_id: clientId, ...(front ? { front: true } : {}), ...(number !== undefined ? { number } : {}),
      ...(targets?.length ? { partial_execution_targets: targets } : {}) },
    }),
    getQueue: () => request('/queue'),
    getWorkers: () => request('/workers'),
    deleteFromQueue: (ids) => request('/queue', { method: 'POST', json: { delete: ids } }),
    clearQueue: () => request('/queue', { method: 'POST', json: { clear: true } }),
    interrupt: (promptId) => request('/interrupt', { method: 'POST', json: promptId ? { prompt_id: promptId } : {} }),
    getHistory: (maxItems = 64) => request(`/history?max_items=${maxItems}`),
    getHistoryItem: (id) => request(`/history/${enc(id)}`),
    deleteHistory: (ids) => request('/history', { method: 'POST', json: { delete: ids } }),
    clearHistory: () => request('/history', { method: 'POST', json: { clear: true } }),

    viewUrl: ({ filename, subfolder = '', type = 'output' }) =>
      url(`/view?filename=${enc(filename)}&subfolder=${enc(subfolder ?? '')}&type=${enc(type ?? 'output')}`),
    uploadImage: (file, { type = 'input', subfolder = '', overwrite = false, name } = {}) => {
      const form = new FormData();
      form.append('image', file, name ?? file.name ?? 'pasted.png');
      form.append('type', type);
      form.append('subfolder', subfolder);
      form.append('overwrite', overwrite ? 'true' : 'false');
      return request('/upload/image', { method: 'POST', body: form });
    },
    /** ComfyUI's mask upload: `file`'s alpha becomes the alpha of `original` ({filename, subfolder, type}). */
    uploadMask: (file, original, { subfolder = 'clipspace', name } = {}) => {
      const form = new FormData();
      form.append('image', file, name ?? file.name ?? 'mask.png');
      form.append('type', 'input');
      form.append('subfolder', subfolder);
      form.append('original_ref', JSON.stringify(original));
      return request('/upload/mask', { method: 'POST', body: form });
    },

    getSettings: () => request('/settings'),
    setSetting: (id, value) => request(`/settings/${enc(id)}`, { method: 'POST', json: value }),

    listWorkflows: () => request('/userdata?dir=workflows&recurse=true&split=false&full_info=true'),
    getUserData: (path) => request(`/userdata/${enc(path)}`),
    saveUserData: (path, data, { overwrite = true } = {}) => request(
      `/userdata/${enc(path)}?overwrite=${overwrite}&full_info=true`,
      { method: 'POST', body: typeof data === 'string' ? data : JSON.stringify(data),
        headers: { 'Content-Type': 'application/json' } },
    ),
    deleteUserData: (path) => request(`/userdata/${enc(path)}`, { method: 'DELETE' }),
    moveUserData: (from, to, { overwrite = false } = {}) =>
      request(`/userdata/${enc(from)}/move/${enc(to)}?overwrite=${overwrite}`, { method: 'POST' }),

    templates: () => request('/workflow_templates'),
    template: (module, name) => request(`/workflow_templates/${enc(module)}/${enc(name)}.json`),

    /** Opens the websocket and keeps it open (reconnecting with backoff) until close(). */
    connect() {
      stopped = false;
      open();
    },
    close() {
      stopped = true;
      socket?.close();
    },
  };

  function open() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocketImpl(`${proto}//${location.host}${base}/ws?clientId=${enc(clientId)}`);
    ws.binaryType = 'arraybuffer';
    socket = ws;
    ws.onopen = () => {
      connected = true;
      attempts = 0;
      ws.send(JSON.stringify({ type: 'feature_flags', data: { supports_preview_metadata: true } }));
      emit(everConnected ? 'reconnected' : 'connected', { clientId });
      everConnected = true;
    };
    ws.onmessage = (event) => {
      if (typeof event.data !== 'string') {
        emit('binary', decodeBinaryMessage(event.data));
        return;
      }
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        return;
      }
      if (msg.type === 'status' && msg.data?.sid) {
        clientId = msg.data.sid;
        storage?.setItem('chisel.clientId', clientId);
      }
      emit('message', msg);
      emit(msg.type, msg.data);
    };
    ws.onclose = () => {
      if (socket !== ws) return;
      const was = connected;
      connected = false;
      if (was) emit('disconnected', {});
      if (stopped) return;
      setTimer(open, reconnectDelay(attempts++));
    };
    ws.onerror = () => {
      // onclose follows and schedules the retry
    };
  }

  return api;
}
