import test from 'node:test';
import assert from 'node:assert/strict';
import { fitRect, makeViewport, toGraph, toScreen, visibleRect, zoomAt } from './viewport.js';

test('zooming keeps the graph point under the cursor in place', () => {
  const vp = makeViewport({ scale: 1, offset: [10, -20] });
  const at = [300, 200];
  const before = toGraph(vp, at);
  zoomAt(vp, 1.7, at);
  const after = toScreen(vp, before);
  assert.ok(Math.abs(after[0] - at[0]) < 1e-9 && Math.abs(after[1] - at[1]) < 1e-9);
  assert.equal(vp.scale, 1.7);
});

test('zoom is clamped', () => {
  const vp = makeViewport();
  zoomAt(vp, 1e6, [0, 0]);
  assert.equal(vp.scale, 10);
});

test('fit puts the whole rectangle on screen', () => {
  const vp = makeViewport();
  fitRect(vp, [1000, 500, 4000, 2000], 1280, 720);
  const [x, y, w, h] = visibleRect(vp, 1280, 720);
  assert.ok(x <= 1000 && y <= 500 && x + w >= 5000 && y + h >= 2500);
});
