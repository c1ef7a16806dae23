// Link geometry: the path a link takes through its reroute points, in one of the link styles, and points
// along it (for the midpoint marker and hit-testing).

export const LinkStyle = Object.freeze({ SPLINE: 'spline', LINEAR: 'linear', STRAIGHT: 'straight', HIDDEN: 'hidden',
  LINEAR_PLAIN: 'line' });

/** Control points of one bezier segment from a (leaving rightwards) to b (arriving from the left). */
export function bezier(a, b) {
  const d = Math.max(Math.hypot(b[0] - a[0], b[1] - a[1]) * 0.25, 20);
  return [a, [a[0] + d, a[1]], [b[0] - d, b[1]], b];
}

export function bezierPoint([p0, p1, p2, p3], t) {
  const u = 1 - t;
  const a = u * u * u, b = 3 * u * u * t, c = 3 * u * t * t, d = t * t * t;
  return [a * p0[0] + b * p1[0] + c * p2[0] + d * p3[0], a * p0[1] + b * p1[1] + c * p2[1] + d * p3[1]];
}

/** Adds a path from a to b to a canvas path (ctx or Path2D), in the given style. */
export function tracePath(path, a, b, style) {
  path.moveTo(a[0], a[1]);
  if (style === LinkStyle.LINEAR_PLAIN) {
    path.lineTo(b[0], b[1]);
  } else if (style === LinkStyle.LINEAR) {
    path.lineTo(a[0] + 15, a[1]);
    path.lineTo(b[0] - 15, b[1]);
    path.lineTo(b[0], b[1]);
  } else if (style === LinkStyle.STRAIGHT) {
    const mx = (a[0] + b[0]) / 2;
    path.lineTo(mx, a[1]);
    path.lineTo(mx, b[1]);
    path.lineTo(b[0], b[1]);
  } else {
    const [, c1, c2] = bezier(a, b);
    path.bezierCurveTo(c1[0], c1[1], c2[0], c2[1], b[0], b[1]);
  }
}

/** The middle point of a segment, in the given style. */
export function segmentMidpoint(a, b, style) {
  if (style === LinkStyle.SPLINE) return bezierPoint(bezier(a, b), 0.5);
  return [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2];
}

/** Bounding box [x, y, w, h] of a segment with its curve bulge. */
export function segmentBounds(a, b) {
  const d = Math.max(Math.hypot(b[0] - a[0], b[1] - a[1]) * 0.25, 20);
  const x0 = Math.min(a[0], b[0] - d), x1 = Math.max(a[0] + d, b[0]);
  const y0 = Math.min(a[1], b[1]), y1 = Math.max(a[1], b[1]);
  return [x0, y0, x1 - x0, y1 - y0];
}

/** Distance from p to the segment (sampled along the curve). */
export function distanceToSegment(p, a, b, style, samples = 16) {
  let best = Infinity;
  let prev = a;
  const curve = bezier(a, b);
  for (let i = 1; i <= samples; i++) {
    const t = i / samples;
    const q = style === LinkStyle.SPLINE ? bezierPoint(curve, t) : [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t];
    best = Math.min(best, pointToLine(p, prev, q));
    prev = q;
  }
  return best;
}

function pointToLine(p, a, b) {
  const dx = b[0] - a[0], dy = b[1] - a[1];
  const len2 = dx * dx + dy * dy;
  const t = len2 ? Math.max(0, Math.min(1, ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / len2)) : 0;
  return Math.hypot(p[0] - (a[0] + t * dx), p[1] - (a[1] + t * dy));
}
