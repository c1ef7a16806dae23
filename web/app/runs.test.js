import test from 'node:test';
import assert from 'node:assert/strict';
import { formatDuration, promptText, rerunRequest, runSummaries, runSummary } from './runs.js';

const entry = {
  prompt: [7, 'abc', {
    '6': { class_type: 'CLIPTextEncode', inputs: { text: 'a red square', clip: ['4', 1] } },
    '7': { class_type: 'CLIPTextEncode', inputs: { text: '  ', clip: ['4', 1] } },
    '3': { class_type: 'KSampler', inputs: { seed: 1, sampler_name: 'euler' } },
    '10': { class_type: 'CLIPTextEncode', inputs: { text: 'blurry' } },
  }, { extra_pnginfo: { workflow: { nodes: [], links: [] } } }, ['9']],
  outputs: { '9': { images: [{ filename: 'a_00001_.png', subfolder: '', type: 'output' }, { filename: 'b.png' }] },
    '12': { text: ['not an image'] } },
  status: { status_str: 'success', completed: true, messages: [
    ['execution_start', { prompt_id: 'abc', timestamp: 1000 }],
    ['execution_cached', { nodes: [], timestamp: 1001 }],
    ['execution_success', { prompt_id: 'abc', timestamp: 3450 }]] },
};

test('a run: its number, status, prompt texts, duration from start to success, and its images', () => {
  const run = runSummary('abc', entry);
  assert.equal(run.number, 7);
  assert.equal(run.status, 'success');
  assert.equal(run.text, 'a red square | blurry', 'blank texts are left out; node id order');
  assert.equal(run.durationMs, 2450);
  assert.equal(run.finishedAt, 3450);
  assert.deepEqual(run.images, [
    { filename: 'a_00001_.png', subfolder: '', type: 'output', node: '9' },
    { filename: 'b.png', subfolder: '', type: 'output', node: '9' }]);
  assert.deepEqual(run.workflow, { nodes: [], links: [] });
});

test('a failed run ends at its error; a run without messages has no duration', () => {
  const failed = { ...entry, status: { status_str: 'error', messages: [
    ['execution_start', { timestamp: 10 }], ['execution_error', { timestamp: 25 }]] } };
  assert.equal(runSummary('x', failed).durationMs, 15);
  assert.equal(runSummary('x', failed).status, 'error');
  const bare = runSummary('y', { prompt: [1, 'y', {}, {}], outputs: {}, status: {} });
  assert.equal(bare.durationMs, null);
  assert.equal(bare.text, '');
  assert.deepEqual(bare.images, []);
  assert.equal(bare.workflow, null);
});

test('history is listed newest first', () => {
  assert.deepEqual(runSummaries({ a: entry, b: entry }).map((r) => r.id), ['b', 'a']);
  assert.deepEqual(runSummaries(null), []);
});

test('durations read as seconds or minutes', () => {
  assert.equal(formatDuration(420), '0.4 s');
  assert.equal(formatDuration(12_400), '12 s');
  assert.equal(formatDuration(125_000), '2 min 5 s');
  assert.equal(formatDuration(null), '');
});

test('a rerun sends the same API prompt and workflow', () => {
  const run = runSummary('abc', entry);
  assert.deepEqual(rerunRequest(run), { prompt: entry.prompt[2], workflow: { nodes: [], links: [] } });
  assert.equal(promptText({ 1: { inputs: { prompt: 'p' } } }), 'p');
});

test('picking images to compare keeps the last two; a second click unpicks', async () => {
  const { togglePick } = await import('./runs.js');
  let p = togglePick([], 'a');
  p = togglePick(p, 'b');
  assert.deepEqual(p, ['a', 'b']);
  assert.deepEqual(togglePick(p, 'c'), ['b', 'c']);
  assert.deepEqual(togglePick(p, 'a'), ['b']);
});
