import test from 'node:test';
import assert from 'node:assert/strict';
import { categoryTree, fuzzyScore, searchNodes } from './fuzzy.js';
import { fixtureDefs } from '../test/fixtures.js';

const defs = fixtureDefs();
const names = (list) => list.map((d) => d.name);

test('an exact name comes first', () => {
  assert.equal(searchNodes(defs, 'ksampler')[0].name, 'KSampler');
});

test('abbreviations match by word starts ("ksa adv", "vae dec", "emptylat")', () => {
  assert.equal(searchNodes(defs, 'ksa adv')[0].name, 'KSamplerAdvanced');
  assert.equal(searchNodes(defs, 'vae dec')[0].name, 'VAEDecode');
  assert.equal(searchNodes(defs, 'emptylat')[0].name, 'EmptyLatentImage');
});

test('search aliases count ("prompt" finds CLIP Text Encode)', () => {
  assert.ok(names(searchNodes(defs, 'prompt')).includes('CLIPTextEncode'));
});

test('no match gives nothing', () => {
  assert.deepEqual(searchNodes(defs, 'zzzqqq'), []);
  assert.equal(fuzzyScore('xyz', 'KSampler'), null);
});

test('a LATENT output dragged onto the canvas offers only nodes that take a LATENT', () => {
  const got = names(searchNodes(defs, '', { inputType: 'LATENT', limit: 100 }));
  assert.ok(got.includes('VAEDecode') && got.includes('KSampler') && got.includes('LatentUpscale'));
  assert.ok(!got.includes('CheckpointLoaderSimple') && !got.includes('SaveImage'));
});

test('an IMAGE input dragged backwards offers only nodes that give an IMAGE', () => {
  const got = names(searchNodes(defs, '', { outputType: 'IMAGE', limit: 100 }));
  assert.ok(got.includes('VAEDecode') && got.includes('LoadImage'));
  assert.ok(!got.includes('KSampler'));
});

test('categories form a tree by "/"', () => {
  const tree = categoryTree(defs);
  assert.ok(tree.children.get('latent').children.get('inpaint').defs.some((d) => d.name === 'SetLatentNoiseMask'));
  assert.ok(tree.children.get('sampling').defs.some((d) => d.name === 'KSampler'));
});
