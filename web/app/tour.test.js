import test from 'node:test';
import assert from 'node:assert/strict';
import { buildTour, createTour, isLearnWorkflow, TOUR_SCRIPT } from './tour.js';

const timelineGraph = [{ id: 4, type: 'CheckpointLoaderSimple' }, { id: 7, type: 'DenoisingTimeline' },
  { id: 9, type: 'VAEDecode' }];

test('learn-* workflows are recognised by name', () => {
  assert.ok(isLearnWorkflow('learn-timeline'));
  assert.ok(isLearnWorkflow('workflows/learn_noising'));
  assert.ok(!isLearnWorkflow('txt2img'));
  assert.ok(!isLearnWorkflow('relearn-x'));
  assert.ok(!isLearnWorkflow(undefined));
});

test('a timeline workflow gets the film steps, bound to its node, in the script order', () => {
  const steps = buildTour(timelineGraph);
  assert.deepEqual(steps.map((s) => s.id), ['film', 'noise', 'predict', 'scrub', 'schedule', 'cfg', 'try']);
  assert.ok(steps.every((s) => s.nodeId === 7));
  const byId = Object.fromEntries(steps.map((s) => [s.id, s]));
  assert.equal(byId.noise.title, 'This is pure noise');
  assert.equal(byId.noise.target, 'x_t');
  assert.equal(byId.noise.at, 'first');
  assert.equal(byId.predict.title, 'This is what the model predicts');
  assert.equal(byId.cfg.title, 'This is CFG');
  assert.equal(byId.cfg.target, 'row2');
});

test('other learning nodes and sampler nodes bring their own steps; a plain workflow starts with "open one"', () => {
  const ids = buildTour([{ id: 1, type: 'NoiseToTimestep' }, { id: 2, type: 'DenoiseOnce' }, { id: 3, type: 'KSampler' },
    { id: 5, type: 'TrainingStep' }, { id: 6, type: 'SchedulePlot' }]).map((s) => s.id);
  assert.deepEqual(ids, ['noising', 'once', 'schedules', 'training', 'sampler', 'try']);
  const plain = buildTour([{ id: 3, type: 'KSampler' }]);
  assert.deepEqual(plain.map((s) => s.id), ['start', 'sampler']);
  assert.equal(plain[0].openTemplate, 'learn-timeline');
  assert.deepEqual(buildTour([]).map((s) => s.id), ['start']);
  assert.ok(TOUR_SCRIPT.every((s) => s.title && s.text.length > 40), 'every step explains something');
});

test('Next waits for the run on steps that show its result; Back is always free', () => {
  const tour = createTour(buildTour(timelineGraph));
  const results = new Set();
  const has = (id) => results.has(id);
  assert.equal(tour.step.id, 'film');
  assert.equal(tour.canBack(), false);
  assert.equal(tour.status(has).ready, true);
  assert.equal(tour.next(has), true);
  assert.equal(tour.step.id, 'noise');
  const st = tour.status(has);
  assert.equal(st.ready, false);
  assert.match(st.hint, /Run/);
  assert.equal(tour.canNext(has), false);
  assert.equal(tour.next(has), false);
  assert.equal(tour.step.id, 'noise');
  results.add(7);
  assert.equal(tour.next(has), true);
  assert.equal(tour.step.id, 'predict');
  assert.equal(tour.back(), true);
  assert.equal(tour.back(), true);
  assert.equal(tour.back(), false);
  assert.equal(tour.index, 0);
});

test('goto jumps back freely and forward only over steps that can be followed', () => {
  const tour = createTour(buildTour(timelineGraph));
  const none = () => false;
  assert.equal(tour.goto(4, none), false, 'step 1 needs a result');
  assert.equal(tour.goto(1, none), true, 'the first waiting step itself can be shown');
  assert.equal(tour.goto(6, () => true), true);
  assert.equal(tour.isLast, true);
  assert.equal(tour.canNext(() => true), false);
  assert.equal(tour.goto(0, none), true);
  assert.equal(tour.goto(99, none), false);
});

test('the film step moves on by itself when the run result arrives, once', () => {
  const tour = createTour(buildTour(timelineGraph));
  assert.equal(tour.update(() => false), false);
  assert.equal(tour.step.id, 'film');
  assert.equal(tour.update(() => true), true);
  assert.equal(tour.step.id, 'noise');
  tour.back();
  assert.equal(tour.update(() => true), false, 'going back to it does not bounce the learner forward again');
  assert.equal(tour.step.id, 'film');
  const empty = createTour([]);
  assert.equal(empty.step, null);
  assert.equal(empty.status(() => true).ready, false);
  assert.equal(empty.update(() => true), false);
});
