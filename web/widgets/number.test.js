import test from 'node:test';
import assert from 'node:assert/strict';
import { clampValue, dragValue, formatNumber, parseTyped, stepValue } from './number.js';
import { fixtureDefs } from '../test/fixtures.js';

const defs = fixtureDefs();
const widget = (type, name) => defs.get(type).widgets.find((w) => w.name === name);

test('INT values are clamped to the schema limits and rounded', () => {
  const steps = widget('KSampler', 'steps');
  assert.equal(clampValue(steps, 0), 1);
  assert.equal(clampValue(steps, 20.6), 21);
  assert.equal(clampValue(steps, 1e9), 10000);
});

test('FLOAT values round to the schema round (cfg: 0.01) without binary noise', () => {
  const cfg = widget('KSampler', 'cfg');
  assert.equal(clampValue(cfg, 7.123), 7.12);
  assert.equal(stepValue(cfg, 7.2, 1), 7.3);
  assert.equal(formatNumber(8, cfg), '8.00');
});

test('an INT without a schema step (ComfyUI omits it on most) moves by 1', () => {
  const steps = widget('KSampler', 'steps');
  assert.equal(steps.options.step, undefined);
  assert.equal(stepValue(steps, 20, 1), 21);
  assert.equal(dragValue(steps, 20, 10), 22);
});

test('width steps by 8 and arrows move by one step', () => {
  const width = widget('EmptyLatentImage', 'width');
  assert.equal(stepValue(width, 512, 1), 520);
  assert.equal(stepValue(width, 16, -1), 16);
});

test('dragging moves one step per 5 pixels, clamped', () => {
  const denoise = widget('KSampler', 'denoise');
  assert.equal(dragValue(denoise, 0.5, 50), 0.6);
  assert.equal(dragValue(denoise, 0.5, 5000), 1);
});

test('typed values may be arithmetic and are clamped; junk is refused', () => {
  const width = widget('EmptyLatentImage', 'width');
  assert.equal(parseTyped(width, '512*2'), 1024);
  assert.equal(parseTyped(width, '(100+28)/2'), 64);
  assert.equal(parseTyped(width, 'alert(1)'), null);
  assert.equal(parseTyped(width, '1+'), null);
});
