// Defaults a model suggests for new nodes: its native size (safetensors metadata: modelspec.resolution, or the
// training config Chisel's built-in model carries) and its recommended sampler settings (its card's
// "Recommended:" line), instead of ComfyUI's 512x512 / cfg 8 that suit SD1 but not every model.

/** {width, height, steps, cfg, sampler_name, scheduler} (each only when known) from metadata and card text. */
export function suggestDefaults(metadata = null, card = null) {
  const out = {};
  const res = metadata?.['modelspec.resolution'] ?? metadata?.ss_resolution;
  const m = typeof res === 'string' && res.match(/(\d+)\s*[x×,]\s*(\d+)/);
  if (m) [out.width, out.height] = [Number(m[1]), Number(m[2])];
  if (out.width === undefined && metadata?.['chisel.training']) {
    try {
      const size = JSON.parse(metadata['chisel.training'])?.config?.arch?.image_size;
      if (Number.isFinite(size)) out.width = out.height = size;
    } catch {
      // not JSON: no size from it
    }
  }
  const line = card?.match(/Recommended:([^\n]*(?:\n(?!\s*\n)[^\n]*)*)/)?.[1]?.replace(/\*\*/g, '');
  if (line) {
    const sampler = line.match(/([a-z0-9_+]+)\s*\/\s*([a-z0-9_]+)/i);
    if (sampler) [out.sampler_name, out.scheduler] = [sampler[1], sampler[2]];
    const steps = line.match(/(\d+)\s*steps/i);
    if (steps) out.steps = Number(steps[1]);
    const cfg = line.match(/CFG\s*([\d.]+)/i);
    if (cfg) out.cfg = Number(cfg[1]);
    const size = line.match(/(\d+)\s*x\s*(\d+)/);
    if (size && out.width === undefined) [out.width, out.height] = [Number(size[1]), Number(size[2])];
  }
  return out;
}

const SIZE = new Set(['width', 'height']);
const SAMPLING = new Set(['steps', 'cfg', 'sampler_name', 'scheduler']);

/** Sets a new node's widgets to the suggestions: sizes on latent nodes, settings on sampling nodes, each only
 * where the value is allowed (in range, among the choices). Returns the names it set. */
export function applyDefaults(node, def, suggested) {
  if (!def || !suggested) return [];
  const latent = /^latent/i.test(def.category), sampling = /^sampling/i.test(def.category);
  const set = [];
  for (const w of def.widgets) {
    if (!(w.name in suggested) || !((SIZE.has(w.name) && latent) || (SAMPLING.has(w.name) && sampling))) continue;
    const v = suggested[w.name];
    if (w.choices && !w.choices.includes(v)) continue;
    if (w.options?.min !== undefined && v < w.options.min) continue;
    if (w.options?.max !== undefined && v > w.options.max) continue;
    node.widgets_values[w.valueIndex] = v;
    set.push(w.name);
  }
  return set;
}
