import test from 'node:test';
import assert from 'node:assert/strict';
import { plotScale, seriesPixels, valueAt } from './plot.js';

const rect = [100, 50, 200, 80]; // x, y, w, h
const karras = [14.61, 7.49, 3.63, 1.62, 0.64, 0.21, 0.029, 0];

test('steps map linearly onto the width: step 0 on the left edge, the last sigma on the right', () => {
  const s = plotScale([{ points: karras.map((v, i) => [i, v]) }], rect);
  assert.equal(s.xMax, 7);
  assert.equal(s.x(0), 100);
  assert.equal(s.x(7), 300);
  assert.equal(s.x(3.5), 200);
  const fixed = plotScale([{ points: [[0, 1], [3, 0]] }], rect, { xMax: 6 });
  assert.equal(fixed.x(3), 200, 'an explicit xMax wins');
});

test('a schedule spanning decades is drawn on a log scale with sigma 0 on the bottom edge', () => {
  const s = plotScale([{ points: karras.map((v, i) => [i, v]) }], rect);
  assert.equal(s.logY, true);
  assert.ok(Math.abs(s.y(14.61) - 50) < 1e-9, 'the largest sigma touches the top');
  assert.equal(s.y(0), 130, 'sigma 0 sits on the bottom');
  assert.ok(s.y(0.029) < 130 && s.y(0.029) > 50, 'the smallest positive sigma is above the floor');
  const px = seriesPixels(karras.map((v, i) => [i, v]), s);
  for (let i = 3; i < px.length; i += 2) assert.ok(px[i] >= px[i - 2], 'falling sigmas go down the plot');
  for (const t of s.ticks) assert.ok(t.y >= 50 && t.y <= 130, `tick ${t.value} inside`);
  assert.deepEqual(s.ticks.map((t) => t.value), [0.1, 1, 10]);
});

test('a flow schedule (0..1) is linear, 0 at the bottom, the top at the top', () => {
  const flow = [1, 0.8, 0.55, 0.3, 0.1, 0];
  const s = plotScale([{ points: flow.map((v, i) => [i, v]) }], rect);
  assert.equal(s.logY, false);
  assert.equal(s.y(1), 50);
  assert.equal(s.y(0), 130);
  assert.equal(s.y(0.5), 90);
  assert.deepEqual(s.ticks.map((t) => t.value), [0, 0.5, 1]);
  assert.equal(plotScale([{ points: flow.map((v, i) => [i, v]) }], rect, { logY: true }).logY, true, 'forced');
});

test('several series share one scale (the tallest sets the top)', () => {
  const s = plotScale([{ points: [[0, 2], [1, 0]] }, { points: [[0, 8], [1, 0]] }], rect, { logY: false });
  assert.equal(s.yMax, 8);
  assert.equal(s.y(8), 50);
  assert.equal(s.y(2), 110);
});

test('degenerate input does not produce NaN', () => {
  for (const series of [[], [{ points: [] }], [{ points: [[0, 0]] }]]) {
    const s = plotScale(series, rect);
    assert.ok(Number.isFinite(s.x(0)) && Number.isFinite(s.y(0)) && Number.isFinite(s.y(1)), JSON.stringify(series));
  }
});

test('valueAt interpolates between steps and clamps outside', () => {
  const pts = [[0, 10], [1, 6], [2, 2]];
  assert.equal(valueAt(pts, 0), 10);
  assert.equal(valueAt(pts, 0.5), 8);
  assert.equal(valueAt(pts, 2), 2);
  assert.equal(valueAt(pts, 5), 2);
  assert.equal(valueAt(pts, -1), 10);
  assert.equal(valueAt([], 1), 0);
});
