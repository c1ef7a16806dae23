// The canvas editor: sizes the canvas, builds the scene for the active tab, redraws on demand (at most once
// per animation frame) and hosts the pointer interaction.

import { attachInteraction } from '../canvas/interaction.js';
import { createFrame } from '../canvas/frame.js';
import { createRenderer } from '../canvas/view.js';
import { fitRect, toGraph, zoomAt } from '../canvas/viewport.js';
import { paletteOf } from '../canvas/theme.js';
import { WidgetKind } from '../graph/schema.js';
import { execView, subgraphPath } from '../subgraph/navigate.js';

/**
 * @param deps canvas, getDoc() -> active WorkflowDoc, getDefs(), settings() -> {linkStyle, snapToGrid, ...},
 *   imagesFor(doc, node) -> [HTMLImageElement], area (node_area.js: panels and curves below the widgets), editors,
 *   menus, hooks (see canvas/interaction.js), onChange(), afterDraw: [fn(editor)] run after each draw (the minimap)
 */
export function createEditor({ canvas, getDoc, getDefs, settings, imagesFor, area, editors, menus, hooks, onChange,
  afterDraw = [] }) {
  const ctx = canvas.getContext('2d');
  const render = createRenderer();
  let width = 0, height = 0, dpr = 1;
  let pending = false;
  let frameCache = null;
  let editing = null;
  let interaction = null;
  let lastStats = null;

  function resize() {
    const r = canvas.parentElement.getBoundingClientRect();
    dpr = window.devicePixelRatio || 1;
    width = Math.max(1, Math.floor(r.width));
    height = Math.max(1, Math.floor(r.height));
    canvas.width = Math.floor(width * dpr);
    canvas.height = Math.floor(height * dpr);
    canvas.style.width = `${width}px`;
    canvas.style.height = `${height}px`;
    drawNow();
  }

  function hasImages(doc, node) {
    const exec = execView(doc.exec, subgraphPath(doc));
    if (exec.outputs.has(node.id) || exec.previews.has(node.id) || area?.has(doc, node)) return true;
    return getDefs().get(node.type)?.widgets.some((w) => w.kind === WidgetKind.UPLOAD) ?? false;
  }

  function frame() {
    const doc = getDoc();
    if (!frameCache || frameCache.doc !== doc || frameCache.graph !== doc.graph) {
      frameCache = { doc, graph: doc.graph,
        frame: createFrame({ graph: doc.graph, defs: getDefs(), hasImages: (n) => hasImages(doc, n) }) };
    }
    return frameCache.frame;
  }

  function scene() {
    const doc = getDoc();
    return {
      graph: doc.graph, defs: getDefs(), vp: doc.vp, width, height, dpr, frame: frame(),
      selection: doc.selection, selectedGroups: doc.selectedGroups, selectedReroutes: doc.selectedReroutes,
      exec: execView(doc.exec, subgraphPath(doc)), // "12:5" shows on instance 12 (on node 5 inside it)
      settings: settings(), theme: paletteOf(settings().palette), imagesFor: (node) => imagesFor(doc, node),
      area: area && { panel: (n) => area.panelFor(doc, n), curve: (n) => area.curveFor(doc, n),
        highlight: (n) => area.highlightFor(doc, n) },
      drag: interaction?.overlay() ?? null, editing,
    };
  }

  /** Draws synchronously; returns {nodes, links, detail} drawn. */
  function drawNow() {
    pending = false;
    frameCache = null;
    if (!getDoc()) return null;
    lastStats = render(ctx, scene());
    for (const fn of afterDraw) fn(editor);
    return lastStats;
  }

  function redraw() {
    frameCache = null;
    if (pending) return;
    pending = true;
    requestAnimationFrame(drawNow);
  }

  const editor = {
    canvas,
    pointer: null,
    editors,
    menus,
    doc: getDoc,
    scene,
    redraw,
    drawNow,
    settings,
    get size() { return [width, height]; },
    get stats() { return lastStats; },
    changed() { onChange?.(); },
    setEditing(x) { editing = x; redraw(); },
    closeEditors() { editors.close(); },

    /** Graph point at the centre of the view (where pasted or added nodes go without a pointer). */
    center() {
      return toGraph(getDoc().vp, [width / 2, height / 2]);
    },

    /** Fits the view to the given nodes (all when empty). */
    fit(nodes) {
      const doc = getDoc();
      const list = nodes?.length ? nodes : [...doc.graph.nodes.values()];
      const rect = doc.graph.boundsOf(list);
      if (rect) fitRect(doc.vp, rect, width, height);
      redraw();
    },

    zoom(factor) {
      zoomAt(getDoc().vp, factor, [width / 2, height / 2]);
      redraw();
    },

    centerOn(node) {
      const doc = getDoc();
      doc.vp.offset[0] = width / (2 * doc.vp.scale) - node.pos[0] - node.size[0] / 2;
      doc.vp.offset[1] = height / (2 * doc.vp.scale) - node.pos[1] - node.size[1] / 2;
      redraw();
    },
  };

  canvas.addEventListener('pointermove', (e) => {
    const r = canvas.getBoundingClientRect();
    editor.pointer = toGraph(getDoc().vp, [e.clientX - r.left, e.clientY - r.top]);
  });
  canvas.addEventListener('pointerleave', () => { editor.pointer = null; });

  interaction = attachInteraction(canvas, editor, hooks);
  new ResizeObserver(resize).observe(canvas.parentElement);
  resize();
  return editor;
}
