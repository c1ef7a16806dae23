import test from 'node:test';
import assert from 'node:assert/strict';
import { readDroppedFile } from './files.js';
import { makePng, readFixture } from '../test/fixtures.js';

const fileOf = (bytes, name, type) => new File([bytes], name, { type });

test('a PNG with an embedded workflow opens as that workflow, named after the file', async () => {
  const wf = readFixture('default_workflow.json');
  const got = await readDroppedFile(fileOf(makePng([{ key: 'workflow', text: JSON.stringify(wf) }]), 'ComfyUI_00001_.png',
    'image/png'));
  assert.equal(got.kind, 'workflow');
  assert.equal(got.name, 'ComfyUI_00001_');
  assert.equal(got.json.nodes.length, 7);
});

test('a PNG with only an API prompt opens the prompt', async () => {
  const png = makePng([{ key: 'prompt', text: '{"1": {"class_type": "EmptyLatentImage", "inputs": {}}}' }]);
  assert.equal((await readDroppedFile(fileOf(png, 'x.png', 'image/png'))).kind, 'api');
});

test('a PNG without metadata is an image for LoadImage', async () => {
  assert.equal((await readDroppedFile(fileOf(makePng([]), 'photo.png', 'image/png'))).kind, 'image');
});

test('JSON files: workflow, API prompt, or a clear refusal', async () => {
  const wf = JSON.stringify(readFixture('default_workflow.json'));
  assert.equal((await readDroppedFile(fileOf(wf, 'a.json', 'application/json'))).kind, 'workflow');
  const bad = await readDroppedFile(fileOf('{"x": 1}', 'b.json', 'application/json'));
  assert.equal(bad.kind, 'unknown');
  assert.match(bad.reason, /neither/);
  assert.match((await readDroppedFile(fileOf('{', 'c.json', ''))).reason, /not valid JSON/);
});
