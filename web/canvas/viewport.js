// The view transform, in ComfyUI's convention (extra.ds): screen = (graph + offset) * scale.

export const MIN_SCALE = 0.02;
export const MAX_SCALE = 10;

export function makeViewport(ds) {
  return { scale: ds?.scale ?? 1, offset: [ds?.offset?.[0] ?? 0, ds?.offset?.[1] ?? 0] };
}

export function toScreen(vp, [x, y]) {
  return [(x + vp.offset[0]) * vp.scale, (y + vp.offset[1]) * vp.scale];
}

export function toGraph(vp, [sx, sy]) {
  return [sx / vp.scale - vp.offset[0], sy / vp.scale - vp.offset[1]];
}

/** Zooms by `factor` keeping the graph point under the screen point `at` where it is. */
export function zoomAt(vp, factor, at) {
  const before = toGraph(vp, at);
  vp.scale = Math.min(MAX_SCALE, Math.max(MIN_SCALE, vp.scale * factor));
  const after = toGraph(vp, at);
  vp.offset[0] += after[0] - before[0];
  vp.offset[1] += after[1] - before[1];
}

export function panBy(vp, dxScreen, dyScreen) {
  vp.offset[0] += dxScreen / vp.scale;
  vp.offset[1] += dyScreen / vp.scale;
}

/** The graph-space rectangle [x, y, w, h] the screen shows. */
export function visibleRect(vp, width, height) {
  return [-vp.offset[0], -vp.offset[1], width / vp.scale, height / vp.scale];
}

/** Scale and offset that fit `rect` ([x,y,w,h] in graph space) into the screen with a margin. */
export function fitRect(vp, rect, width, height, margin = 40) {
  const [x, y, w, h] = rect;
  const scale = Math.min(MAX_SCALE, Math.max(MIN_SCALE,
    Math.min((width - 2 * margin) / Math.max(w, 1), (height - 2 * margin) / Math.max(h, 1), 1)));
  vp.scale = scale;
  vp.offset[0] = (width / scale - w) / 2 - x;
  vp.offset[1] = (height / scale - h) / 2 - y;
}

export function rectsOverlap(a, b) {
  return a[0] < b[0] + b[2] && b[0] < a[0] + a[2] && a[1] < b[1] + b[3] && b[1] < a[1] + a[3];
}
