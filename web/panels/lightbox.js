// Full-size view of result images, with previous / next and Escape.
import { h } from './dom.js';

export function createLightbox(container) {
  let state = null;
  const img = h('img.lightbox-img', { alt: 'result image' });
  const caption = h('div.lightbox-caption');
  const prev = h('button.lightbox-nav.prev', { title: 'Previous', text: '‹', onclick: (e) => { e.stopPropagation(); step(-1); } });
  const next = h('button.lightbox-nav.next', { title: 'Next', text: '›', onclick: (e) => { e.stopPropagation(); step(1); } });
  const root = h('div.lightbox', { hidden: true, onclick: () => close() }, img, prev, next, caption);
  container.append(root);

  function show() {
    const { urls, index } = state;
    img.src = urls[index];
    caption.textContent = urls.length > 1 ? `${index + 1} / ${urls.length}` : '';
    prev.hidden = next.hidden = urls.length < 2;
  }
  function step(d) {
    if (!state) return;
    state.index = (state.index + d + state.urls.length) % state.urls.length;
    show();
  }
  function close() {
    state = null;
    root.hidden = true;
  }
  window.addEventListener('keydown', (e) => {
    if (!state) return;
    if (e.key === 'Escape') close();
    else if (e.key === 'ArrowLeft') step(-1);
    else if (e.key === 'ArrowRight') step(1);
    else return;
    e.stopPropagation();
    e.preventDefault();
  }, true);

  return {
    open(urls, index = 0) {
      if (!urls.length) return;
      state = { urls, index };
      root.hidden = false;
      show();
    },
    close,
    get isOpen() { return state !== null; },
  };
}
