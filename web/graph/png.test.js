import test from 'node:test';
import assert from 'node:assert/strict';
import { PngFormatError, readPngMetadata, readPngText } from './png.js';
import { makePng, readFixture } from '../test/fixtures.js';

test('tEXt workflow and prompt chunks are read and parsed', async () => {
  const wf = readFixture('default_workflow.json');
  const png = makePng([{ key: 'prompt', text: '{"3": {"class_type": "KSampler", "inputs": {}}}' },
    { key: 'workflow', text: JSON.stringify(wf) }]);
  const meta = await readPngMetadata(png);
  assert.deepEqual(meta.workflow, wf);
  assert.equal(meta.prompt['3'].class_type, 'KSampler');
  assert.equal(meta.parameters, null);
});

test('iTXt chunks are read, compressed or not, as UTF-8', async () => {
  const png = makePng([{ type: 'iTXt', key: 'workflow', text: '{"title":"café ☕"}', compressed: true },
    { type: 'iTXt', key: 'parameters', text: 'a cat, Steps: 20' }]);
  const text = await readPngText(png);
  assert.equal(text.workflow, '{"title":"café ☕"}');
  assert.equal(text.parameters, 'a cat, Steps: 20');
});

test('NaN written by Python json.dumps does not stop the workflow from loading', async () => {
  const png = makePng([{ key: 'workflow', text: '{"nodes": [], "links": [], "x": NaN}' }]);
  assert.equal((await readPngMetadata(png)).workflow.x, null);
});

test('a file that is not a PNG is refused', async () => {
  await assert.rejects(readPngText(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9])), PngFormatError);
});

test('a PNG without metadata gives nulls', async () => {
  const meta = await readPngMetadata(makePng([]));
  assert.deepEqual(meta, { workflow: null, prompt: null, parameters: null });
});
