// What a node shows in its area below the widgets, besides plain images: the inspection panels of its last run
// (doc.exec.panels, see inspect.js) and the sigma curve of sampler nodes; which nodes have such an area, how much
// room it needs (the node grows for it), the pointer gestures on it (scrubbing a slider, a toggle) and the part
// the guided tour highlights. Drawing is canvas/inspector.js's.

import { getWidgetValue, setWidgetValue, WidgetKind } from '../graph/schema.js';
import { describePanel, frameIndexAtFraction, frameIndexForStep, PanelKind, panelRefs, setPanelIndex } from './inspect.js';
import { growToFit, OUTPUT_IMAGE_H } from './node_room.js';
import { createSigmaCurves, hasScheduleWidgets } from './sigma_curves.js';
import { curveLayout, highlightRect, PANEL, panelHeight, panelLayout } from '../canvas/inspector.js';

const inRect = (p, [x, y, w, h], slack = 0) => p[0] >= x - slack && p[0] <= x + w + slack && p[1] >= y - slack
  && p[1] <= y + h + slack;

/**
 * @param deps getDefs(), viewUrl(ref) -> url, image(url) -> HTMLImageElement (cached), fetchSigmas(query) ->
 *   Promise<{sigmas}>, redraw(), commit() (an edit of the graph is complete: one undo step)
 */
export function createNodeArea({ getDefs, viewUrl, image, fetchSigmas, redraw = () => {}, commit = () => {} }) {
  const curves = createSigmaCurves({ fetchSigmas, onLoad: redraw });
  const samplerTypes = new WeakMap(); // def -> has a curve
  const checked = new Set(); // `${doc.key}:${node.id}` grown (or found big enough) for its curve once
  let highlight = null; // {docKey, nodeId, target}

  const panelOf = (doc, node) => doc.exec.panels?.get(node.id) ?? null;

  /** NoiseToTimestep: the level the slider is released at becomes the node's `step` (what a run passes on). */
  function setStepWidget(node, step) {
    const w = getDefs().get(node.type)?.widgets.find((x) => x.name === 'step' && x.kind === WidgetKind.INT);
    if (!w || node.inputs.some((i) => i.widget?.name === 'step' && i.link !== null)) return;
    if (getWidgetValue(node, w) === step) return;
    setWidgetValue(node, w, step);
    commit();
  }

  function isSampler(def) {
    if (!def) return false;
    let v = samplerTypes.get(def);
    if (v === undefined) samplerTypes.set(def, (v = hasScheduleWidgets(def)));
    return v;
  }

  /** The panel's description with its images attached; a view whose image is still loading keeps showing the
   * image it showed last, so that scrubbing never flashes an empty frame. */
  function specOf(panel) {
    const spec = describePanel(panel, (ref) => image(viewUrl(ref)));
    if (!spec) return null;
    panel.shown ??= {};
    for (const v of [...spec.views, ...(spec.row2?.views ?? [])]) {
      if (v.img?.naturalWidth) panel.shown[v.key] = v.img;
      else if (v.ref && panel.shown[v.key]) { v.img = panel.shown[v.key]; v.stale = true; }
    }
    return spec;
  }

  /** [width, height] the node's area needs for what it shows now. */
  function need(doc, node) {
    const panel = panelOf(doc, node);
    if (panel) {
      const spec = describePanel(panel);
      const w = Math.max(node.size[0], spec.minWidth);
      return [w, panelHeight(spec, w - 12)];
    }
    const curve = isSampler(getDefs().get(node.type)) ? PANEL.CURVE_H : 0;
    const images = doc.exec.outputs.has(node.id) || doc.exec.previews.has(node.id);
    return images ? [OUTPUT_IMAGE_H, OUTPUT_IMAGE_H + curve] : [0, curve];
  }

  function fit(doc, nodeId) {
    const node = doc.graph.getNode(nodeId);
    return node ? growToFit(doc, node, need(doc, node)) : false;
  }

  return {
    /** Whether the layout gives the node an area (besides images and uploads). */
    has: (doc, node) => (doc.exec.panels?.has(node.id) ?? false) || isSampler(getDefs().get(node.type)),

    panelFor(doc, node) {
      const panel = panelOf(doc, node);
      return panel ? specOf(panel) : null;
    },

    curveFor(doc, node) {
      const def = getDefs().get(node.type);
      if (!isSampler(def)) return null;
      const running = doc.exec.running === node.id ? doc.exec.progress.get(node.id) : undefined;
      const curve = curves.curveFor(doc, node, def, running);
      const key = `${doc.key}:${node.id}`;
      if (curve && !checked.has(key)) {
        checked.add(key);
        queueMicrotask(() => { if (doc.graph.getNode(node.id) === node && fit(doc, node.id)) redraw(); });
      }
      return curve;
    },

    /** The part of this node the tour points at, or null. */
    highlightFor(doc, node) {
      return highlight && highlight.docKey === doc.key && highlight.nodeId === node.id ? highlight.target ?? 'node' : null;
    },
    setHighlight(h) { highlight = h; redraw(); },
    get highlight() { return highlight; },

    /** Execution events (the tracker's onChange): a node with new results grows to show them; their frames load. */
    onExecution(kind, detail) {
      if ((kind !== 'output' && kind !== 'preview') || !detail?.doc) return;
      const panel = detail.doc.exec.panels?.get(detail.nodeId);
      if (kind === 'output' && panel) for (const ref of panelRefs(panel)) image(viewUrl(ref));
      fit(detail.doc, detail.nodeId);
    },

    /** Moves a panel's slider: to a frame index, or 'first' / 'middle' / 'last'. */
    setIndex(doc, nodeId, where) {
      const panel = doc.exec.panels?.get(nodeId);
      if (!panel?.frames) return false;
      const n = panel.frames.length;
      const named = { first: 0, last: n - 1, middle: Math.floor((n - 1) / 2),
        selected: panel.selected === undefined ? undefined : frameIndexForStep(panel.frames, panel.selected) };
      const i = typeof where === 'number' ? where : named[where];
      if (i === undefined) return false;
      const moved = setPanelIndex(panel, i);
      if (moved) redraw();
      return moved;
    },

    /**
     * A pointer gesture starting at graph point `p` in the node's area `area` {x, y, w, h}: scrubbing (on the slider
     * or the plot above it) or the row toggle. Returns {move(dx, e, p), up(moved)} or null (the node is dragged).
     */
    gesture(doc, node, area, p) {
      const panel = panelOf(doc, node);
      if (!panel) return null;
      const spec = describePanel(panel);
      const L = panelLayout(spec, area);
      if (L.toggle && inRect(p, L.toggle, 2)) {
        return { move() {}, up() { panel.row2 = panel.row2 === 'eps' ? 'x0' : 'eps'; redraw(); } };
      }
      const onSlider = L.slider && inRect(p, L.slider, 6);
      const onPlot = L.plot && inRect(p, L.plot);
      if (!panel.frames || !(onSlider || onPlot)) return null;
      const track = L.slider ?? L.plot;
      const scrub = (q) => {
        const i = frameIndexAtFraction(panel.frames, panel.xMax, (q[0] - track[0]) / track[2]);
        if (setPanelIndex(panel, i)) redraw();
      };
      scrub(p);
      return {
        move(dx, e, q) { if (q) scrub(q); },
        up() { if (panel.kind === PanelKind.NOISING) setStepWidget(node, panel.frames[panel.index].step); },
      };
    },

    /** The rectangle of a part of the node's area (as the tour rings it), or null. */
    partRect(doc, node, areaRect, target) {
      const panel = panelOf(doc, node);
      if (panel) {
        const spec = describePanel(panel);
        return highlightRect(panelLayout(spec, areaRect), spec, target);
      }
      if (target !== 'curve' || !isSampler(getDefs().get(node.type))) return null;
      const c = curveLayout(areaRect);
      return [c.label[0], c.label[1], c.label[2], PANEL.CURVE_H];
    },

    /** URLs of the images the node's panel shows now (the lightbox on a double-click), or null. */
    imageUrls(doc, node) {
      const spec = panelOf(doc, node) && describePanel(panelOf(doc, node));
      if (!spec) return null;
      const urls = [...spec.views, ...(spec.row2?.views ?? [])].filter((v) => v.ref).map((v) => viewUrl(v.ref));
      return urls.length ? urls : null; // a plot: the node's own output images (the chart), if any
    },

    /** What the panel shows, for tests: {index, step, views: {key: src}, layout} given the node's area. */
    shown(doc, node, area) {
      const panel = panelOf(doc, node);
      if (!panel) return null;
      const spec = specOf(panel);
      const views = {};
      for (const v of [...spec.views, ...(spec.row2?.views ?? [])]) views[v.key] = v.img?.src ?? null;
      return { kind: panel.kind, index: panel.index ?? null, step: panel.frames?.[panel.index]?.step ?? null, views,
        layout: panelLayout(spec, area), spec };
    },
  };
}
