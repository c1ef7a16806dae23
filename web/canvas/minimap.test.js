import test from 'node:test';
import assert from 'node:assert/strict';
import { centerViewOn, minimapTransform } from './minimap.js';
import { makeViewport, toGraph } from './viewport.js';

test('a minimap point maps back to the graph point the view then centres on', () => {
  const t = minimapTransform([0, 0, 2000, 1000], [0, 0, 500, 300], 200, 120);
  const p = t.toGraph(t.toMap([1500, 700]));
  assert.ok(Math.abs(p[0] - 1500) < 1e-6 && Math.abs(p[1] - 700) < 1e-6);
  assert.ok(t.toMap([0, 0])[0] >= 0 && t.toMap([2000, 1000])[0] <= 200, 'the graph fits in the map');
  const vp = makeViewport({ scale: 0.5, offset: [0, 0] });
  centerViewOn(vp, [1500, 700], 1000, 600);
  assert.deepEqual(toGraph(vp, [500, 300]), [1500, 700]);
});
