import test from 'node:test';
import assert from 'node:assert/strict';
import { buildNodeDefs, newNodeFields } from '../graph/schema.js';
import { applyDefaults, suggestDefaults } from './model_defaults.js';

const CARD = `- Recommended: **euler / normal, 20 steps, CFG 2,
  64x64, negative prompt empty ("")**. Other words`;

test('the built-in model\'s metadata and card suggest 64x64, euler/normal, 20 steps, CFG 2', () => {
  const meta = { 'chisel.training': JSON.stringify({ config: { arch: { image_size: 64 } } }) };
  assert.deepEqual(suggestDefaults(meta, CARD),
    { width: 64, height: 64, sampler_name: 'euler', scheduler: 'normal', steps: 20, cfg: 2 });
  assert.deepEqual(suggestDefaults({ 'modelspec.resolution': '1024x768' }, null), { width: 1024, height: 768 });
  assert.deepEqual(suggestDefaults(null, null), {});
});

test('suggestions go to latent sizes and sampler settings only, and only where allowed', () => {
  const defs = buildNodeDefs({
    EmptyLatentImage: { category: 'latent', input: { required: { width: ['INT', { default: 512, min: 16, max: 8192 }],
      height: ['INT', { default: 512, min: 16, max: 8192 }] } }, output: ['LATENT'] },
    KSampler: { category: 'sampling', input: { required: { steps: ['INT', { default: 20, min: 1 }],
      cfg: ['FLOAT', { default: 8 }], sampler_name: [['euler', 'ddim']], scheduler: [['karras']] } }, output: ['LATENT'] },
    ImageScale: { category: 'image/upscaling', input: { required: { width: ['INT', { default: 512 }] } }, output: ['IMAGE'] },
  });
  const s = { width: 64, height: 64, steps: 20, cfg: 2, sampler_name: 'euler', scheduler: 'normal' };
  const latent = newNodeFields(defs.get('EmptyLatentImage'), [0, 0]);
  assert.deepEqual(applyDefaults(latent, defs.get('EmptyLatentImage'), s), ['width', 'height']);
  assert.deepEqual(latent.widgets_values, [64, 64]);
  const ks = newNodeFields(defs.get('KSampler'), [0, 0]);
  applyDefaults(ks, defs.get('KSampler'), s);
  assert.deepEqual(ks.widgets_values, [20, 2, 'euler', 'karras'], 'a scheduler not offered is left alone');
  const scale = newNodeFields(defs.get('ImageScale'), [0, 0]);
  assert.deepEqual(applyDefaults(scale, defs.get('ImageScale'), s), []);
});
