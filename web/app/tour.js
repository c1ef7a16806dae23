// The guided tour's script and state machine (pure): which steps a workflow gets (from the inspection nodes it
// holds), which node and part of its panel each step points at, where it puts the slider, and whether a step can
// be followed yet (most need the workflow to have run). panels/tour.js shows it.

/** Node types whose panels the tour explains. */
export const LEARN_TYPES = Object.freeze(['DenoisingTimeline', 'NoiseToTimestep', 'DenoiseOnce', 'SchedulePlot',
  'TrainingStep']);

const TIMELINE = ['DenoisingTimeline'];

/**
 * The script, in order. A step applies when the workflow has a node of one of its `types`; `target` is the part
 * of that node's panel to ring (a view key, 'plot', 'slider', 'row2', 'footer', 'curve'; null rings the node);
 * `at` moves the slider ('first', 'middle', 'last', 'selected'); `needsResult` steps wait for a run;
 * `advanceOnResult` moves on by itself once the run's result arrives.
 */
export const TOUR_SCRIPT = Object.freeze([
  { id: 'start', types: [], title: 'Open a learning workflow', needsResult: false, openTemplate: 'learn-timeline',
    text: 'The tour follows the learn-* workflows. Open learn-timeline to watch a model turn pure static into a '
      + 'picture, one step at a time.' },
  { id: 'film', types: TIMELINE, target: null, title: 'Make the film', needsResult: false, advanceOnResult: true,
    text: 'A model trained to predict the noise in an image generates by running a noising film backwards: it starts '
      + 'from pure static and removes a little predicted noise at every step. This node keeps every frame of that film. '
      + 'Press Run to make it.' },
  { id: 'noise', types: TIMELINE, target: 'x_t', at: 'first', title: 'This is pure noise', needsResult: true,
    text: 'Left: x_t at the first step is where generation starts: random static, scaled to the largest noise level σ '
      + 'of the schedule. There is no picture in it yet; the seed decides which static.' },
  { id: 'predict', types: TIMELINE, target: 'x0', at: 'first', title: 'This is what the model predicts',
    needsResult: true,
    text: 'The model looks at the noisy image and predicts the noise in it: ε̂, on the right. Taking that noise away '
      + 'gives its guess of the clean image, x̂₀ = x_t − σ·ε̂, in the middle. From pure static the guess is only a '
      + 'rough layout.' },
  { id: 'scrub', types: TIMELINE, target: 'slider', at: 'middle', title: 'Run the film backwards', needsResult: true,
    text: 'Drag the slider. At each step the sampler moves x_t toward the model\'s guess and σ drops, so the next '
      + 'guess is sharper. Left is pure noise, right is the finished image.' },
  { id: 'schedule', types: TIMELINE, target: 'plot', title: 'The schedule cuts the film', needsResult: true,
    text: 'The curve is σ at every step and the dot is the step you are on. The scheduler shapes the curve, steps '
      + 'decides how many cuts, and the sampler decides how each cut is made.' },
  { id: 'cfg', types: TIMELINE, target: 'row2', title: 'This is CFG', needsResult: true,
    text: 'The model predicts twice per step: with your prompt (cond) and without it (uncond). Classifier-free '
      + 'guidance pushes the prediction from uncond toward cond: guided = uncond + cfg × (cond − uncond). Higher cfg '
      + 'follows the prompt harder; too high and colours burn.' },
  { id: 'noising', types: ['NoiseToTimestep'], target: 'slider', at: 'selected', title: 'Forward: adding noise',
    needsResult: true,
    text: 'Training runs the film forwards: take a clean image and add noise of strength σ, x_t = x₀ + σ·ε. Drag '
      + 'from clean to pure noise; the triangle marks the level the node passes on.' },
  { id: 'once', types: ['DenoiseOnce'], target: 'x0', title: 'One look by the model', needsResult: true,
    text: 'One model call on that noisy image. The middle picture is what the model thinks the clean image is: close '
      + 'at low noise, a guess at high noise.' },
  { id: 'schedules', types: ['SchedulePlot'], target: 'plot', title: 'Every scheduler, side by side',
    needsResult: true,
    text: 'σ at each step for every scheduler, with the same number of steps. All start at pure noise and end at 0; '
      + 'they differ in where they spend their steps.' },
  { id: 'training', types: ['TrainingStep'], target: 'footer', title: 'How the model learned this', needsResult: true,
    text: 'One training step: noise an image, ask the model for the noise, compare with the noise actually added. The '
      + 'error map shows where it was wrong; training nudges the weights to lower the MSE.' },
  { id: 'sampler', types: ['KSampler', 'KSamplerAdvanced', 'BasicScheduler'], target: 'curve', needsResult: false,
    title: 'Your sampler\'s schedule',
    text: 'Sampler nodes draw the σ curve of their own settings. Change steps, the scheduler or denoise and the curve '
      + 'follows; while the node runs, the dot marks its step.' },
  { id: 'try', types: ['DenoisingTimeline', 'NoiseToTimestep'], target: null, title: 'Your turn', needsResult: false,
    text: 'Change cfg, steps or the scheduler on the node and run again. The slider keeps its place, so you can '
      + 'compare the same step.' },
]);

/** Whether a workflow's name marks it as one of the learning workflows (the tour opens with it). */
export function isLearnWorkflow(name) {
  return /^learn[-_ ]/i.test(String(name ?? '').replace(/^.*\//, ''));
}

/** The tour for a workflow's nodes ([{id, type}] in graph order): the script's steps that have a node, each with
 * its nodeId; a workflow without learning nodes starts with the step that opens one. */
export function buildTour(nodes, script = TOUR_SCRIPT) {
  const list = [...nodes];
  const hasLearn = list.some((n) => LEARN_TYPES.includes(n.type));
  const steps = [];
  for (const s of script) {
    if (s.id === 'start') {
      if (!hasLearn) steps.push({ ...s, nodeId: null });
      continue;
    }
    const node = s.types.map((t) => list.find((n) => n.type === t)).find(Boolean);
    if (node) steps.push({ ...s, nodeId: node.id });
  }
  return steps;
}

/**
 * A tour over `steps`. `hasResult(nodeId)` says whether a node has shown its result; the state machine keeps the
 * learner on a step that needs a result until it is there.
 */
export function createTour(steps) {
  let index = 0;
  const advanced = new Set(); // steps that already moved on by themselves once

  const ready = (s, hasResult) => !s?.needsResult || (s.nodeId !== null && hasResult(s.nodeId));

  return {
    steps,
    get index() { return index; },
    get step() { return steps[index] ?? null; },
    get isFirst() { return index === 0; },
    get isLast() { return index >= steps.length - 1; },

    /** {ready, hint} of the current step. */
    status(hasResult) {
      const s = steps[index];
      if (!s) return { ready: false, hint: 'Nothing to show here.' };
      const ok = ready(s, hasResult);
      return { ready: ok, hint: ok ? null : 'Run the workflow first (the Run button or Ctrl+Enter); this step shows its result.' };
    },
    canNext(hasResult) { return index < steps.length - 1 && ready(steps[index], hasResult); },
    canBack() { return index > 0; },
    next(hasResult) {
      if (!this.canNext(hasResult)) return false;
      index++;
      return true;
    },
    back() {
      if (index === 0) return false;
      index--;
      return true;
    },
    /** Jumps to step i: back freely, forward only past steps that can be followed now. */
    goto(i, hasResult) {
      if (i < 0 || i >= steps.length || i === index) return false;
      if (i > index) for (let j = index; j < i; j++) if (!ready(steps[j], hasResult)) return false;
      index = i;
      return true;
    },
    /** Called when results arrive: a step waiting for the run's result moves on by itself, once. */
    update(hasResult) {
      const s = steps[index];
      if (!s?.advanceOnResult || advanced.has(s.id) || s.nodeId === null || !hasResult(s.nodeId)) return false;
      advanced.add(s.id);
      return this.next(hasResult);
    },
  };
}
