// Mask painting on a width x height array of 0..255 (255 = masked: repainted by inpainting), as ComfyUI's mask
// editor stores it: in the image's alpha, masked = transparent (alpha = 255 - mask). Pure, for panels/mask_editor.js.

export function createMask(width, height) {
  return { width, height, data: new Uint8ClampedArray(width * height) };
}

/** The mask an RGBA image's alpha carries (transparent = masked). */
export function maskFromAlpha(rgba, width, height) {
  const m = createMask(width, height);
  for (let i = 0; i < m.data.length; i++) m.data[i] = 255 - rgba[i * 4 + 3];
  return m;
}

/** The image with the mask in its alpha: what /upload/mask composes onto the original. */
export function alphaFromMask(mask, rgba) {
  const out = new Uint8ClampedArray(rgba);
  for (let i = 0; i < mask.data.length; i++) out[i * 4 + 3] = 255 - mask.data[i];
  return out;
}

/**
 * Stamps a round brush at (x, y) in mask pixels: `radius`, `hardness` 0..1 (1 = a hard edge; lower feathers the
 * edge over the outer part of the radius), `erase` clears instead of painting.
 */
export function stamp(mask, x, y, { radius, hardness = 1, erase = false }) {
  const { width, height, data } = mask;
  const inner = radius * Math.max(0, Math.min(1, hardness));
  for (let py = Math.max(0, Math.floor(y - radius)); py <= Math.min(height - 1, Math.ceil(y + radius)); py++) {
    for (let px = Math.max(0, Math.floor(x - radius)); px <= Math.min(width - 1, Math.ceil(x + radius)); px++) {
      const d = Math.hypot(px + 0.5 - x, py + 0.5 - y);
      if (d > radius) continue;
      const a = d <= inner ? 1 : 1 - (d - inner) / Math.max(1e-6, radius - inner);
      const i = py * width + px;
      const v = Math.round(255 * a);
      data[i] = erase ? Math.min(data[i], 255 - v) : Math.max(data[i], v);
    }
  }
}

/** A stroke from a to b: stamps every half radius. */
export function stroke(mask, a, b, brush) {
  const steps = Math.max(1, Math.ceil(Math.hypot(b[0] - a[0], b[1] - a[1]) / Math.max(0.5, brush.radius / 2)));
  for (let s = 0; s <= steps; s++) {
    stamp(mask, a[0] + ((b[0] - a[0]) * s) / steps, a[1] + ((b[1] - a[1]) * s) / steps, brush);
  }
}

export function invert(mask) {
  for (let i = 0; i < mask.data.length; i++) mask.data[i] = 255 - mask.data[i];
}

/** Softens the mask's edges: a box blur of `radius` pixels (two passes, separable). */
export function feather(mask, radius) {
  const r = Math.round(radius);
  if (r < 1) return;
  const { width, height } = mask;
  const pass = (src, horizontal) => {
    const out = new Uint8ClampedArray(src.length);
    const [n, m] = horizontal ? [width, height] : [height, width];
    for (let j = 0; j < m; j++) {
      for (let i = 0; i < n; i++) {
        let sum = 0, count = 0;
        for (let k = Math.max(0, i - r); k <= Math.min(n - 1, i + r); k++) {
          sum += src[horizontal ? j * width + k : k * width + j];
          count++;
        }
        out[horizontal ? j * width + i : i * width + j] = Math.round(sum / count);
      }
    }
    return out;
  };
  mask.data = pass(pass(mask.data, true), false);
}

/** The share of pixels with a mask value of at least 128. */
export function coverage(mask) {
  let n = 0;
  for (const v of mask.data) if (v >= 128) n++;
  return n / mask.data.length;
}
