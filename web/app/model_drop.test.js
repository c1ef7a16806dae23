import test from 'node:test';
import assert from 'node:assert/strict';
import { buildNodeDefs } from '../graph/schema.js';
import { loaderFor } from './model_drop.js';

const defs = buildNodeDefs({
  CheckpointLoaderSimple: { input: { required: { ckpt_name: [['a.safetensors']] } }, output: ['MODEL'] },
  LoraLoader: { input: { required: { model: ['MODEL'], lora_name: [['l.safetensors']] } }, output: ['MODEL'] },
  OddLoader: { input: { required: { thing: [['odd.bin']] } }, output: ['X'] },
});

test('a dragged model file becomes its folder\'s loader, or a loader that lists it', () => {
  assert.deepEqual(loaderFor('checkpoints', 'a.safetensors', defs), { type: 'CheckpointLoaderSimple', widget: 'ckpt_name' });
  assert.deepEqual(loaderFor('loras', 'l.safetensors', defs), { type: 'LoraLoader', widget: 'lora_name' });
  assert.deepEqual(loaderFor('odd', 'odd.bin', defs), { type: 'OddLoader', widget: 'thing' });
  assert.equal(loaderFor('vae', 'v.safetensors', defs), null);
});
