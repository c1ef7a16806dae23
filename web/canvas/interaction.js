// The canvas pointer state machine: a press starts one gesture from what is under the pointer (pan, move,
// box-select, resize, link drag, widget edit, the node area's own gestures), moves update it, release ends it.
// The features live beside it: moves.js (selection, moving and resizing nodes, groups, reroutes),
// link_drag.js (dragging and dropping links), canvas_events.js (double-click, wheel, menus, cursor, hover).

import { widgetGesture } from '../widgets/interact.js';
import { attachCanvasEvents } from './canvas_events.js';
import { Hit, hitTest, nodesInRect } from './hit.js';
import { createLinkDrag } from './link_drag.js';
import { moveTo, selectNode, startGroupDrag, startNodeDrag } from './moves.js';
import { panBy, toGraph } from './viewport.js';

const CLICK_SLOP = 3;

/**
 * Wires pointer input on `canvas`. `editor` = {doc(), scene(), redraw(), changed(), settings(), editors, menus,
 * setEditing(x)}; `hooks` = {openSearch, nodeMenu, canvasMenu, groupMenu, linkMenu, lightbox, chooseUpload,
 * notify, renameNode, renameGroup, hover(hit|null, clientPoint, graphPoint), areaGesture(node, p) ->
 * {move(dx, e, p), up(moved)} | null}.
 */
export function attachInteraction(canvas, editor, hooks) {
  let gesture = null;

  /** The context the feature files share. */
  const ix = {
    canvas, editor, hooks, spaceDown: false,
    local(e) {
      const r = canvas.getBoundingClientRect();
      return [e.clientX - r.left, e.clientY - r.top];
    },
    graphPoint: (e) => toGraph(editor.doc().vp, ix.local(e)),
    snap(v) {
      const s = editor.settings();
      if (!s.snapToGrid) return v;
      const g = s.gridSize || 10;
      return Math.round(v / g) * g;
    },
    commit() {
      editor.doc().checkpoint();
      editor.changed();
    },
  };
  const links = createLinkDrag(ix);
  const events = attachCanvasEvents(ix);

  function onPointerDown(e) {
    hooks.closePopups?.();
    hooks.hover?.(null);
    if (document.activeElement && document.activeElement !== document.body && document.activeElement !== canvas) {
      document.activeElement.blur?.();
    }
    canvas.focus({ preventScroll: true });
    const doc = editor.doc();
    const p = ix.graphPoint(e);
    const screen = ix.local(e);
    if (e.button === 1 || (e.button === 0 && ix.spaceDown)) {
      gesture = { kind: 'pan', last: screen };
    } else if (e.button !== 0) {
      return;
    } else {
      gesture = startGesture(doc, hitTest(editor.scene(), p), e, p, screen);
    }
    if (gesture) {
      gesture.startScreen = screen;
      gesture.moved = false;
      canvas.setPointerCapture(e.pointerId);
    }
    editor.redraw();
  }

  function widgetHandler(doc, hit) {
    return widgetGesture(hit, {
      doc, editors: editor.editors, menus: editor.menus, scale: doc.vp.scale,
      screenRect: (r) => {
        const c = canvas.getBoundingClientRect();
        return [(r[0] + doc.vp.offset[0]) * doc.vp.scale + c.left, (r[1] + doc.vp.offset[1]) * doc.vp.scale + c.top,
          r[2] * doc.vp.scale, r[3] * doc.vp.scale];
      },
      redraw: editor.redraw, commit: ix.commit, setEditing: editor.setEditing,
      chooseUpload: hooks.chooseUpload,
    });
  }

  function startGesture(doc, hit, e, p, screen) {
    switch (hit.kind) {
      case Hit.OUTPUT:
      case Hit.INPUT:
        if (e.ctrlKey && e.altKey) {
          if (hit.kind === Hit.INPUT) doc.graph.disconnectInput(hit.node.id, hit.slot);
          else doc.graph.disconnectOutput(hit.node.id, hit.slot);
          ix.commit();
          return null;
        }
        return links.start(doc, hit);
      case Hit.COLLAPSE:
        if (hit.node.flags.collapsed) delete hit.node.flags.collapsed;
        else hit.node.flags.collapsed = true;
        ix.commit();
        return null;
      case Hit.RESIZE:
        selectNode(doc, hit.node, e);
        return { kind: 'resize', node: hit.node, start: p, size: [...hit.node.size] };
      case Hit.WIDGET: {
        selectNode(doc, hit.node, e);
        const g = widgetHandler(doc, hit);
        return g ? { kind: 'widget', handler: g } : startNodeDrag(doc, e, p);
      }
      case Hit.IMAGE: { // the area below the widgets may take the gesture (a panel's slider)
        selectNode(doc, hit.node, e);
        const g = hooks.areaGesture?.(hit.node, p);
        return g ? { kind: 'widget', handler: g } : startNodeDrag(doc, e, p);
      }
      case Hit.TITLE:
      case Hit.NODE:
        selectNode(doc, hit.node, e);
        return startNodeDrag(doc, e, p);
      case Hit.REROUTE:
        if (!e.shiftKey) doc.selectedReroutes.clear();
        doc.selectedReroutes.add(hit.reroute.id);
        return { kind: 'reroute', reroute: hit.reroute, start: p, origin: [...hit.reroute.pos] };
      case Hit.LINK:
        return { kind: 'click-link', hit };
      case Hit.GROUP_TITLE:
        return startGroupDrag(doc, hit.group, e, p);
      case Hit.GROUP_RESIZE:
        return { kind: 'group-resize', group: hit.group, start: p, origin: [...hit.group.bounding] };
      default:
        if (e.ctrlKey || e.shiftKey || e.metaKey) {
          return { kind: 'box', start: p, rect: [p[0], p[1], 0, 0], additive: e.shiftKey || e.ctrlKey };
        }
        return { kind: 'pan', last: screen, clearOnClick: true };
    }
  }

  function onPointerMove(e) {
    if (!gesture) {
      events.hover(e);
      return;
    }
    const screen = ix.local(e);
    const doc = editor.doc();
    const p = ix.graphPoint(e);
    const g = gesture;
    if (!g.moved && Math.hypot(screen[0] - g.startScreen[0], screen[1] - g.startScreen[1]) < CLICK_SLOP) return;
    g.moved = true;
    if (g.kind === 'pan') {
      panBy(doc.vp, screen[0] - g.last[0], screen[1] - g.last[1]);
      g.last = screen;
    } else if (g.kind === 'link') links.move(doc, g, p);
    else if (g.kind === 'widget') g.handler.move(screen[0] - g.startScreen[0], e, p);
    else moveTo(doc, g, p);
    editor.redraw();
  }

  function onPointerUp(e) {
    const g = gesture;
    gesture = null;
    if (!g) return;
    const doc = editor.doc();
    switch (g.kind) {
      case 'pan':
        if (!g.moved && g.clearOnClick) {
          doc.selection.clear();
          doc.selectedGroups.clear();
          doc.selectedReroutes.clear();
        }
        break;
      case 'nodes':
        if (g.moved) for (const [n] of g.origin) { n.pos[0] = ix.snap(n.pos[0]); n.pos[1] = ix.snap(n.pos[1]); }
        else if (!(e.shiftKey || e.ctrlKey || e.metaKey) && !e.altKey) {
          const hit = hitTest(editor.scene(), ix.graphPoint(e));
          if (hit.node) doc.selection = new Set([hit.node.id]);
        }
        ix.commit();
        break;
      case 'link':
        if (g.moved || g.detached) links.drop(g, e);
        ix.commit();
        break;
      case 'box': {
        const picked = nodesInRect(editor.scene(), g.rect).map((n) => n.id);
        doc.selection = new Set(g.additive ? [...doc.selection, ...picked] : picked);
        break;
      }
      case 'widget':
        g.handler.up(g.moved, e);
        break;
      case 'click-link':
        hooks.linkMenu(g.hit.link, [e.clientX, e.clientY], g.hit.point);
        break;
      default: // resize, reroute, group, group-resize
        if (g.kind === 'group' && g.moved) {
          g.group.bounding[0] = ix.snap(g.group.bounding[0]);
          g.group.bounding[1] = ix.snap(g.group.bounding[1]);
        }
        ix.commit();
        break;
    }
    editor.redraw();
  }

  canvas.addEventListener('pointerdown', onPointerDown);
  canvas.addEventListener('pointermove', onPointerMove);
  canvas.addEventListener('pointerup', onPointerUp);
  canvas.addEventListener('pointercancel', onPointerUp);

  return {
    /** The drag shown by the renderer (a link being dragged, the selection box). */
    overlay() {
      if (gesture?.kind === 'link' && gesture.moved) return gesture;
      if (gesture?.kind === 'box' && gesture.moved) return gesture;
      return null;
    },
    get busy() { return gesture !== null; },
  };
}
