import test from 'node:test';
import assert from 'node:assert/strict';
import { createNodeArea } from './node_area.js';
import { createExecutionTracker } from './execution.js';
import { WorkflowDoc } from './document.js';
import { describePanel, parseInspect } from './inspect.js';
import { buildNodeDef } from '../graph/schema.js';
import { OUTPUT_IMAGE_H } from './node_room.js';
import { createFrame } from '../canvas/frame.js';
import { areaRect, PANEL, panelHeight, panelLayout } from '../canvas/inspector.js';
import { fixtureDefs, readFixture } from '../test/fixtures.js';

const defs = fixtureDefs();
const payloads = readFixture('inspect_payloads.json');
const tick = () => new Promise((r) => setTimeout(r, 0));

function setup({ loaded = () => true } = {}) {
  const doc = WorkflowDoc.fromWorkflow(readFixture('default_workflow.json'), { defs, name: 'learn-timeline' });
  let redraws = 0;
  const images = new Map();
  const area = createNodeArea({
    getDefs: () => defs,
    viewUrl: (ref) => `/api/view?filename=${ref.filename}&subfolder=${ref.subfolder}&type=${ref.type}`,
    image: (url) => {
      if (!images.has(url)) images.set(url, { src: url, naturalWidth: loaded(url) ? 64 : 0, naturalHeight: 64 });
      return images.get(url);
    },
    fetchSigmas: async () => payloads.sigmas_route.response,
    redraw: () => { redraws++; },
  });
  const tracker = createExecutionTracker({ docs: () => [doc], active: () => doc,
    onChange: (kind, detail) => area.onExecution(kind, detail), createUrl: () => 'blob:1', revokeUrl: () => {} });
  tracker.registerPrompt('p1', doc, ['3', '9']);
  const frameOf = () => createFrame({ graph: doc.graph, defs, hasImages: (n) => doc.exec.outputs.has(n.id)
    || doc.exec.previews.has(n.id) || area.has(doc, n) });
  return { doc, area, tracker, images, frameOf, redraws: () => redraws };
}

const executed = (node, output) => ({ type: 'executed', data: { prompt_id: 'p1', node: String(node), output } });

test('a timeline result becomes the node\'s panel, and the node grows wide and tall enough for the strip', () => {
  const { doc, tracker, area, images, frameOf } = setup();
  const node = doc.graph.getNode(9);
  tracker.handle(executed(9, payloads.DenoisingTimeline.timeline ? payloads.DenoisingTimeline : {}));
  const panel = doc.exec.panels.get(9);
  assert.equal(panel.kind, 'timeline');
  assert.ok(node.size[0] >= 540, String(node.size));
  const rect = areaRect(frameOf(), node);
  const spec = describePanel(panel);
  assert.ok(rect.h >= panelHeight(spec, rect.w) - 4, `${rect.h} for ${panelHeight(spec, rect.w)}`);
  assert.equal(images.size, 18, 'every frame of the three views is preloaded');
  assert.equal(doc.modified, false, 'growing is not an edit');
  assert.equal(area.has(doc, node), true);
});

test('a KSampler showing a latent preview gets a real image area (it used to be 0 px high)', () => {
  const { doc, tracker, frameOf } = setup();
  const ks = doc.graph.getNode(3);
  assert.equal(Math.round(areaRect(frameOf(), ks).h), 0, 'the default workflow leaves no room');
  tracker.handle({ type: 'executing', data: { prompt_id: 'p1', node: '3' } });
  tracker.handlePreview({ meta: { prompt_id: 'p1', node_id: '3' }, image: new Uint8Array(4), mime: 'image/png' });
  const rect = areaRect(frameOf(), ks);
  assert.ok(rect.h >= OUTPUT_IMAGE_H + PANEL.CURVE_H - 4, String(rect.h));
});

test('a sampler node grows once for its sigma curve when the curve arrives', async () => {
  const { doc, area, frameOf, redraws } = setup();
  const ks = doc.graph.getNode(3);
  assert.equal(area.curveFor(doc, ks), null);
  await tick();
  const curve = area.curveFor(doc, ks);
  assert.equal(curve.series[0].points.length, 21);
  await tick();
  assert.ok(areaRect(frameOf(), ks).h >= PANEL.CURVE_H - 2);
  assert.ok(redraws() >= 2);
  ks.size[1] -= 40; // the user makes it smaller: not grown again
  area.curveFor(doc, ks);
  await tick();
  assert.ok(areaRect(frameOf(), ks).h < PANEL.CURVE_H);
  assert.equal(area.curveFor(doc, doc.graph.getNode(9)), null, 'not a sampler');
});

test('pressing and dragging on the slider (or the plot) scrubs through the frames', () => {
  const { doc, tracker, area, frameOf } = setup();
  tracker.handle(executed(9, payloads.DenoisingTimeline));
  const node = doc.graph.getNode(9);
  const rect = areaRect(frameOf(), node);
  const panel = doc.exec.panels.get(9);
  const L = panelLayout(describePanel(panel), rect);
  const [sx, sy, sw] = L.slider;
  const g = area.gesture(doc, node, rect, [sx + sw, sy + 9]);
  assert.ok(g);
  assert.equal(panel.index, 5, 'the press itself moves the thumb (right end: the last frame)');
  g.move(0, {}, [sx + (2 / 6) * sw, sy + 30]);
  assert.equal(panel.index, 2, 'dragging keeps scrubbing even off the track');
  g.move(0, {}, [sx - 500, sy]);
  assert.equal(panel.index, 0);
  g.up(true);
  const onPlot = area.gesture(doc, node, rect, [L.plot[0] + (4 / 6) * L.plot[2], L.plot[1] + 10]);
  assert.ok(onPlot);
  assert.equal(panel.index, 4);
  const v = L.views[1].cell;
  assert.equal(area.gesture(doc, node, rect, [v[0] + 5, v[1] + 5]), null, 'an image: the node is dragged');
  const t = L.toggle;
  const toggle = area.gesture(doc, node, rect, [t[0] + 5, t[1] + 5]);
  toggle.up(false);
  assert.equal(panel.row2, 'eps');
  assert.equal(area.gesture(doc, doc.graph.getNode(3), rect, [sx, sy]), null, 'no panel, no gesture');
});

test('shown() reports the images of the current frame; a frame still loading keeps the last one on screen', () => {
  let allow = true;
  const { doc, tracker, area, frameOf } = setup({ loaded: (url) => allow || url.includes('tl_0_') });
  tracker.handle(executed(9, payloads.DenoisingTimeline));
  const node = doc.graph.getNode(9);
  const rect = areaRect(frameOf(), node);
  area.setIndex(doc, 9, 1);
  const s1 = area.shown(doc, node, rect);
  assert.equal(s1.step, 1);
  assert.match(s1.views.x0, /filename=tl_1_x0\.png/);
  allow = false;
  area.setIndex(doc, 9, 'last');
  assert.match(area.shown(doc, node, rect).views.x0, /tl_5_x0/, 'drawn at the last frame');
  // tl_5_* were preloaded as loaded; a new image that is not loaded yet falls back to the last shown
  const fresh = { timeline: [{ ...payloads.DenoisingTimeline.timeline[0],
    frames: payloads.DenoisingTimeline.timeline[0].frames.map((f) => ({ ...f, x0: { ...f.x0, filename: `new_${f.step}.png` } })) }] };
  tracker.handle(executed(9, fresh));
  const s2 = area.shown(doc, node, rect);
  assert.equal(s2.step, 5, 'the re-run keeps the step');
  assert.match(s2.views.x0, /tl_5_x0/, 'the old x0 stays until the new one has loaded');
  assert.equal(area.setIndex(doc, 9, 'first'), true);
  assert.equal(area.setIndex(doc, 9, 'selected'), false, 'a timeline has no selected level');
  assert.equal(area.setIndex(doc, 3, 'first'), false);
});

test('history outputs (after a reconnect) restore panels too; the lightbox gets the panel\'s images', () => {
  const { doc, tracker, area } = setup();
  assert.equal(tracker.showOutput(doc, 9, payloads.DenoiseOnce), true);
  assert.equal(doc.exec.panels.get(9).kind, 'denoise_once');
  assert.deepEqual(doc.exec.outputs.get(9).map((r) => r.filename), ['once_x0.png']);
  assert.deepEqual(area.imageUrls(doc, doc.graph.getNode(9)).map((u) => u.match(/filename=([^&]+)/)[1]),
    ['once_in.png', 'once_x0.png', 'once_eps.png']);
  assert.equal(area.imageUrls(doc, doc.graph.getNode(3)), null);
  tracker.showOutput(doc, 9, payloads.SchedulePlot);
  assert.equal(area.imageUrls(doc, doc.graph.getNode(9)), null, 'a plot: the lightbox shows the chart output');
  assert.equal(tracker.showOutput(doc, 8, { text: ['x'] }), false);
});

test('the tour highlight is per doc and node', () => {
  const { doc, area } = setup();
  area.setHighlight({ docKey: doc.key, nodeId: 9, target: 'x0' });
  assert.equal(area.highlightFor(doc, doc.graph.getNode(9)), 'x0');
  assert.equal(area.highlightFor(doc, doc.graph.getNode(3)), null);
  area.setHighlight({ docKey: doc.key, nodeId: 3, target: null });
  assert.equal(area.highlightFor(doc, doc.graph.getNode(3)), 'node');
  area.setHighlight(null);
  assert.equal(area.highlightFor(doc, doc.graph.getNode(3)), null);
});

test("releasing NoiseToTimestep's slider sets the node's step (one undo step); dragging alone does not", () => {
  const d = fixtureDefs();
  d.set('NoiseToTimestep', buildNodeDef('NoiseToTimestep', { input: { required: {
    model: ['MODEL'], seed: ['INT', { default: 0 }], steps: ['INT', { default: 4, min: 1, max: 200 }],
    scheduler: [['normal', 'karras']], vae: ['VAE'], step: ['INT', { default: 2, min: 0, max: 200 }] } },
  output: ['LATENT', 'IMAGE'], name: 'NoiseToTimestep' }));
  const doc = WorkflowDoc.fromWorkflow({ nodes: [], links: [], version: 0.4 }, { defs: d, name: 'learn-noising' });
  const def = d.get('NoiseToTimestep');
  const node = doc.graph.addNode({ type: 'NoiseToTimestep', pos: [0, 0], size: [400, 600],
    inputs: [{ name: 'model', type: 'MODEL', link: null }, { name: 'vae', type: 'VAE', link: null }],
    outputs: [], widgets_values: def.widgets.map((w) => w.default) });
  let commits = 0;
  const area = createNodeArea({ getDefs: () => d, viewUrl: (r) => r.filename, image: (u) => ({ src: u }),
    fetchSigmas: async () => ({ sigmas: [] }), commit: () => { commits++; } });
  doc.exec.panels.set(node.id, parseInspect(payloads.NoiseToTimestep));
  const rect = { x: 6, y: 200, w: 388, h: 600 };
  const L = panelLayout(describePanel(doc.exec.panels.get(node.id)), rect);
  const [sx, sy, sw] = L.slider;
  const g = area.gesture(doc, node, rect, [sx + sw, sy + 9]);
  assert.equal(doc.exec.panels.get(node.id).index, 4);
  assert.equal(commits, 0);
  g.move(0, {}, [sx + sw / 4, sy + 9]);
  g.up(true);
  const stepWidget = def.widgets.find((w) => w.name === 'step');
  assert.equal(node.widgets_values[stepWidget.valueIndex], 1);
  assert.equal(commits, 1);
  area.gesture(doc, node, rect, [sx + sw / 4, sy + 9]).up(false);
  assert.equal(commits, 1, 'unchanged: no undo step');
});
