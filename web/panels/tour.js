// The guided tour panel: a card over the canvas listing the tour's steps (app/tour.js), the current one's text,
// and Back / Next. Each step rings the node and the part of its panel it talks about, moves the panel's slider
// where the step needs it and pans the view to show it. Opens by itself with a learn-* workflow, or from the menu.
import { buildTour, createTour, isLearnWorkflow } from '../app/tour.js';
import { areaRect } from '../canvas/inspector.js';
import { h } from './dom.js';

const MIN_SCALE = 0.8; // panels are drawn from 60% zoom; the tour shows them a little larger

/**
 * @param deps workspace, area (app/node_area.js), editor, run() (queues the active workflow),
 *   openTemplate(name)
 */
export function createTourPanel(container, { workspace, area, editor, run, openTemplate }) {
  let tour = null;
  let docKey = null;
  const list = h('ol.tour-steps');
  const count = h('span.tour-count');
  const title = h('h3.tour-step-title');
  const body = h('p.tour-text');
  const hint = h('div.tour-hint', { hidden: true });
  const back = h('button.tour-back', { text: 'Back', onclick: () => { if (tour?.back()) show(); } });
  const next = h('button.tour-next.primary', { text: 'Next', onclick: () => {
    if (tour?.isLast) close();
    else if (tour?.next(hasResult)) show();
  } });
  const runBtn = h('button.tour-run', { text: 'Run', hidden: true, onclick: () => run() });
  const openBtn = h('button.tour-open.primary', { text: 'Open learn-timeline', hidden: true, onclick: () => {
    const name = tour?.step?.openTemplate;
    if (name) openTemplate(name);
  } });
  const root = h('div.tour', { hidden: true, role: 'dialog', 'aria-label': 'Guided tour' },
    h('div.tour-head', {}, h('span.tour-label', { text: 'Guided tour' }), count,
      h('button.tour-close', { title: 'Close the tour', text: '×', onclick: () => close() })),
    list, h('div.tour-body', {}, title, body, hint),
    h('div.tour-actions', {}, back, h('span.tour-spacer'), runBtn, openBtn, next));
  container.append(root);

  const doc = () => workspace.docs.find((d) => d.key === docKey) ?? null;
  const hasResult = (nodeId) => {
    const d = doc();
    return Boolean(d && (d.exec.panels.has(nodeId) || d.exec.outputs.has(nodeId)));
  };

  /** Pans so that the ringed part is on screen (the whole panel when it fits), zooming in first when the canvas
   * is too far out to draw panels. */
  function reveal(d, node, target) {
    const frame = editor.scene().frame;
    const rect = areaRect(frame, node);
    const part = target && rect ? area.partRect(d, node, rect, target) : null;
    const [w, hgt] = editor.size;
    const margin = 20;
    const room = [w - root.offsetWidth - 3 * margin, hgt - 2 * margin];
    if (part && d.vp.scale < MIN_SCALE) d.vp.scale = MIN_SCALE;
    const { scale, offset } = d.vp;
    const whole = part ? [rect.x, rect.y, rect.w, rect.h] : frame.nodeRect(node);
    const r = part && (whole[2] * scale > room[0] || whole[3] * scale > room[1]) ? part : whole;
    const sx = (r[0] + offset[0]) * scale, sy = (r[1] + offset[1]) * scale;
    if (sx >= margin && sy >= margin && sx + r[2] * scale <= margin + room[0] && sy + r[3] * scale <= margin + room[1]) return;
    offset[0] = (margin + room[0] / 2) / scale - r[0] - r[2] / 2;
    offset[1] = (margin + room[1] / 2) / scale - r[1] - Math.min(r[3], room[1] / scale) / 2;
  }

  function apply() {
    const d = doc();
    const s = tour?.step;
    const node = s?.nodeId !== null && s?.nodeId !== undefined ? d?.graph.getNode(s.nodeId) : null;
    if (!d || !node || workspace.active !== d) {
      area.setHighlight(null);
      return;
    }
    if (s.at) area.setIndex(d, node.id, s.at);
    area.setHighlight({ docKey: d.key, nodeId: node.id, target: s.target ?? null });
    reveal(d, node, s.target);
    editor.redraw();
  }

  function render() {
    const s = tour.step;
    const status = tour.status(hasResult);
    count.textContent = `${tour.index + 1} / ${tour.steps.length}`;
    list.replaceChildren(...tour.steps.map((st, i) => h(`li.tour-step${i === tour.index ? '.active' : ''}${i < tour.index ? '.done' : ''}`,
      { dataset: { step: st.id }, text: st.title, onclick: () => { if (tour.goto(i, hasResult)) show(); } })));
    title.textContent = s.title;
    body.textContent = s.text;
    hint.hidden = status.ready;
    hint.textContent = status.hint ?? '';
    back.disabled = !tour.canBack();
    next.textContent = tour.isLast ? 'Finish' : 'Next';
    next.disabled = !tour.isLast && !tour.canNext(hasResult);
    next.hidden = Boolean(s.openTemplate);
    runBtn.hidden = !(s.nodeId !== null && (!status.ready || s.id === 'film' || s.id === 'try'));
    openBtn.hidden = !s.openTemplate;
    root.dataset.step = s.id;
  }

  function show() {
    if (!tour) return;
    root.hidden = workspace.active?.key !== docKey;
    if (root.hidden) { area.setHighlight(null); return; }
    render();
    apply();
  }

  function open(d) {
    if (!d) return;
    docKey = d.key;
    tour = createTour(buildTour([...d.graph.nodes.values()]));
    root.hidden = false;
    requestAnimationFrame(show); // after the workflow's first fit to view
  }

  function close() {
    tour = null;
    docKey = null;
    root.hidden = true;
    area.setHighlight(null);
  }

  return {
    open,
    close,
    /** A workflow was opened: the learn-* ones open the tour. */
    opened(d) { if (d && isLearnWorkflow(d.name)) open(d); },
    /** The tabs or the graph changed: follow the active tab (the card hides on other tabs). */
    refresh() {
      if (!tour) return;
      const hidden = workspace.active?.key !== docKey;
      if (hidden !== root.hidden) show();
      else if (!hidden) render();
    },
    /** Execution events: a step waiting for the result moves on when it arrives. */
    onExecution(kind) {
      if (!tour || (kind !== 'output' && kind !== 'success' && kind !== 'done')) return;
      if (tour.update(hasResult)) show();
      else if (!root.hidden) render();
    },
    get isOpen() { return tour !== null; },
    get step() { return tour?.step ?? null; },
  };
}
