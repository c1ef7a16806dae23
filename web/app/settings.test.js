import test from 'node:test';
import assert from 'node:assert/strict';
import { resolveSettings } from './settings.js';

test('defaults: spline links, no snapping, 0.05 weight step', () => {
  assert.deepEqual(resolveSettings({}), { linkStyle: 'spline', snapToGrid: false, gridSize: 10, showGrid: true,
    showNodeIds: false, showMinimap: true, weightDelta: 0.05, palette: 'dark' });
});

test('ComfyUI\'s numeric link modes map to styles; bad values fall back', () => {
  assert.equal(resolveSettings({ 'Comfy.LinkRenderMode': 0 }).linkStyle, 'straight');
  assert.equal(resolveSettings({ 'Comfy.LinkRenderMode': -1 }).linkStyle, 'hidden');
  assert.equal(resolveSettings({ 'Comfy.LinkRenderMode': 7 }).linkStyle, 'spline');
  assert.equal(resolveSettings({ 'Comfy.SnapToGrid.GridSize': 'x' }).gridSize, 10);
  assert.equal(resolveSettings({ 'Comfy.SnapToGrid.GridSize': 1000 }).gridSize, 100);
});
