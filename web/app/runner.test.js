import test from 'node:test';
import assert from 'node:assert/strict';
import { queueWorkflow, QueueError } from './runner.js';
import { WorkflowDoc } from './document.js';
import { ApiError } from '../api.js';
import { fixtureDefs, readFixture } from '../test/fixtures.js';

const defs = fixtureDefs();

function doc(mode = 'increment') {
  const wf = readFixture('default_workflow.json');
  wf.nodes.find((n) => n.id === 3).widgets_values = [100, mode, 20, 8, 'euler', 'normal', 1];
  return WorkflowDoc.fromWorkflow(wf, { defs, name: 'd' });
}

function fakeApi({ refuse = null } = {}) {
  const calls = [];
  return {
    calls,
    async convertWorkflow(workflow) {
      calls.push(['convert', structuredClone(workflow)]);
      const ks = workflow.nodes.find((n) => n.id === 3);
      return { prompt: { 3: { class_type: 'KSampler', inputs: { seed: ks.widgets_values[0] } }, 9: {} } };
    },
    async queuePrompt(body) {
      calls.push(['prompt', body]);
      if (refuse) throw new ApiError(400, refuse, '/prompt');
      return { prompt_id: `p${calls.length}`, number: calls.length, node_errors: {} };
    },
  };
}

test('each run sends the current seed and then moves it on (batch of 3)', async () => {
  const d = doc('increment');
  const api = fakeApi();
  const out = await queueWorkflow({ api, doc: d, count: 3 });
  const seeds = api.calls.filter(([k]) => k === 'prompt').map(([, b]) => b.prompt[3].inputs.seed);
  assert.deepEqual(seeds, [100, 101, 102]);
  assert.equal(d.graph.getNode(3).widgets_values[0], 103);
  assert.equal(out.length, 3);
});

test('the UI workflow goes along as extra_pnginfo and front is passed through', async () => {
  const d = doc('fixed');
  const api = fakeApi();
  await queueWorkflow({ api, doc: d, front: true });
  const [, body] = api.calls.find(([k]) => k === 'prompt');
  assert.equal(body.front, true);
  assert.equal(body.workflow.nodes.length, 7);
  assert.equal(body.workflow.version, 0.4);
});

test('a validation error is put on the offending node and input', async () => {
  const d = doc();
  const api = fakeApi({ refuse: {
    error: { type: 'prompt_outputs_failed_validation', message: 'Prompt outputs failed validation' },
    node_errors: { 4: { class_type: 'CheckpointLoaderSimple', errors: [{ type: 'value_not_in_list',
      message: 'Value not in list', details: 'ckpt_name', extra_info: { input_name: 'ckpt_name' } }] } },
  } });
  await assert.rejects(queueWorkflow({ api, doc: d }), (e) => e instanceof QueueError && /failed validation/.test(e.message));
  assert.ok(d.exec.errors.get(4).inputs.has('ckpt_name'));
  assert.equal(d.graph.getNode(3).widgets_values[0], 100, 'a refused run does not move the seed');
});
