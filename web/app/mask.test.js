import test from 'node:test';
import assert from 'node:assert/strict';
import { alphaFromMask, coverage, createMask, feather, invert, maskFromAlpha, stamp, stroke } from './mask.js';

test('a brush stroke masks its path, the eraser clears it, invert flips, feather softens the edge', () => {
  const m = createMask(40, 20);
  stroke(m, [5, 10], [35, 10], { radius: 4 });
  assert.equal(m.data[10 * 40 + 20], 255);
  assert.equal(m.data[2 * 40 + 20], 0, 'outside the radius stays unmasked');
  stamp(m, 20, 10, { radius: 3, erase: true });
  assert.equal(m.data[10 * 40 + 20], 0);
  const before = coverage(m);
  invert(m);
  assert.ok(Math.abs(coverage(m) - (1 - before)) < 0.01);
  invert(m);
  feather(m, 2);
  const edge = m.data[(10 - 4) * 40 + 10];
  assert.ok(edge > 0 && edge < 255, `a feathered edge is partly masked (${edge})`);
});

test('a soft brush fades towards its rim', () => {
  const m = createMask(21, 21);
  stamp(m, 10.5, 10.5, { radius: 10, hardness: 0.2 });
  assert.equal(m.data[10 * 21 + 10], 255);
  assert.ok(m.data[10 * 21 + 19] < 128);
});

test('the mask is stored in the alpha as ComfyUI does: masked = transparent', () => {
  const rgba = new Uint8ClampedArray([10, 20, 30, 255, 10, 20, 30, 255]);
  const m = maskFromAlpha(rgba, 2, 1);
  assert.deepEqual([...m.data], [0, 0]);
  m.data[1] = 255;
  const out = alphaFromMask(m, rgba);
  assert.deepEqual([...out], [10, 20, 30, 255, 10, 20, 30, 0]);
  assert.deepEqual([...maskFromAlpha(out, 2, 1).data], [0, 255]);
});
