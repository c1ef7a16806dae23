import { test } from 'node:test';
import assert from 'node:assert/strict';

import { createApp } from './app.js';
import { api } from './api.js';
import { loadExtensions } from './loader.js';

function fakeClient() {
  const handlers = {};
  return {
    clientId: 'c1',
    on(type, fn) { (handlers[type] ??= []).push(fn); },
    fire(type, detail) { for (const fn of handlers[type] ?? []) fn(detail); },
  };
}

test('extensions register, their hooks run in ComfyUI order, and server events reach them', async () => {
  const app = createApp();
  const client = fakeClient();
  const calls = [];
  const seen = [];
  const modules = {
    '/extensions/a/one.js': () => app.registerExtension({
      name: 'a.one',
      init() { calls.push('init'); },
      beforeRegisterNodeDef(nodeType, nodeData) {
        calls.push(`before:${nodeData.name}`);
        nodeType.prototype.onNodeCreated = function created() { return nodeData.name; };
      },
      setup() {
        calls.push('setup');
        api.addEventListener('route_pack.announce', (event) => seen.push(event.detail.message));
      },
    }),
  };
  const result = await loadExtensions({
    api: client, app, objectInfo: { Announce: { name: 'Announce', display_name: 'Announce' } },
    listExtensions: async () => Object.keys(modules), importModule: async (url) => modules[url](),
  });
  assert.deepEqual(result.loaded, ['a.one']);
  assert.deepEqual(calls, ['init', 'before:Announce', 'setup']);
  assert.equal(new app.nodeTypes.Announce().onNodeCreated(), 'Announce');
  client.fire('route_pack.announce', { message: 'bonjour' });
  assert.deepEqual(seen, ['bonjour']);
  assert.equal(api.clientId, 'c1');
});

test('an extension that fails alone is reported and the others still run', async () => {
  const app = createApp();
  const notes = [];
  const ran = [];
  const modules = {
    '/extensions/bad/import.js': () => { throw new SyntaxError('Unexpected token'); },
    '/extensions/bad/hook.js': () => app.registerExtension({
      name: 'bad.hook', setup() { throw new Error('needs LiteGraph'); }, nodeCreated() {},
    }),
    '/extensions/good/x.js': () => app.registerExtension({ name: 'good.x', setup() { ran.push('good'); } }),
  };
  const result = await loadExtensions({
    api: fakeClient(), app, notify: (text) => notes.push(text), listExtensions: async () => Object.keys(modules),
    importModule: async (url) => modules[url](),
  });
  assert.deepEqual(ran, ['good']);
  assert.deepEqual(result.loaded, ['good.x']);
  assert.deepEqual(result.failed.map((f) => f.url ?? f.name), ['/extensions/bad/import.js', 'bad.hook']);
  assert.deepEqual(result.unsupported, { 'bad.hook': ['nodeCreated'] });
  assert.ok(notes.some((n) => n.includes('needs LiteGraph')));
  assert.throws(() => app.registerExtension({ name: 'good.x' }), /already registered/);
});
