import test from 'node:test';
import assert from 'node:assert/strict';
import {
  describePanel, formatSigma, fractionOfFrame, frameIndexAtFraction, frameIndexForStep, orientedSigmas, PanelKind,
  panelRefs, parseInspect, setPanelIndex,
} from './inspect.js';
import { readFixture } from '../test/fixtures.js';

const payloads = readFixture('inspect_payloads.json');

test('a DenoisingTimeline payload becomes a timeline panel at its first frame', () => {
  const p = parseInspect(payloads.DenoisingTimeline);
  assert.equal(p.kind, PanelKind.TIMELINE);
  assert.equal(p.steps, 6);
  assert.equal(p.frames.length, 6);
  assert.equal(p.sigmas.length, 7);
  assert.equal(p.index, 0);
  assert.equal(p.cfg, 7.5);
  assert.equal(p.scheduler, 'karras');
  assert.deepEqual(p.frames[2].x0, { filename: 'tl_2_x0.png', subfolder: 'inspect', type: 'temp' });
});

test('each kind of payload is recognised; malformed ones are ignored', () => {
  assert.equal(parseInspect(payloads.NoiseToTimestep).kind, PanelKind.NOISING);
  assert.equal(parseInspect(payloads.DenoiseOnce).kind, PanelKind.DENOISE_ONCE);
  assert.equal(parseInspect(payloads.SchedulePlot).kind, PanelKind.SCHEDULE_PLOT);
  assert.equal(parseInspect(payloads.TrainingStep).kind, PanelKind.TRAINING_STEP);
  assert.equal(parseInspect({ images: [{ filename: 'a.png', subfolder: '', type: 'output' }] }), null);
  assert.equal(parseInspect(null), null);
  assert.equal(parseInspect({ timeline: [{ steps: 3, frames: [{ step: 0 }] }] }), null, 'frames without images');
  assert.equal(parseInspect({ timeline: [] }), null);
  assert.equal(parseInspect({ schedule_plot: [{ curves: {} }] }), null);
  assert.equal(parseInspect({ training_step: [{ noisy: {} }] }), null);
});

test('frames are sorted by step and the slider maps to the nearest frame', () => {
  const shuffled = structuredClone(payloads.DenoisingTimeline_subsampled);
  shuffled.timeline[0].frames.reverse();
  const p = parseInspect(shuffled);
  assert.deepEqual(p.frames.map((f) => f.step), [0, 3, 6, 9]);
  assert.equal(p.xMax, 10);
  assert.equal(frameIndexForStep(p.frames, 0), 0);
  assert.equal(frameIndexForStep(p.frames, 4), 1);
  assert.equal(frameIndexForStep(p.frames, 4.5), 1, 'a tie goes to the earlier frame');
  assert.equal(frameIndexForStep(p.frames, 5), 2);
  assert.equal(frameIndexForStep(p.frames, 100), 3);
  assert.equal(frameIndexForStep(p.frames, -3), 0);
  assert.equal(frameIndexForStep([], 3), -1);
  assert.equal(frameIndexAtFraction(p.frames, p.xMax, 0), 0);
  assert.equal(frameIndexAtFraction(p.frames, p.xMax, 0.62), 2);
  assert.equal(frameIndexAtFraction(p.frames, p.xMax, 1), 3);
  assert.equal(frameIndexAtFraction(p.frames, p.xMax, 7), 3, 'clamped');
  for (let i = 0; i < p.frames.length; i++) {
    assert.equal(frameIndexAtFraction(p.frames, p.xMax, fractionOfFrame(p.frames, p.xMax, i)), i, 'round trip');
  }
});

test('a re-run keeps the scrubbed step and the row mode', () => {
  const first = parseInspect(payloads.DenoisingTimeline);
  setPanelIndex(first, 4);
  first.row2 = 'eps';
  const again = parseInspect(payloads.DenoisingTimeline, first);
  assert.equal(again.index, 4);
  assert.equal(again.row2, 'eps');
  const sub = parseInspect(payloads.DenoisingTimeline_subsampled, first);
  assert.equal(sub.frames[sub.index].step, 3, 'nearest step of the new film');
  assert.equal(parseInspect(payloads.NoiseToTimestep, first).index, 2, 'another kind starts at its own default');
});

test('setPanelIndex clamps and reports moves', () => {
  const p = parseInspect(payloads.DenoisingTimeline);
  assert.equal(setPanelIndex(p, 0), false);
  assert.equal(setPanelIndex(p, 99), true);
  assert.equal(p.index, 5);
  assert.equal(setPanelIndex(p, -4), true);
  assert.equal(p.index, 0);
  assert.equal(setPanelIndex(parseInspect(payloads.DenoiseOnce), 1), false);
});

test('the noising panel starts at the selected level and orients its sigmas clean -> noisy', () => {
  const p = parseInspect(payloads.NoiseToTimestep);
  assert.equal(p.selected, 2);
  assert.equal(p.index, 2);
  assert.ok(p.sigmas[0] < p.sigmas[p.sigmas.length - 1], String(p.sigmas));
  for (const f of p.frames) assert.equal(p.sigmas[f.step], f.sigma);
  assert.deepEqual(orientedSigmas([3, 2, 1, 0], [{ step: 0, sigma: 0 }, { step: 3, sigma: 3 }]), [0, 1, 2, 3]);
  assert.deepEqual(orientedSigmas([3, 2, 1, 0], [{ step: 0, sigma: 3 }]), [3, 2, 1, 0]);
  const spec = describePanel(p);
  assert.equal(spec.slider.mark, 2);
  assert.match(spec.header, /the node outputs this one/);
  setPanelIndex(p, 0);
  assert.equal(describePanel(p).views[0].label, 'the clean image');
  setPanelIndex(p, 4);
  assert.equal(describePanel(p).views[0].label, 'pure noise');
});

test('the timeline panel shows x_t, x0 and eps of the current frame, the sigma curve and the cfg row', () => {
  const p = parseInspect(payloads.DenoisingTimeline);
  setPanelIndex(p, 3);
  const spec = describePanel(p, (ref) => ({ src: ref.filename }));
  assert.deepEqual(spec.views.map((v) => v.key), ['x_t', 'x0', 'eps']);
  assert.deepEqual(spec.views.map((v) => v.img.src), ['tl_3_x_t.png', 'tl_3_x0.png', 'tl_3_eps.png']);
  assert.equal(spec.plot.marker, 3);
  assert.equal(spec.plot.series[0].points.length, 7);
  assert.equal(spec.slider.index, 3);
  assert.deepEqual(spec.slider.xs, [0, 1, 2, 3, 4, 5]);
  assert.match(spec.header, /^step 4 \/ 6/);
  assert.deepEqual(spec.row2.views.map((v) => v.ref.filename), ['tl_3_x0_cond.png', 'tl_3_x0_uncond.png', 'tl_3_x0.png']);
  p.row2 = 'eps';
  assert.deepEqual(describePanel(p).row2.views.map((v) => v.ref.filename),
    ['tl_3_eps_cond.png', 'tl_3_eps_uncond.png', 'tl_3_eps.png']);
  const nocfg = parseInspect(payloads.DenoisingTimeline_subsampled);
  const uncond = describePanel(nocfg).row2.views[1];
  assert.equal(uncond.ref, null);
  assert.match(uncond.empty, /no uncond/);
});

test('the other panels describe their images and captions', () => {
  const once = describePanel(parseInspect(payloads.DenoiseOnce));
  assert.deepEqual(once.views.map((v) => v.ref.filename), ['once_in.png', 'once_x0.png', 'once_eps.png']);
  assert.match(once.header, /σ 3.2/);
  const plot = describePanel(parseInspect(payloads.SchedulePlot));
  assert.deepEqual(plot.plot.series.map((s) => s.name), ['normal', 'karras', 'exponential', 'simple']);
  assert.equal(new Set(plot.plot.series.map((s) => s.color)).size, 4);
  assert.equal(plot.plot.xMax, 10);
  const train = describePanel(parseInspect(payloads.TrainingStep));
  assert.deepEqual(train.views.map((v) => v.key), ['noisy', 'noise', 'predicted', 'error']);
  assert.match(train.footer, /MSE\(ε̂, ε\) = 0\.0421/);
  assert.equal(describePanel(null), null);
});

test('panelRefs lists the frames to preload', () => {
  assert.equal(panelRefs(parseInspect(payloads.DenoisingTimeline)).length, 18);
  assert.equal(panelRefs(parseInspect(payloads.NoiseToTimestep)).length, 5);
  assert.equal(panelRefs(parseInspect(payloads.SchedulePlot)).length, 0);
  assert.equal(panelRefs(null).length, 0);
});

test('formatSigma', () => {
  assert.equal(formatSigma(0), '0');
  assert.equal(formatSigma(14.6146), '14.6');
  assert.equal(formatSigma(0.029167), '0.0292');
  assert.equal(formatSigma(NaN), '?');
});
