// Full-size view of result images: previous / next (arrows), zoom (wheel, +/-, a click toggles 1:1 and fit,
// dragging pans a zoomed image), compare with the previous image (C: panels/compare.js), Escape closes.
import { createCompare } from './compare.js';
import { h } from './dom.js';

export function createLightbox(container) {
  let state = null;
  const img = h('img.lightbox-img', { alt: 'result image', draggable: 'false' });
  const frame = h('div.lightbox-frame', {}, img);
  const compare = createCompare();
  const caption = h('div.lightbox-caption');
  const zoomLabel = h('span.lightbox-zoom');
  const compareBtn = h('button.lightbox-compare', { title: 'Compare with the previous image (C)', text: 'Compare',
    onclick: (e) => { e.stopPropagation(); toggleCompare(); } });
  const prev = h('button.lightbox-nav.prev', { title: 'Previous', text: '‹', onclick: (e) => { e.stopPropagation(); step(-1); } });
  const next = h('button.lightbox-nav.next', { title: 'Next', text: '›', onclick: (e) => { e.stopPropagation(); step(1); } });
  const tools = h('div.lightbox-tools', { onclick: (e) => e.stopPropagation() }, zoomLabel, compareBtn);
  const root = h('div.lightbox', { hidden: true, onclick: () => close() }, frame, compare.element, prev, next, tools, caption);
  container.append(root);

  function applyZoom() {
    const { zoom, pan } = state;
    img.style.transform = zoom === 1 ? '' : `translate(${pan[0]}px, ${pan[1]}px) scale(${zoom})`;
    img.classList.toggle('zoomed', zoom !== 1);
    zoomLabel.textContent = `${Math.round(zoom * 100)} %`;
  }

  function setZoom(z) {
    if (!state) return;
    state.zoom = Math.max(1, Math.min(16, z));
    if (state.zoom === 1) state.pan = [0, 0];
    applyZoom();
  }

  function show() {
    const { urls, index } = state;
    img.src = urls[index];
    caption.textContent = urls.length > 1 ? `${index + 1} / ${urls.length}` : '';
    prev.hidden = next.hidden = urls.length < 2;
    compareBtn.hidden = urls.length < 2;
    frame.hidden = state.comparing;
    compare.element.hidden = !state.comparing;
    if (state.comparing) {
      const other = (index - 1 + urls.length) % urls.length;
      compare.show(urls[other], urls[index], { labelA: `${other + 1}`, labelB: `${index + 1}` });
    }
    setZoom(1);
  }
  function step(d) {
    if (!state) return;
    state.index = (state.index + d + state.urls.length) % state.urls.length;
    show();
  }
  function toggleCompare() {
    if (!state || state.urls.length < 2) return;
    state.comparing = !state.comparing;
    compareBtn.classList.toggle('active', state.comparing);
    show();
  }
  function close() {
    state = null;
    root.hidden = true;
  }

  img.addEventListener('click', (e) => {
    e.stopPropagation();
    if (state.dragged) return;
    setZoom(state.zoom === 1 ? Math.max(2, img.naturalWidth / img.clientWidth) : 1);
  });
  frame.addEventListener('wheel', (e) => {
    e.preventDefault();
    setZoom(state.zoom * Math.exp(-e.deltaY * 0.002));
  }, { passive: false });
  img.addEventListener('pointerdown', (e) => {
    state.drag = [e.clientX, e.clientY, ...state.pan];
    state.dragged = false;
    img.setPointerCapture(e.pointerId);
  });
  img.addEventListener('pointermove', (e) => {
    if (!state?.drag || state.zoom === 1) return;
    const [x, y, px, py] = state.drag;
    if (Math.hypot(e.clientX - x, e.clientY - y) > 3) state.dragged = true;
    state.pan = [px + e.clientX - x, py + e.clientY - y];
    applyZoom();
  });
  img.addEventListener('pointerup', () => { if (state) state.drag = null; });

  window.addEventListener('keydown', (e) => {
    if (!state) return;
    if (e.key === 'Escape') close();
    else if (e.key === 'ArrowLeft') step(-1);
    else if (e.key === 'ArrowRight') step(1);
    else if (e.key === '+' || e.key === '=') setZoom(state.zoom * 1.25);
    else if (e.key === '-') setZoom(state.zoom / 1.25);
    else if (e.key === 'c' || e.key === 'C') toggleCompare();
    else return;
    e.stopPropagation();
    e.preventDefault();
  }, true);

  return {
    open(urls, index = 0, { comparing = false } = {}) {
      if (!urls.length) return;
      state = { urls, index, zoom: 1, pan: [0, 0], comparing: comparing && urls.length > 1, drag: null, dragged: false };
      compareBtn.classList.toggle('active', state.comparing);
      root.hidden = false;
      show();
    },
    close,
    get isOpen() { return state !== null; },
    get zoom() { return state?.zoom ?? null; },
  };
}
