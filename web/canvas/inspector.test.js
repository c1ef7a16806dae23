import test from 'node:test';
import assert from 'node:assert/strict';
import { containRect, curveLayout, drawPanel, highlightRect, PANEL, panelHeight, panelLayout } from './inspector.js';
import { lightTheme, theme } from './theme.js';
import { describePanel, parseInspect } from '../app/inspect.js';
import { readFixture } from '../test/fixtures.js';

const payloads = readFixture('inspect_payloads.json');
const spec = (name) => describePanel(parseInspect(payloads[name]));
const inside = (r, a) => r[0] >= a.x - 1e-9 && r[1] >= a.y - 1e-9 && r[0] + r[2] <= a.x + a.w + 1e-9
  && r[1] + r[3] <= a.y + a.h + 1e-9;

test('the timeline strip lays out three views side by side, the plot, the slider under it, and the cfg row', () => {
  const s = spec('DenoisingTimeline');
  const w = 540;
  const h = panelHeight(s, w);
  const area = { x: 10, y: 200, w, h };
  const L = panelLayout(s, area);
  assert.deepEqual(L.views.map((v) => v.key), ['x_t', 'x0', 'eps']);
  const [a, b, c] = L.views.map((v) => v.cell);
  assert.ok(a[1] === b[1] && b[1] === c[1], 'one row');
  assert.ok(a[0] + a[2] < b[0] && b[0] + b[2] < c[0], 'left to right, not overlapping');
  assert.ok(Math.abs(a[2] - a[3]) < 1e-9, 'square cells at the natural size');
  assert.ok(L.plot[1] > a[1] + a[3], 'plot below the views');
  assert.equal(L.slider[0], L.plot[0], 'the slider spans the plot horizontally, so the thumb sits under the marker');
  assert.equal(L.slider[2], L.plot[2]);
  assert.ok(L.slider[1] >= L.plot[1] + L.plot[3]);
  assert.equal(L.row2.length, 3);
  assert.ok(L.row2Title[1] >= L.slider[1] + L.slider[3]);
  assert.ok(L.toggle && inside(L.toggle, area));
  for (const r of [...L.views.map((v) => v.cell), L.plot, L.slider, ...L.row2.map((v) => v.cell)]) {
    assert.ok(inside(r, area), `${r} inside ${JSON.stringify(area)}`);
  }
});

test('a smaller area squeezes the image rows, never the slider, and nothing leaves the area', () => {
  const s = spec('DenoisingTimeline');
  const natural = panelHeight(s, 540);
  const area = { x: 0, y: 0, w: 540, h: natural * 0.6 };
  const L = panelLayout(s, area);
  assert.equal(L.slider[3], PANEL.SLIDER_H);
  assert.equal(L.plot[3], PANEL.PLOT_H);
  assert.ok(L.views[0].cell[3] < 170);
  for (const r of [L.plot, L.slider, ...L.row2.map((v) => v.cell)]) assert.ok(inside(r, area));
  const tiny = panelLayout(s, { x: 0, y: 0, w: 540, h: 40 });
  assert.equal(tiny.views[0].cell[3], 0, 'no room: the images collapse instead of overflowing');
});

test('every kind of panel has a positive natural height that fits its width', () => {
  for (const name of ['DenoisingTimeline', 'NoiseToTimestep', 'DenoiseOnce', 'SchedulePlot', 'TrainingStep']) {
    const s = spec(name);
    const h = panelHeight(s, s.minWidth);
    assert.ok(h > 60 && h < 1200, `${name}: ${h}`);
    const L = panelLayout(s, { x: 0, y: 0, w: s.minWidth, h });
    assert.ok(L.natural <= h, name);
  }
  const plot = panelLayout(spec('SchedulePlot'), { x: 0, y: 0, w: 420, h: 400 });
  assert.equal(plot.legend.length, 4);
  assert.ok(plot.legend.every((it) => it.rect[1] >= plot.plot[1] + plot.plot[3]), 'legend under the plot');
  assert.equal(plot.slider, null);
});

test('highlightRect finds the parts the tour rings', () => {
  const s = spec('DenoisingTimeline');
  const L = panelLayout(s, { x: 0, y: 0, w: 540, h: 900 });
  assert.deepEqual(highlightRect(L, s, 'x0').slice(0, 3), L.views[1].cell.slice(0, 3));
  assert.deepEqual(highlightRect(L, s, 'slider'), L.slider);
  assert.ok(highlightRect(L, s, 'row2')[3] > L.row2[0].cell[3]);
  assert.ok(highlightRect(L, s, 'plot')[2] > L.plot[2], 'with the tick labels');
  assert.equal(highlightRect(L, s, 'footer'), null);
  assert.equal(highlightRect(L, s, null), null);
});

test('containRect letterboxes without distortion', () => {
  assert.deepEqual(containRect(64, 32, [0, 0, 100, 100]), [0, 25, 100, 50]);
  assert.deepEqual(containRect(10, 20, [10, 10, 100, 100]), [35, 10, 50, 100]);
});

test('the sampler curve takes the bottom of the area and leaves the rest for previews', () => {
  const c = curveLayout({ x: 6, y: 300, w: 300, h: 200 });
  assert.equal(c.rest, 200 - PANEL.CURVE_H);
  assert.ok(c.plot[1] + c.plot[3] <= 500);
  assert.ok(c.label[1] >= 300 + c.rest);
});

/** A 2-D context that records the colours it is given (what a palette test needs of a canvas). */
function recordingContext() {
  const colours = new Set();
  const record = { set: (v) => colours.add(v), get: () => '' };
  const ctx = new Proxy({}, {
    get: (_, key) => (key === 'colours' ? colours : key === 'measureText' ? () => ({ width: 10 }) : () => {}),
    set: (_, key, value) => { if (key === 'fillStyle' || key === 'strokeStyle') record.set(value); return true; },
  });
  return ctx;
}

test('the inspect panel draws in the palette it is given (the light theme reaches the sigma plot too)', () => {
  const s = spec('DenoisingTimeline');
  const area = { x: 0, y: 0, w: 540, h: panelHeight(s, 540) };
  const dark = recordingContext();
  drawPanel(dark, s, area);
  const light = recordingContext();
  drawPanel(light, s, area, { palette: lightTheme });
  for (const key of ['panelBg', 'plotBg', 'sliderTrack']) {
    assert.ok(dark.colours.has(theme[key]), key);
    assert.ok(light.colours.has(lightTheme[key]) && !light.colours.has(theme[key]), key);
  }
});
