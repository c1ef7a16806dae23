// The inspection nodes' results (DenoisingTimeline, NoiseToTimestep, DenoiseOnce, SchedulePlot, TrainingStep):
// their `executed` payloads parsed into panels (plus the step the learner has scrubbed to), the step <-> frame
// mapping of the sliders, and each panel described as views, a sigma plot, a slider and captions for
// canvas/inspector.js to lay out and draw. Pure: no DOM; image elements come from an injected `image(ref)`.

export const PanelKind = Object.freeze({
  TIMELINE: 'timeline', NOISING: 'noising', DENOISE_ONCE: 'denoise_once', SCHEDULE_PLOT: 'schedule_plot',
  TRAINING_STEP: 'training_step',
});

/** Series colours of the schedule plot (one per scheduler, in the payload's order). */
export const SERIES_COLORS = Object.freeze(['#64b5f6', '#ffa931', '#81c784', '#ff6e6e', '#b39ddb', '#ffd500',
  '#66ffff', '#ff9cf9', '#c2ffae', '#a0c4ff']);

const isRef = (r) => Boolean(r && typeof r === 'object' && typeof r.filename === 'string');
const num = (v, fallback = 0) => (Number.isFinite(Number(v)) ? Number(v) : fallback);
const nums = (a) => (Array.isArray(a) ? a.map((v) => num(v)) : []);
const first = (v) => (Array.isArray(v) ? v[0] : undefined);

/** Index of the frame whose step is nearest to `step` (frames sorted by step; ties go to the earlier frame). */
export function frameIndexForStep(frames, step) {
  if (!frames.length) return -1;
  let lo = 0, hi = frames.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (frames[mid].step < step) lo = mid + 1;
    else hi = mid;
  }
  if (lo > 0 && Math.abs(frames[lo - 1].step - step) <= Math.abs(frames[lo].step - step)) return lo - 1;
  return lo;
}

/** The frame a slider at `fraction` (0 = left end, 1 = right end of a track spanning steps 0..xMax) shows. */
export function frameIndexAtFraction(frames, xMax, fraction) {
  return frameIndexForStep(frames, Math.max(0, Math.min(1, fraction)) * xMax);
}

/** Where frame `index` sits on such a track (0..1). */
export function fractionOfFrame(frames, xMax, index) {
  const f = frames[index];
  return f && xMax > 0 ? Math.max(0, Math.min(1, f.step / xMax)) : 0;
}

function sortedFrames(frames, isValid) {
  return (Array.isArray(frames) ? frames : []).filter((f) => f && Number.isFinite(Number(f.step)) && isValid(f))
    .map((f) => ({ ...f, step: Number(f.step), sigma: num(f.sigma) }))
    .sort((a, b) => a.step - b.step);
}

/** The noising schedule oriented like the frames (index = frame step): the sigmas as sent or reversed, whichever
 * agrees with the frames' own sigmas. */
export function orientedSigmas(sigmas, frames) {
  if (!sigmas.length) return [];
  const rev = [...sigmas].reverse();
  const err = (arr) => frames.reduce((s, f) => s + Math.abs((arr[f.step] ?? 0) - f.sigma), 0);
  return err(rev) < err(sigmas) ? rev : sigmas;
}

/**
 * The panel a node's `executed` output carries, or null. `previous` (the node's last panel) keeps the scrubbed
 * step across re-runs, so a learner changing cfg and running again compares the same step.
 */
export function parseInspect(output, previous = null) {
  if (!output || typeof output !== 'object') return null;
  let panel = null;
  const tl = first(output.timeline);
  const nz = first(output.noising);
  const once = first(output.denoise_once);
  const plot = first(output.schedule_plot);
  const train = first(output.training_step);
  if (tl) {
    const frames = sortedFrames(tl.frames, (f) => isRef(f.x_t) && isRef(f.x0) && isRef(f.eps));
    const steps = Math.max(1, num(tl.steps, frames.length));
    if (frames.length) {
      panel = { kind: PanelKind.TIMELINE, steps, cfg: num(tl.cfg, 1), sampler: String(tl.sampler ?? ''),
        scheduler: String(tl.scheduler ?? ''), sigmas: nums(tl.sigmas), frames, index: 0, row2: 'x0', xMax: steps };
    }
  } else if (nz) {
    const frames = sortedFrames(nz.frames, (f) => isRef(f.image));
    const steps = Math.max(1, num(nz.steps, frames.length - 1));
    if (frames.length) {
      const selected = num(nz.selected, frames[frames.length - 1].step);
      panel = { kind: PanelKind.NOISING, steps, selected, sigmas: orientedSigmas(nums(nz.sigmas), frames), frames,
        index: frameIndexForStep(frames, selected), xMax: steps };
    }
  } else if (once && isRef(once.input) && isRef(once.x0) && isRef(once.eps)) {
    panel = { kind: PanelKind.DENOISE_ONCE, sigma: num(once.sigma), input: once.input, x0: once.x0, eps: once.eps };
  } else if (plot && plot.curves && typeof plot.curves === 'object') {
    const curves = Object.entries(plot.curves).filter(([, s]) => Array.isArray(s) && s.length).map(([n, s]) => [n, nums(s)]);
    if (curves.length) {
      panel = { kind: PanelKind.SCHEDULE_PLOT, steps: num(plot.steps, curves[0][1].length - 1),
        modelSampling: String(plot.model_sampling ?? 'eps'), curves };
    }
  } else if (train && ['noisy', 'noise', 'predicted', 'error'].every((k) => isRef(train[k]))) {
    panel = { kind: PanelKind.TRAINING_STEP, t: num(train.t), sigma: num(train.sigma), mse: num(train.mse),
      noisy: train.noisy, noise: train.noise, predicted: train.predicted, error: train.error };
  }
  if (panel && previous?.kind === panel.kind && previous.shown) panel.shown = { ...previous.shown }; // no blank flash
  if (panel?.frames && previous?.kind === panel.kind && previous.frames?.length) {
    const step = previous.frames[previous.index]?.step ?? 0;
    panel.index = frameIndexForStep(panel.frames, step);
    if (previous.row2) panel.row2 = previous.row2;
  }
  return panel;
}

/** Every image a panel can show, the slider's frames first (preloaded so that scrubbing never waits). */
export function panelRefs(panel) {
  switch (panel?.kind) {
    case PanelKind.TIMELINE: return panel.frames.flatMap((f) => [f.x_t, f.x0, f.eps]);
    case PanelKind.NOISING: return panel.frames.map((f) => f.image);
    case PanelKind.DENOISE_ONCE: return [panel.input, panel.x0, panel.eps];
    case PanelKind.TRAINING_STEP: return [panel.noisy, panel.noise, panel.predicted, panel.error];
    default: return [];
  }
}

/** Moves a panel's slider to frame `index` (clamped). Returns whether it moved. */
export function setPanelIndex(panel, index) {
  if (!panel?.frames?.length) return false;
  const i = Math.max(0, Math.min(panel.frames.length - 1, Math.round(index)));
  if (i === panel.index) return false;
  panel.index = i;
  return true;
}

/** σ with 3 significant digits (0 stays 0). */
export function formatSigma(s) {
  if (!Number.isFinite(s)) return '?';
  if (s === 0) return '0';
  return Math.abs(s) >= 100 ? s.toFixed(0) : Number(s.toPrecision(3)).toString();
}

const view = (key, label, ref) => ({ key, label, ref: isRef(ref) ? ref : null });

function timelineSpec(p) {
  const f = p.frames[p.index];
  const guided = p.row2 === 'eps' ? f.eps : f.x0;
  const hasRow2 = isRef(f.eps_cond) || isRef(f.x0_cond);
  const uncondMissing = p.row2 === 'eps' ? !isRef(f.eps_uncond) : !isRef(f.x0_uncond);
  return {
    minWidth: 540,
    header: `step ${f.step + 1} / ${p.steps}  ·  σ ${formatSigma(f.sigma)}  ·  ${p.sampler}  ·  ${p.scheduler}  ·  cfg ${p.cfg}`,
    views: [view('x_t', 'x_t  (noisy input)', f.x_t), view('x0', 'x̂₀  (predicted clean)', f.x0),
      view('eps', 'ε̂  (predicted noise)', f.eps)],
    plot: { series: [{ name: 'σ', points: p.sigmas.map((s, i) => [i, s]) }], xMax: p.xMax, marker: f.step },
    slider: { xs: p.frames.map((fr) => fr.step), index: p.index, xMax: p.xMax, left: 'pure noise', right: 'clean' },
    row2: hasRow2 ? {
      title: `this step's predictions (${p.row2 === 'eps' ? 'ε̂' : 'x̂₀'})  ·  guided = uncond + ${p.cfg} × (cond − uncond)`,
      toggle: p.row2 === 'eps' ? 'show x̂₀' : 'show ε̂',
      views: [
        view('cond', 'cond (with prompt)', p.row2 === 'eps' ? f.eps_cond : f.x0_cond),
        { ...view('uncond', 'uncond (no prompt)', p.row2 === 'eps' ? f.eps_uncond : f.x0_uncond),
          empty: uncondMissing ? 'no uncond pass (cfg 1)' : null },
        view('guided', `guided (cfg ${p.cfg})`, guided),
      ],
    } : null,
    footer: null,
  };
}

function noisingSpec(p) {
  const f = p.frames[p.index];
  const what = f.step === 0 ? 'the clean image' : f.step >= p.steps ? 'pure noise' : 'x_t = x₀ + σ·ε';
  const curve = p.sigmas.length ? p.sigmas.map((s, i) => [i, s]) : p.frames.map((fr) => [fr.step, fr.sigma]);
  return {
    minWidth: 315,
    header: `noise level ${f.step} / ${p.steps}  ·  σ ${formatSigma(f.sigma)}${f.step === p.selected ? '  ·  the node outputs this one' : ''}`,
    views: [view('image', what, f.image)],
    plot: { series: [{ name: 'σ', points: curve }], xMax: p.xMax, marker: f.step },
    slider: { xs: p.frames.map((fr) => fr.step), index: p.index, xMax: p.xMax, left: 'clean', right: 'pure noise',
      mark: p.selected },
    row2: null,
    footer: 'x_t = x₀ + σ·ε  ·  release sets the node\'s step',
  };
}

function denoiseOnceSpec(p) {
  return {
    minWidth: 480,
    header: `one model call at σ ${formatSigma(p.sigma)}`,
    views: [view('input', 'x_t  (input)', p.input), view('x0', 'x̂₀  (the model\'s guess)', p.x0),
      view('eps', 'ε̂  (the noise it sees)', p.eps)],
    plot: null, slider: null, row2: null,
    footer: 'x̂₀ = x_t − σ · ε̂',
  };
}

function schedulePlotSpec(p) {
  return {
    minWidth: 315,
    header: `${p.steps} steps  ·  ${p.modelSampling} model  ·  σ at each step`,
    views: [],
    plot: { series: p.curves.map(([name, s], i) => ({ name, color: SERIES_COLORS[i % SERIES_COLORS.length],
      points: s.map((v, j) => [j, v]) })), xMax: Math.max(1, ...p.curves.map(([, s]) => s.length - 1)), marker: null,
    legend: true, tall: true },
    slider: null, row2: null, footer: null,
  };
}

function trainingSpec(p) {
  return {
    minWidth: 480,
    header: `training step at t ${p.t}  ·  σ ${formatSigma(p.sigma)}`,
    views: [view('noisy', 'noisy x_t', p.noisy), view('noise', 'true noise ε', p.noise),
      view('predicted', 'predicted ε̂', p.predicted), view('error', 'error (ε̂ − ε)²', p.error)],
    plot: null, slider: null, row2: null,
    footer: `loss = MSE(ε̂, ε) = ${p.mse.toFixed(4)}  ·  training lowers it`,
  };
}

const SPECS = { timeline: timelineSpec, noising: noisingSpec, denoise_once: denoiseOnceSpec,
  schedule_plot: schedulePlotSpec, training_step: trainingSpec };

/**
 * What canvas/inspector.js draws for a panel: {minWidth, header, views: [{key, label, ref, img?}], plot, slider,
 * row2, footer}. `image(ref)` (optional) attaches the element to draw to each view.
 */
export function describePanel(panel, image = null) {
  const build = SPECS[panel?.kind];
  if (!build) return null;
  const spec = build(panel);
  if (image) {
    for (const v of [...spec.views, ...(spec.row2?.views ?? [])]) v.img = v.ref ? image(v.ref) : null;
  }
  return spec;
}
