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

// The server's side of one POST /prompt: the UI workflow is converted there and the answer carries the prompt.
function fakeApi({ refuse = null } = {}) {
  const calls = [];
  return {
    calls,
    async convertWorkflow(workflow) {
      calls.push(['convert', structuredClone(workflow)]);
      throw new Error('the runner must not convert before queueing');
    },
    async queuePrompt(body) {
      calls.push(['prompt', structuredClone(body)]);
      if (refuse) throw new ApiError(400, refuse, '/prompt');
      const ks = body.workflow.nodes.find((n) => n.id === 3);
      const prompt = { 3: { class_type: 'KSampler', inputs: { seed: ks.widgets_values[0] } }, 9: {} };
      return { prompt_id: `p${calls.length}`, number: calls.length, node_errors: {}, prompt };
    },
  };
}

test('each run sends the current seed and then moves it on (batch of 3), one request per run', async () => {
  const d = doc('increment');
  const api = fakeApi();
  const out = await queueWorkflow({ api, doc: d, count: 3 });
  assert.deepEqual(api.calls.map(([k]) => k), ['prompt', 'prompt', 'prompt']);
  const seeds = api.calls.map(([, b]) => b.workflow.nodes.find((n) => n.id === 3).widgets_values[0]);
  assert.deepEqual(seeds, [100, 101, 102]);
  assert.deepEqual(out.map((q) => q.prompt[3].inputs.seed), [100, 101, 102]);
  assert.equal(d.graph.getNode(3).widgets_values[0], 103);
  assert.equal(out.length, 3);
});

test('the UI workflow is what is sent (no prompt) and front is passed through', async () => {
  const d = doc('fixed');
  const api = fakeApi();
  await queueWorkflow({ api, doc: d, front: true });
  const [, body] = api.calls.find(([k]) => k === 'prompt');
  assert.equal(body.front, true);
  assert.equal(body.prompt, undefined);
  assert.equal(body.workflow.nodes.length, 7);
  assert.equal(body.workflow.version, 0.4);
});

test('the tracker counts the nodes of the prompt the server queued', async () => {
  const d = doc('fixed');
  const registered = [];
  const tracker = { registerPrompt: (id, doc_, ids) => registered.push([id, doc_, ids]) };
  const [queued] = await queueWorkflow({ api: fakeApi(), doc: d, tracker });
  assert.deepEqual(registered, [[queued.prompt_id, d, ['3', '9']]]);
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

test('a workflow the server cannot convert puts its node_errors on the named nodes', async () => {
  const d = doc();
  const api = fakeApi({ refuse: {
    error: { type: 'invalid_workflow', message: 'Workflow could not be converted',
      details: 'node 5: widgets_values is not a list', extra_info: { field: 'workflow' } },
    node_errors: { 5: { class_type: 'EmptyLatentImage', dependent_outputs: [], errors: [{
      type: 'invalid_widgets_values', message: 'Malformed widget values', details: 'widgets_values is not a list',
      extra_info: {} }] } },
  } });
  await assert.rejects(queueWorkflow({ api, doc: d }),
    (e) => e instanceof QueueError && /could not be converted: node 5/.test(e.message));
  assert.deepEqual([...d.exec.errors.keys()], [5]);
  assert.match(d.exec.errors.get(5).messages[0], /Malformed widget values/);
  assert.equal(api.calls.length, 1);
});
