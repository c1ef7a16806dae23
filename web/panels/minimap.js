// The minimap in the canvas's corner (canvas/minimap.js draws it): a click or drag centres the view there.
import { centerViewOn, drawMinimap } from '../canvas/minimap.js';
import { h } from './dom.js';

const W = 220, H = 140;

/** @param host the canvas wrapper; getScene() -> {graph, vp, screen, exec, selection}; onMove() after a move */
export function createMinimap(host, { getScene, onMove }) {
  const canvas = h('canvas.minimap', { width: W, height: H, 'aria-label': 'Minimap' });
  host.append(canvas);
  const ctx = canvas.getContext('2d');
  let transform = null;
  let dragging = false;
  let visible = true;

  function draw() {
    if (!visible) return;
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== W * dpr) {
      canvas.width = W * dpr;
      canvas.height = H * dpr;
      canvas.style.width = `${W}px`;
      canvas.style.height = `${H}px`;
    }
    transform = drawMinimap(ctx, { ...getScene(), width: W, height: H, dpr });
  }

  function moveTo(e) {
    if (!transform) return;
    const r = canvas.getBoundingClientRect();
    const scene = getScene();
    centerViewOn(scene.vp, transform.toGraph([e.clientX - r.left, e.clientY - r.top]), ...scene.screen);
    onMove();
  }

  canvas.addEventListener('pointerdown', (e) => {
    e.stopPropagation();
    dragging = true;
    canvas.setPointerCapture(e.pointerId);
    moveTo(e);
  });
  canvas.addEventListener('pointermove', (e) => { if (dragging) moveTo(e); });
  canvas.addEventListener('pointerup', () => { dragging = false; });
  canvas.addEventListener('wheel', (e) => e.stopPropagation());

  return {
    draw,
    element: canvas,
    setVisible(v) {
      visible = v;
      canvas.hidden = !v;
      if (v) draw();
    },
    get visible() { return visible; },
  };
}
