// The mask editor (LoadImage's "Edit mask"): paint over the image with a brush or eraser of a chosen size and
// hardness, invert, feather the edges, clear; Save gives the image with the mask in its alpha (masked =
// transparent, as ComfyUI's editor stores it), which the caller uploads through /upload/mask.
import { alphaFromMask, createMask, feather, invert, maskFromAlpha, stroke } from '../app/mask.js';
import { h } from './dom.js';

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error('the image cannot be loaded'));
    img.src = url;
  });
}

export function createMaskEditor(container) {
  let session = null;

  /** Opens the editor on the image at `url`; resolves to a PNG Blob (image + mask in alpha) or null. */
  async function open(url) {
    if (session) close(null);
    const img = await loadImage(url);
    const { naturalWidth: width, naturalHeight: height } = img;
    const pixels = h('canvas', { width, height });
    const pctx = pixels.getContext('2d');
    pctx.drawImage(img, 0, 0);
    const rgba = pctx.getImageData(0, 0, width, height);
    const mask = maskFromAlpha(rgba.data, width, height);
    const base = h('canvas.mask-base', { width, height });
    const baseCtx = base.getContext('2d');
    const opaque = new ImageData(new Uint8ClampedArray(rgba.data), width, height);
    for (let i = 3; i < opaque.data.length; i += 4) opaque.data[i] = 255;
    baseCtx.putImageData(opaque, 0, 0);
    const overlay = h('canvas.mask-overlay', { width, height });
    const octx = overlay.getContext('2d');
    const view = new ImageData(width, height);

    const state = { erase: false, size: 24, hardness: 0.8, last: null, pending: false };
    const drawMask = () => {
      state.pending = false;
      for (let i = 0; i < mask.data.length; i++) {
        view.data[i * 4] = 255;
        view.data[i * 4 + 1] = 40;
        view.data[i * 4 + 2] = 120;
        view.data[i * 4 + 3] = mask.data[i] * 0.6;
      }
      octx.putImageData(view, 0, 0);
    };
    const redraw = () => {
      if (state.pending) return;
      state.pending = true;
      requestAnimationFrame(drawMask);
    };
    const toMask = (e) => {
      const r = overlay.getBoundingClientRect();
      return [((e.clientX - r.left) * width) / r.width, ((e.clientY - r.top) * height) / r.height];
    };
    const brush = () => {
      const r = overlay.getBoundingClientRect();
      return { radius: Math.max(0.5, (state.size / 2) * (width / r.width)), hardness: state.hardness, erase: state.erase };
    };
    overlay.addEventListener('pointerdown', (e) => {
      overlay.setPointerCapture(e.pointerId);
      state.last = toMask(e);
      stroke(mask, state.last, state.last, brush());
      redraw();
    });
    overlay.addEventListener('pointermove', (e) => {
      if (!state.last) return;
      const p = toMask(e);
      stroke(mask, state.last, p, brush());
      state.last = p;
      redraw();
    });
    const end = () => { state.last = null; };
    overlay.addEventListener('pointerup', end);
    overlay.addEventListener('pointercancel', end);

    const tool = (label, erase) => h('button.mask-tool', { dataset: { tool: erase ? 'eraser' : 'brush' },
      onclick: () => { state.erase = erase; syncTools(); } }, label);
    const brushBtn = tool('Brush', false);
    const eraserBtn = tool('Eraser', true);
    const syncTools = () => {
      brushBtn.classList.toggle('active', !state.erase);
      eraserBtn.classList.toggle('active', state.erase);
    };
    const slider = (name, min, max, step, value, set) => h('label.mask-slider', {}, name,
      h('input', { type: 'range', min, max, step, value, dataset: { setting: name.toLowerCase() },
        oninput: (e) => set(Number(e.target.value)) }));
    const featherInput = h('input.mask-feather-px', { type: 'number', min: 1, max: 64, value: 4, title: 'Feather radius (px)' });
    const bar = h('div.mask-toolbar', {},
      brushBtn, eraserBtn,
      slider('Size', 1, 200, 1, state.size, (v) => { state.size = v; }),
      slider('Hardness', 0, 1, 0.05, state.hardness, (v) => { state.hardness = v; }),
      h('button', { dataset: { action: 'invert' }, onclick: () => { invert(mask); redraw(); } }, 'Invert'),
      h('span.mask-feather', {}, h('button', { dataset: { action: 'feather' },
        onclick: () => { feather(mask, Number(featherInput.value) || 4); redraw(); } }, 'Feather'), featherInput),
      h('button', { dataset: { action: 'clear' }, onclick: () => { mask.data.fill(0); redraw(); } }, 'Clear'),
      h('span.mask-spacer'),
      h('button', { dataset: { action: 'cancel' }, onclick: () => close(null) }, 'Cancel'),
      h('button.primary', { dataset: { action: 'save' }, onclick: save }, 'Save'));
    const stage = h('div.mask-stage', {}, base, overlay);
    const fit = Math.min((window.innerWidth * 0.8) / width, (window.innerHeight * 0.7) / height);
    for (const c of [base, overlay]) {
      c.style.width = `${Math.round(width * fit)}px`;
      c.style.height = `${Math.round(height * fit)}px`;
    }
    stage.style.width = base.style.width;
    stage.style.height = base.style.height;
    const root = h('div.mask-editor.modal-backdrop', { role: 'dialog', 'aria-label': 'Mask editor' },
      h('div.mask-window', {}, h('div.mask-title', { text: 'Mask editor: paint where the image should change' }),
        bar, stage));
    container.append(root);
    syncTools();
    drawMask();

    async function save() {
      const out = new ImageData(alphaFromMask(mask, rgba.data), width, height);
      pctx.putImageData(out, 0, 0);
      const blob = await new Promise((resolve) => pixels.toBlob(resolve, 'image/png'));
      close(blob);
    }

    return new Promise((resolve) => {
      session = { root, resolve, mask };
    });
  }

  function close(result) {
    if (!session) return;
    const { root, resolve } = session;
    session = null;
    root.remove();
    resolve(result);
  }

  window.addEventListener('keydown', (e) => {
    if (session && e.key === 'Escape') {
      e.stopPropagation();
      close(null);
    }
  }, true);

  return { open, close: () => close(null), get isOpen() { return session !== null; },
    get mask() { return session?.mask ?? null; } };
}
