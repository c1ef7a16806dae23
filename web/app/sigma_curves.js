// The sigma curve of a sampler node's own settings (KSampler, KSamplerAdvanced, BasicScheduler: any node with a
// `scheduler` combo and a `steps` number), from GET /api/chisel/sigmas. One request per distinct (scheduler, steps,
// denoise, sampler, model_sampling), shared by every node with those settings; a node keeps showing its last curve while
// a changed setting loads. The model's kind is not known in the editor, so curves are for eps models.

import { getWidgetValue } from '../graph/schema.js';

const widgetValue = (node, def, name) => {
  const w = def.widgets.find((x) => x.name === name);
  if (!w) return undefined;
  if (node.inputs.some((i) => i.widget?.name === name && i.link !== null)) return null; // fed by a link: unknown
  return getWidgetValue(node, w);
};

/** Whether nodes of this definition get a curve. */
export function hasScheduleWidgets(def) {
  return Boolean(def?.widgets.some((w) => w.name === 'scheduler') && def.widgets.some((w) => w.name === 'steps'));
}

/** The route's query for a node's settings, or null when they are not all known (a widget fed by a link). */
export function sigmaQuery(node, def, modelSampling = 'eps') {
  if (!hasScheduleWidgets(def)) return null;
  const scheduler = widgetValue(node, def, 'scheduler');
  const steps = widgetValue(node, def, 'steps');
  const denoise = widgetValue(node, def, 'denoise');
  const sampler = widgetValue(node, def, 'sampler_name'); // a few samplers drop the second-to-last sigma
  if (scheduler === null || steps === null || denoise === null) return null;
  if (!scheduler || !(Number(steps) >= 1)) return null;
  return { scheduler: String(scheduler), steps: String(Math.round(Number(steps))),
    denoise: String(denoise === undefined ? 1 : Number(denoise)), model_sampling: modelSampling,
    ...(sampler ? { sampler_name: String(sampler) } : {}) };
}

const short = (v) => (v === 0 ? '0' : String(Number(v.toPrecision(3))));

export const queryString = (q) => Object.entries(q).map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('&');

/**
 * @param deps fetchSigmas(query) -> Promise<{sigmas}>, onLoad() (a curve arrived: redraw).
 */
export function createSigmaCurves({ fetchSigmas, onLoad = () => {} }) {
  const cache = new Map(); // query string -> {sigmas} | {error} | {pending: true}
  const lastByNode = new Map(); // `${docKey}:${nodeId}` -> sigmas last shown

  function load(key, q) {
    cache.set(key, { pending: true });
    Promise.resolve().then(() => fetchSigmas(q)).then((res) => {
      const sigmas = Array.isArray(res?.sigmas) ? res.sigmas.map(Number).filter(Number.isFinite) : [];
      cache.set(key, sigmas.length ? { sigmas } : { error: 'no sigmas' });
      onLoad();
    }, (e) => {
      cache.set(key, { error: e?.message ?? String(e) });
      onLoad();
    });
  }

  /**
   * The curve to draw on `node` ({series, xMax, marker, range, label}) or null; starts loading it if needed.
   * `progress` is the node's run progress (0..1) or undefined.
   */
  function curveFor(doc, node, def, progress) {
    const q = sigmaQuery(node, def);
    if (!q) return null;
    const key = queryString(q);
    let entry = cache.get(key);
    if (!entry) { load(key, q); entry = cache.get(key); }
    const nodeKey = `${doc.key}:${node.id}`;
    let sigmas = entry.sigmas;
    if (sigmas) lastByNode.set(nodeKey, sigmas);
    else sigmas = lastByNode.get(nodeKey);
    if (!sigmas) return null;
    const steps = sigmas.length - 1;
    const start = widgetValue(node, def, 'start_at_step');
    const end = widgetValue(node, def, 'end_at_step');
    const range = Number.isFinite(start) && Number.isFinite(end) && (start > 0 || end < steps)
      ? [Math.max(0, Math.min(steps, start)), Math.max(0, Math.min(steps, end))] : null;
    return {
      series: [{ name: 'σ', points: sigmas.map((s, i) => [i, s]), color: '#cdffcd' }],
      xMax: Math.max(1, steps),
      marker: progress === undefined ? null : Math.round(progress * steps),
      range,
      label: `σ schedule  ·  ${q.scheduler}  ·  ${q.steps} steps${q.denoise !== '1' ? `  ·  denoise ${q.denoise}` : ''}`,
      span: `σ ${short(sigmas[0])} → ${short(sigmas[sigmas.length - 1])}`,
      pending: Boolean(entry.pending),
    };
  }

  return { curveFor, get size() { return cache.size; } };
}
