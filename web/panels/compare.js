// An image compare overlay: two images stacked, a slider reveals the second over the first (dragging anywhere
// on the images moves the split).
import { h } from './dom.js';

export function createCompare() {
  const under = h('img.cmp-img.cmp-a', { alt: 'image A', draggable: 'false' });
  const over = h('img.cmp-img.cmp-b', { alt: 'image B', draggable: 'false' });
  const line = h('div.cmp-line');
  const slider = h('input.cmp-slider', { type: 'range', min: 0, max: 100, value: 50, step: 0.5, 'aria-label': 'Split' });
  const labels = h('div.cmp-labels', {}, h('span.cmp-la'), h('span.cmp-lb'));
  const stage = h('div.cmp-stage', {}, under, over, line);
  const root = h('div.compare', { onclick: (e) => e.stopPropagation() }, stage, slider, labels);

  function setSplit(pct) {
    const p = Math.max(0, Math.min(100, pct));
    slider.value = String(p);
    over.style.clipPath = `inset(0 0 0 ${p}%)`;
    line.style.left = `${p}%`;
  }
  slider.addEventListener('input', () => setSplit(Number(slider.value)));
  let dragging = false;
  const fromPointer = (e) => {
    const r = stage.getBoundingClientRect();
    setSplit(((e.clientX - r.left) / r.width) * 100);
  };
  stage.addEventListener('pointerdown', (e) => { dragging = true; stage.setPointerCapture(e.pointerId); fromPointer(e); });
  stage.addEventListener('pointermove', (e) => { if (dragging) fromPointer(e); });
  stage.addEventListener('pointerup', () => { dragging = false; });

  return {
    element: root,
    /** Shows `a` under `b`, split at 50 %. */
    show(a, b, { labelA = 'A', labelB = 'B' } = {}) {
      under.src = a;
      over.src = b;
      labels.children[0].textContent = labelA;
      labels.children[1].textContent = labelB;
      setSplit(50);
    },
    setSplit,
    get split() { return Number(slider.value); },
  };
}
