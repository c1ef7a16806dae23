// The queue panel's pure part: GET /workers as rows (node --test web/).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { workerRows } from './queue.js';

test('a server without a cluster shows no workers', () => {
  assert.deepEqual(workerRows({ mode: 'local', workers: [{ id: 'local', state: 'idle' }] }), []);
  assert.deepEqual(workerRows(null), []);
  assert.deepEqual(workerRows({ error: 'not found' }), []);
});

test('cluster workers become compact rows', () => {
  const rows = workerRows({ mode: 'ray', workers: [
    { id: 'head-1', host: 'gpu1', pid: 12, device: 'cuda:0', state: 'running', prompt_id: 'abcdef0123456789',
      models: ['checkpoints/a.safetensors'], prompts_done: 3, error: null },
    { id: 'node-1f2e3d-1', host: 'gpu2', pid: 7, device: 'cpu', state: 'dead', prompt_id: null, models: [],
      prompts_done: 0, error: 'the worker process died' },
  ] });
  assert.deepEqual(rows.map((r) => [r.id, r.device, r.state, r.label, r.done]), [
    ['head-1', 'cuda:0', 'running', 'running abcdef01', 3],
    ['node-1f2e3d-1', 'cpu', 'dead', 'dead', 0],
  ]);
  assert.match(rows[0].title, /gpu1 pid 12\nmodels: checkpoints\/a.safetensors/);
  assert.match(rows[1].title, /no model loaded\nerror: the worker process died/);
});
