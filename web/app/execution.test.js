import test from 'node:test';
import assert from 'node:assert/strict';
import { createExecutionTracker, errorsFromNodeErrors } from './execution.js';
import { WorkflowDoc } from './document.js';
import { fixtureDefs, readFixture } from '../test/fixtures.js';

const defs = fixtureDefs();

function setup() {
  const doc = WorkflowDoc.fromWorkflow(readFixture('default_workflow.json'), { defs, name: 'd' });
  const other = WorkflowDoc.fromWorkflow(readFixture('default_workflow.json'), { defs, name: 'o' });
  const events = [];
  let n = 0;
  const tracker = createExecutionTracker({ docs: () => [doc, other], active: () => other,
    onChange: (k, d) => events.push([k, d]), createUrl: () => `blob:${++n}`, revokeUrl: () => {} });
  tracker.registerPrompt('p1', doc, ['3', '4', '5', '6', '7', '8', '9']);
  return { doc, other, tracker, events };
}

const msg = (type, data) => ({ type, data: { prompt_id: 'p1', ...data } });

test('a run highlights the running node, tracks its progress, and ends clean', () => {
  const { doc, tracker } = setup();
  tracker.handle(msg('execution_start', {}));
  tracker.handle(msg('execution_cached', { nodes: ['4', '5', '6', '7'] }));
  tracker.handle(msg('executing', { node: '3' }));
  assert.equal(doc.exec.running, 3);
  tracker.handle(msg('progress', { node: '3', value: 5, max: 10 }));
  assert.equal(doc.exec.progress.get(3), 0.5);
  const p = tracker.progress();
  assert.equal(p.nodeFraction, 0.5);
  assert.ok(Math.abs(p.overall - 4.5 / 7) < 1e-9, String(p.overall));
  tracker.handle(msg('executing', { node: '8' }));
  tracker.handle(msg('executing', { node: '9' }));
  tracker.handle(msg('executed', { node: '9', output: { images: [{ filename: 'a.png', subfolder: '', type: 'output' }] } }));
  tracker.handle(msg('execution_success', {}));
  tracker.handle(msg('executing', { node: null }));
  assert.equal(doc.exec.running, null);
  assert.deepEqual(doc.exec.outputs.get(9), [{ filename: 'a.png', subfolder: '', type: 'output' }]);
  assert.equal(tracker.progress(), null);
});

test('messages go to the tab that queued the prompt, not the active one', () => {
  const { doc, other, tracker } = setup();
  tracker.handle(msg('execution_start', {}));
  tracker.handle(msg('executing', { node: '3' }));
  assert.equal(doc.exec.running, 3);
  assert.equal(other.exec.running, null);
});

test('an execution error marks the node with the message', () => {
  const { doc, tracker, events } = setup();
  tracker.handle(msg('execution_start', {}));
  tracker.handle(msg('executing', { node: '8' }));
  tracker.handle(msg('execution_error', { node_id: '8', node_type: 'VAEDecode', exception_type: 'RuntimeError',
    exception_message: 'out of memory' }));
  assert.deepEqual(doc.exec.errors.get(8).messages, ['RuntimeError: out of memory']);
  assert.equal(doc.exec.running, null);
  assert.ok(events.some(([k]) => k === 'error'));
});

test('a latent preview lands on the node named in its metadata', () => {
  const { doc, tracker } = setup();
  tracker.handle(msg('execution_start', {}));
  tracker.handle(msg('executing', { node: '3' }));
  tracker.handlePreview({ meta: { node_id: '3', prompt_id: 'p1' }, image: new Uint8Array([1]), mime: 'image/jpeg' });
  assert.equal(doc.exec.previews.get(3), 'blob:1');
  tracker.handlePreview({ meta: null, image: new Uint8Array([1]), mime: 'image/jpeg' });
  assert.equal(doc.exec.previews.get(3), 'blob:2', 'a type-1 frame goes to the running node');
});

test('prompts queued elsewhere are shown on the active tab', () => {
  const { other, tracker } = setup();
  tracker.handle({ type: 'executing', data: { node: '5', prompt_id: 'zz' } });
  assert.equal(other.exec.running, 5);
});

test('node_errors become per-node messages with the offending inputs', () => {
  const errors = errorsFromNodeErrors({
    4: { class_type: 'CheckpointLoaderSimple', errors: [{ type: 'value_not_in_list', message: 'Value not in list',
      details: "ckpt_name: 'x' not in [...]", extra_info: { input_name: 'ckpt_name' } }] },
  });
  assert.deepEqual([...errors.get(4).inputs], ['ckpt_name']);
  assert.equal(errors.get(4).messages[0], "Value not in list: ckpt_name: 'x' not in [...]");
});
