// The canvas pointer state machine: select, move, box-select, pan, zoom to the cursor, drag links (with type
// checks, and a filtered search when dropped on empty canvas), resize, groups, reroutes, widgets, menus.

import { typesCompatible } from '../graph/model.js';
import { widgetsOf } from '../graph/schema.js';
import { copyNodes, pasteNodes } from '../graph/clipboard.js';
import { widgetGesture } from '../widgets/interact.js';
import { createNode, firstCompatibleInput, firstCompatibleOutput, seedPrimitive } from '../app/commands.js';
import { Hit, hitTest, nearestLinkSegment, nodesInRect } from './hit.js';
import { minSize } from './layout.js';
import { panBy, toGraph, zoomAt } from './viewport.js';

const CLICK_SLOP = 3;

/**
 * Wires pointer input on `canvas`. `editor` = {doc(), scene(), redraw(), changed(), settings(), editors, menus,
 * setEditing(x)}; `hooks` = {openSearch, nodeMenu, canvasMenu, groupMenu, linkMenu, lightbox, chooseUpload,
 * notify, renameNode, renameGroup, areaGesture(node, p) -> {move(dx, e, p), up(moved)} | null}.
 */
export function attachInteraction(canvas, editor, hooks) {
  let gesture = null;
  let spaceDown = false;

  const local = (e) => {
    const r = canvas.getBoundingClientRect();
    return [e.clientX - r.left, e.clientY - r.top];
  };
  const graphPoint = (e) => toGraph(editor.doc().vp, local(e));

  function snap(v) {
    const s = editor.settings();
    if (!s.snapToGrid) return v;
    const g = s.gridSize || 10;
    return Math.round(v / g) * g;
  }

  function commit() {
    editor.doc().checkpoint();
    editor.changed();
  }

  function selectNode(doc, node, e) {
    if (e.shiftKey || e.ctrlKey || e.metaKey) {
      if (doc.selection.has(node.id) && (e.ctrlKey || e.metaKey)) doc.selection.delete(node.id);
      else doc.selection.add(node.id);
    } else if (!doc.selection.has(node.id)) {
      doc.selection = new Set([node.id]);
      doc.selectedGroups.clear();
      doc.selectedReroutes.clear();
    }
    doc.graph.bringToFront(node.id);
  }

  function startNodeDrag(doc, node, e, p) {
    if (e.altKey) {
      const clip = copyNodes(doc.graph, [...doc.selection]);
      const x = Math.min(...clip.nodes.map((n) => n.pos[0]));
      const y = Math.min(...clip.nodes.map((n) => n.pos[1]));
      const added = pasteNodes(doc.graph, clip, [x, y]);
      doc.selection = new Set(added.map((n) => n.id));
    }
    const nodes = doc.selectedNodes().filter((n) => !n.flags.pinned);
    return { kind: 'nodes', start: p, origin: nodes.map((n) => [n, [...n.pos]]) };
  }

  function startLinkDrag(doc, hit) {
    const { node, slot } = hit;
    const scene = editor.scene();
    if (hit.kind === Hit.OUTPUT) {
      return { kind: 'link', fromOutput: true, node, slot, type: node.outputs[slot].type,
        from: scene.frame.outputPos(node, slot), to: scene.frame.outputPos(node, slot) };
    }
    const inp = node.inputs[slot];
    if (inp.link !== null && doc.graph.links.has(inp.link)) {
      const link = doc.graph.links.get(inp.link);
      const origin = doc.graph.getNode(link.origin_id);
      doc.graph.removeLink(link.id);
      return { kind: 'link', fromOutput: true, node: origin, slot: link.origin_slot, type: link.type, detached: true,
        from: scene.frame.outputPos(origin, link.origin_slot), to: scene.frame.inputPos(node, slot) };
    }
    return { kind: 'link', fromOutput: false, node, slot, type: inp.type,
      from: scene.frame.inputPos(node, slot), to: scene.frame.inputPos(node, slot) };
  }

  function tryConnect(doc, fromOutput, a, aSlot, b, bSlot) {
    const [o, os, t, ts] = fromOutput ? [a, aSlot, b, bSlot] : [b, bSlot, a, aSlot];
    const err = doc.graph.connectionError(o.id, os, t.id, ts);
    if (err) {
      hooks.notify(`Cannot connect: ${err}`, 'warn');
      return false;
    }
    seedPrimitive(doc, doc.graph.connect(o.id, os, t.id, ts));
    return true;
  }

  function dropLink(g, e) {
    const doc = editor.doc();
    const hit = hitTest(editor.scene(), graphPoint(e));
    const target = hit.node;
    if (target && target !== g.node) {
      if (g.fromOutput) {
        let slot = -1;
        if (hit.kind === Hit.INPUT) slot = hit.slot;
        else if (hit.kind === Hit.WIDGET && hit.widget.inputType) {
          if (typesCompatible(g.type, hit.widget.inputType)) {
            slot = doc.graph.widgetInputSlot(target.id, hit.widget.name, hit.widget.inputType);
          } else {
            hooks.notify(`Cannot connect: ${g.type} output cannot feed ${hit.widget.inputType} "${hit.widget.name}"`,
              'warn');
            return;
          }
        } else slot = firstCompatibleInput(doc, target, g.type, typesCompatible);
        if (slot >= 0) tryConnect(doc, true, g.node, g.slot, target, slot);
        else hooks.notify(`${target.title ?? target.type} has no input for ${g.type}`, 'warn');
      } else {
        const slot = hit.kind === Hit.OUTPUT ? hit.slot : firstCompatibleOutput(target, g.type, typesCompatible);
        if (slot >= 0) tryConnect(doc, false, g.node, g.slot, target, slot);
        else hooks.notify(`${target.title ?? target.type} has no output for ${g.type}`, 'warn');
      }
      return;
    }
    if (hit.kind === Hit.NONE || hit.kind === Hit.GROUP) {
      if (g.detached) return;
      const at = graphPoint(e);
      hooks.openSearch({
        at: [e.clientX, e.clientY],
        filter: g.fromOutput ? { inputType: g.type } : { outputType: g.type },
        onPick: (def) => {
          const d = editor.doc();
          const node = createNode(d, def.name, g.fromOutput ? at : [at[0] - 300, at[1]]);
          if (!g.fromOutput) node.pos[0] = at[0] - node.size[0];
          if (g.fromOutput) {
            const slot = firstCompatibleInput(d, node, g.type, typesCompatible);
            if (slot >= 0) tryConnect(d, true, g.node, g.slot, node, slot);
          } else {
            const slot = firstCompatibleOutput(node, g.type, typesCompatible);
            if (slot >= 0) tryConnect(d, false, g.node, g.slot, node, slot);
          }
          d.selection = new Set([node.id]);
          commit();
          editor.redraw();
        },
      });
    }
  }

  function onPointerDown(e) {
    hooks.closePopups?.();
    if (document.activeElement && document.activeElement !== document.body && document.activeElement !== canvas) {
      document.activeElement.blur?.();
    }
    canvas.focus({ preventScroll: true });
    const doc = editor.doc();
    const p = graphPoint(e);
    const screen = local(e);
    if (e.button === 1 || (e.button === 0 && spaceDown)) {
      gesture = { kind: 'pan', last: screen, moved: false, startScreen: screen };
    } else if (e.button !== 0) {
      return;
    } else {
      const hit = hitTest(editor.scene(), p);
      gesture = startGesture(doc, hit, e, p, screen);
    }
    if (gesture) {
      gesture.startScreen = screen;
      gesture.moved = false;
      canvas.setPointerCapture(e.pointerId);
    }
    editor.redraw();
  }

  function startGesture(doc, hit, e, p, screen) {
    switch (hit.kind) {
      case Hit.OUTPUT:
      case Hit.INPUT:
        if (e.ctrlKey && e.altKey) {
          if (hit.kind === Hit.INPUT) doc.graph.disconnectInput(hit.node.id, hit.slot);
          else doc.graph.disconnectOutput(hit.node.id, hit.slot);
          commit();
          return null;
        }
        return startLinkDrag(doc, hit);
      case Hit.COLLAPSE:
        if (hit.node.flags.collapsed) delete hit.node.flags.collapsed;
        else hit.node.flags.collapsed = true;
        commit();
        return null;
      case Hit.RESIZE:
        selectNode(doc, hit.node, e);
        return { kind: 'resize', node: hit.node, start: p, size: [...hit.node.size] };
      case Hit.WIDGET: {
        selectNode(doc, hit.node, e);
        const g = widgetGesture(hit, {
          doc, editors: editor.editors, menus: editor.menus, scale: doc.vp.scale,
          screenRect: (r) => {
            const c = canvas.getBoundingClientRect();
            return [(r[0] + doc.vp.offset[0]) * doc.vp.scale + c.left, (r[1] + doc.vp.offset[1]) * doc.vp.scale + c.top,
              r[2] * doc.vp.scale, r[3] * doc.vp.scale];
          },
          redraw: editor.redraw, commit, setEditing: editor.setEditing,
          chooseUpload: hooks.chooseUpload,
        });
        return g ? { kind: 'widget', handler: g } : startNodeDrag(doc, hit.node, e, p);
      }
      case Hit.IMAGE: { // the area below the widgets may take the gesture (a panel's slider)
        selectNode(doc, hit.node, e);
        const g = hooks.areaGesture?.(hit.node, p);
        return g ? { kind: 'widget', handler: g } : startNodeDrag(doc, hit.node, e, p);
      }
      case Hit.TITLE:
      case Hit.NODE:
        selectNode(doc, hit.node, e);
        return startNodeDrag(doc, hit.node, e, p);
      case Hit.REROUTE:
        if (!e.shiftKey) doc.selectedReroutes.clear();
        doc.selectedReroutes.add(hit.reroute.id);
        return { kind: 'reroute', reroute: hit.reroute, start: p, origin: [...hit.reroute.pos] };
      case Hit.LINK:
        return { kind: 'click-link', hit };
      case Hit.GROUP_TITLE: {
        if (!(e.shiftKey || e.ctrlKey)) {
          doc.selection.clear();
          doc.selectedGroups.clear();
        }
        doc.selectedGroups.add(hit.group);
        const nodes = hit.group.flags?.pinned ? [] : doc.graph.nodesInGroup(hit.group);
        return { kind: 'group', group: hit.group, start: p, origin: [...hit.group.bounding],
          nodes: nodes.map((n) => [n, [...n.pos]]) };
      }
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
    const screen = local(e);
    if (!gesture) {
      updateCursor(e);
      return;
    }
    const doc = editor.doc();
    const p = graphPoint(e);
    if (!gesture.moved && Math.hypot(screen[0] - gesture.startScreen[0], screen[1] - gesture.startScreen[1]) < CLICK_SLOP) {
      return;
    }
    gesture.moved = true;
    const g = gesture;
    switch (g.kind) {
      case 'pan':
        panBy(doc.vp, screen[0] - g.last[0], screen[1] - g.last[1]);
        g.last = screen;
        break;
      case 'nodes':
        for (const [n, o] of g.origin) {
          n.pos[0] = o[0] + p[0] - g.start[0];
          n.pos[1] = o[1] + p[1] - g.start[1];
        }
        break;
      case 'resize': {
        const [mw, mh] = minSize(g.node, widgetsOf(g.node, doc.defs, doc.graph));
        g.node.size[0] = Math.max(mw, g.size[0] + p[0] - g.start[0]);
        g.node.size[1] = Math.max(mh, g.size[1] + p[1] - g.start[1]);
        break;
      }
      case 'link': {
        g.to = p;
        const hit = hitTest(editor.scene(), p);
        g.valid = undefined;
        if (g.fromOutput && hit.kind === Hit.INPUT && hit.node !== g.node) {
          g.valid = doc.graph.connectionError(g.node.id, g.slot, hit.node.id, hit.slot) === null;
        } else if (!g.fromOutput && hit.kind === Hit.OUTPUT && hit.node !== g.node) {
          g.valid = doc.graph.connectionError(hit.node.id, hit.slot, g.node.id, g.slot) === null;
        }
        break;
      }
      case 'box':
        g.rect = [g.start[0], g.start[1], p[0] - g.start[0], p[1] - g.start[1]];
        break;
      case 'reroute':
        g.reroute.pos[0] = g.origin[0] + p[0] - g.start[0];
        g.reroute.pos[1] = g.origin[1] + p[1] - g.start[1];
        break;
      case 'group': {
        const dx = p[0] - g.start[0], dy = p[1] - g.start[1];
        g.group.bounding[0] = g.origin[0] + dx;
        g.group.bounding[1] = g.origin[1] + dy;
        for (const [n, o] of g.nodes) { n.pos[0] = o[0] + dx; n.pos[1] = o[1] + dy; }
        break;
      }
      case 'group-resize':
        g.group.bounding[2] = Math.max(140, g.origin[2] + p[0] - g.start[0]);
        g.group.bounding[3] = Math.max(80, g.origin[3] + p[1] - g.start[1]);
        break;
      case 'widget':
        g.handler.move(screen[0] - g.startScreen[0], e, p);
        break;
      default:
        break;
    }
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
        if (g.moved) for (const [n] of g.origin) { n.pos[0] = snap(n.pos[0]); n.pos[1] = snap(n.pos[1]); }
        else if (!(e.shiftKey || e.ctrlKey || e.metaKey) && !e.altKey) {
          const hit = hitTest(editor.scene(), graphPoint(e));
          if (hit.node) doc.selection = new Set([hit.node.id]);
        }
        commit();
        break;
      case 'link':
        if (g.moved || g.detached) dropLink(g, e);
        commit();
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
      case 'resize':
      case 'reroute':
      case 'group':
      case 'group-resize':
        if (g.kind === 'group' && g.moved) {
          g.group.bounding[0] = snap(g.group.bounding[0]);
          g.group.bounding[1] = snap(g.group.bounding[1]);
        }
        commit();
        break;
      default:
        break;
    }
    editor.redraw();
  }

  function updateCursor(e) {
    const hit = hitTest(editor.scene(), graphPoint(e));
    let cursor = 'default';
    if (spaceDown) cursor = 'grab';
    else if (hit.kind === Hit.RESIZE || hit.kind === Hit.GROUP_RESIZE) cursor = 'nwse-resize';
    else if (hit.kind === Hit.INPUT || hit.kind === Hit.OUTPUT) cursor = 'crosshair';
    else if (hit.kind === Hit.WIDGET) cursor = hit.part === 'value' && (hit.widget.kind === 'INT' || hit.widget.kind === 'FLOAT')
      ? 'ew-resize' : 'pointer';
    else if (hit.kind === Hit.TITLE || hit.kind === Hit.GROUP_TITLE || hit.kind === Hit.REROUTE) cursor = 'move';
    else if (hit.kind === Hit.LINK || hit.kind === Hit.COLLAPSE || hit.kind === Hit.IMAGE) cursor = 'pointer';
    canvas.style.cursor = cursor;
  }

  function onDoubleClick(e) {
    const doc = editor.doc();
    const p = graphPoint(e);
    const scene = editor.scene();
    const hit = hitTest(scene, p);
    if (hit.kind === Hit.TITLE) return hooks.renameNode(hit.node);
    if (hit.kind === Hit.GROUP_TITLE) return hooks.renameGroup(hit.group);
    if (hit.kind === Hit.IMAGE) return hooks.lightbox(hit.node);
    if (hit.kind === Hit.REROUTE) {
      doc.graph.removeReroute(hit.reroute.id);
      commit();
      return editor.redraw();
    }
    if (hit.kind !== Hit.NONE && hit.kind !== Hit.GROUP) return undefined;
    const near = nearestLinkSegment(scene, p, 6 / Math.min(1, doc.vp.scale));
    if (near) {
      const chain = doc.graph.rerouteChain(near.link);
      doc.graph.addReroute(near.link.id, p, { beforeId: chain[near.segment] });
      commit();
      return editor.redraw();
    }
    return hooks.openSearch({
      at: [e.clientX, e.clientY], filter: {},
      onPick: (def) => {
        const d = editor.doc();
        const node = createNode(d, def.name, [snap(p[0]), snap(p[1])]);
        d.selection = new Set([node.id]);
        commit();
        editor.redraw();
      },
    });
  }

  function onWheel(e) {
    e.preventDefault();
    const doc = editor.doc();
    const delta = e.deltaMode === 1 ? e.deltaY * 16 : e.deltaY;
    zoomAt(doc.vp, Math.exp(-delta * (e.ctrlKey ? 0.01 : 0.0015)), local(e));
    editor.closeEditors?.();
    editor.redraw();
  }

  function onContextMenu(e) {
    e.preventDefault();
    const doc = editor.doc();
    const p = graphPoint(e);
    const hit = hitTest(editor.scene(), p);
    const at = [e.clientX, e.clientY];
    if (hit.node) {
      if (!doc.selection.has(hit.node.id)) doc.selection = new Set([hit.node.id]);
      editor.redraw();
      return hooks.nodeMenu(hit.node, at, hit);
    }
    if (hit.kind === Hit.GROUP_TITLE || hit.kind === Hit.GROUP || hit.kind === Hit.GROUP_RESIZE) {
      return hooks.groupMenu(hit.group, at, p);
    }
    if (hit.kind === Hit.LINK) return hooks.linkMenu(hit.link, at, hit.point);
    if (hit.kind === Hit.REROUTE) {
      return hooks.rerouteMenu?.(hit.reroute, at);
    }
    return hooks.canvasMenu(p, at);
  }

  const onKey = (e) => {
    const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(e.target?.tagName ?? '');
    if (e.code === 'Space' && !typing) {
      spaceDown = e.type === 'keydown';
      if (spaceDown) e.preventDefault();
      canvas.style.cursor = spaceDown ? 'grab' : 'default';
    }
  };

  canvas.addEventListener('pointerdown', onPointerDown);
  canvas.addEventListener('pointermove', onPointerMove);
  canvas.addEventListener('pointerup', onPointerUp);
  canvas.addEventListener('pointercancel', onPointerUp);
  canvas.addEventListener('dblclick', onDoubleClick);
  canvas.addEventListener('wheel', onWheel, { passive: false });
  canvas.addEventListener('contextmenu', onContextMenu);
  window.addEventListener('keydown', onKey);
  window.addEventListener('keyup', onKey);

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
