import test from 'node:test';
import assert from 'node:assert/strict';
import { ApiError, createApi, decodeBinaryMessage, reconnectDelay } from './api.js';

function frame(type, head, body) {
  const out = new Uint8Array(4 + head.length + body.length);
  new DataView(out.buffer).setUint32(0, type);
  out.set(head, 4);
  out.set(body, 4 + head.length);
  return out.buffer;
}

function u32(n) {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
}

test('binary type 1 frames carry the image format and bytes', () => {
  const msg = decodeBinaryMessage(frame(1, u32(2), new Uint8Array([9, 8, 7])));
  assert.equal(msg.mime, 'image/png');
  assert.deepEqual([...msg.image], [9, 8, 7]);
});

test('binary type 4 frames carry JSON metadata naming the node', () => {
  const meta = new TextEncoder().encode(JSON.stringify({ node_id: '3', prompt_id: 'p', image_type: 'image/jpeg' }));
  const msg = decodeBinaryMessage(frame(4, new Uint8Array([...u32(meta.length), ...meta]), new Uint8Array([1, 2])));
  assert.equal(msg.meta.node_id, '3');
  assert.equal(msg.mime, 'image/jpeg');
  assert.deepEqual([...msg.image], [1, 2]);
});

test('reconnect delays back off from 0.5 s to at most 8 s', () => {
  assert.deepEqual([0, 1, 2, 3, 4, 5, 9].map(reconnectDelay), [500, 1000, 2000, 4000, 8000, 8000, 8000]);
});

class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.sent = [];
    FakeSocket.all.push(this);
  }
  send(x) { this.sent.push(JSON.parse(x)); }
  close() { this.onclose?.(); }
}

function memoryStorage() {
  const m = new Map();
  return { getItem: (k) => m.get(k) ?? null, setItem: (k, v) => m.set(k, v) };
}

test('the websocket announces preview metadata, adopts the server sid, and reconnects with it', () => {
  FakeSocket.all = [];
  const timers = [];
  const api = createApi({ fetch: async () => {}, WebSocket: FakeSocket, storage: memoryStorage(),
    location: { protocol: 'http:', host: 'h:8188' }, setTimeout: (fn, ms) => timers.push([fn, ms]) });
  const seen = [];
  api.on('connected', () => seen.push('connected'));
  api.on('reconnected', () => seen.push('reconnected'));
  api.on('executing', (d) => seen.push(`executing ${d.node}`));
  api.connect();
  const ws = FakeSocket.all[0];
  ws.onopen();
  assert.deepEqual(ws.sent[0], { type: 'feature_flags', data: { supports_preview_metadata: true } });
  ws.onmessage({ data: JSON.stringify({ type: 'status', data: { status: {}, sid: 'abc' } }) });
  ws.onmessage({ data: JSON.stringify({ type: 'executing', data: { node: '3' } }) });
  ws.onclose();
  assert.equal(timers.length, 1);
  assert.equal(timers[0][1], 500);
  timers[0][0]();
  const ws2 = FakeSocket.all[1];
  assert.match(ws2.url, /^ws:\/\/h:8188\/ws\?clientId=abc$/);
  ws2.onopen();
  assert.deepEqual(seen, ['connected', 'executing 3', 'reconnected']);
});

test('a 400 from /prompt becomes an ApiError carrying node_errors', async () => {
  const body = { error: { type: 'prompt_outputs_failed_validation', message: 'Prompt outputs failed validation' },
    node_errors: { 4: { errors: [{ message: 'Value not in list', extra_info: { input_name: 'ckpt_name' } }] } } };
  const calls = [];
  const api = createApi({
    fetch: async (url, init) => {
      calls.push([url, JSON.parse(init.body)]);
      return { ok: false, status: 400, text: async () => JSON.stringify(body) };
    },
    WebSocket: FakeSocket, storage: memoryStorage(), location: { protocol: 'http:', host: 'h' },
  });
  await assert.rejects(api.queuePrompt({ prompt: { 4: {} }, workflow: { nodes: [] }, front: true }), (e) => {
    assert.ok(e instanceof ApiError);
    assert.equal(e.status, 400);
    assert.equal(e.body.node_errors[4].errors[0].extra_info.input_name, 'ckpt_name');
    return true;
  });
  assert.equal(calls[0][0], '/api/prompt');
  assert.equal(calls[0][1].front, true);
  assert.deepEqual(calls[0][1].extra_data, { extra_pnginfo: { workflow: { nodes: [] } } });
  assert.equal(calls[0][1].client_id, api.clientId);
});

test('without a prompt the UI workflow is queued as is, in one request, for the server to convert', async () => {
  const calls = [];
  const api = createApi({
    fetch: async (url, init) => {
      calls.push([url, JSON.parse(init.body)]);
      return { ok: true, status: 200, text: async () => JSON.stringify({ prompt_id: 'p', number: 1, node_errors: {},
        prompt: { 4: {} } }) };
    },
    WebSocket: FakeSocket, storage: memoryStorage(), location: { protocol: 'http:', host: 'h' },
  });
  const res = await api.queuePrompt({ workflow: { nodes: [], links: [] }, number: 3 });
  assert.deepEqual(res.prompt, { 4: {} });
  assert.equal(calls.length, 1);
  assert.equal(calls[0][0], '/api/prompt');
  assert.deepEqual(calls[0][1], { workflow: { nodes: [], links: [] }, client_id: api.clientId, number: 3 });
});

test('userdata paths are URL-encoded as one segment', () => {
  const api = createApi({ fetch: async () => {}, WebSocket: FakeSocket, storage: memoryStorage(),
    location: { protocol: 'http:', host: 'h' } });
  assert.equal(api.viewUrl({ filename: 'a b.png', subfolder: 'x/y', type: 'temp' }),
    '/api/view?filename=a%20b.png&subfolder=x%2Fy&type=temp');
});
