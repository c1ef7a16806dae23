// The canvas's other inputs: double-click (rename, lightbox, reroute on a link, search to add a node), the wheel
// (zoom at the cursor), the context menus, the cursor shape under the pointer and the space key (pan).

import { createNode } from '../app/commands.js';
import { Hit, hitTest, nearestLinkSegment } from './hit.js';
import { zoomAt } from './viewport.js';

/** @param ix the interaction context (interaction.js) */
export function attachCanvasEvents(ix) {
  const { canvas, editor, hooks } = ix;

  function cursorFor(hit) {
    if (ix.spaceDown) return 'grab';
    if (hit.kind === Hit.RESIZE || hit.kind === Hit.GROUP_RESIZE) return 'nwse-resize';
    if (hit.kind === Hit.INPUT || hit.kind === Hit.OUTPUT) return 'crosshair';
    if (hit.kind === Hit.WIDGET) {
      return hit.part === 'value' && (hit.widget.kind === 'INT' || hit.widget.kind === 'FLOAT') ? 'ew-resize' : 'pointer';
    }
    if (hit.kind === Hit.TITLE || hit.kind === Hit.GROUP_TITLE || hit.kind === Hit.REROUTE) return 'move';
    if (hit.kind === Hit.LINK || hit.kind === Hit.COLLAPSE || hit.kind === Hit.IMAGE) return 'pointer';
    return 'default';
  }

  /** Pointer moving with no gesture: the cursor, and the hover hook (tooltips). */
  function hover(e) {
    const p = ix.graphPoint(e);
    const hit = hitTest(editor.scene(), p);
    canvas.style.cursor = cursorFor(hit);
    hooks.hover?.(hit, [e.clientX, e.clientY], p);
  }

  function onDoubleClick(e) {
    const doc = editor.doc();
    const p = ix.graphPoint(e);
    const scene = editor.scene();
    const hit = hitTest(scene, p);
    if (hit.kind === Hit.TITLE) return hooks.renameNode(hit.node);
    if (hit.kind === Hit.GROUP_TITLE) return hooks.renameGroup(hit.group);
    if (hit.kind === Hit.IMAGE) return hooks.lightbox(hit.node);
    if (hit.kind === Hit.REROUTE) {
      doc.graph.removeReroute(hit.reroute.id);
      ix.commit();
      return editor.redraw();
    }
    if (hit.kind === Hit.NODE && hooks.openSubgraph?.(hit.node)) return editor.redraw(); // a subgraph instance
    if (hit.kind !== Hit.NONE && hit.kind !== Hit.GROUP) return undefined;
    const near = nearestLinkSegment(scene, p, 6 / Math.min(1, doc.vp.scale));
    if (near) {
      const chain = doc.graph.rerouteChain(near.link);
      doc.graph.addReroute(near.link.id, p, { beforeId: chain[near.segment] });
      ix.commit();
      return editor.redraw();
    }
    return hooks.openSearch({
      at: [e.clientX, e.clientY], filter: {},
      onPick: (def) => {
        const d = editor.doc();
        const node = createNode(d, def.name, [ix.snap(p[0]), ix.snap(p[1])]);
        d.selection = new Set([node.id]);
        ix.commit();
        editor.redraw();
      },
    });
  }

  function onWheel(e) {
    e.preventDefault();
    const delta = e.deltaMode === 1 ? e.deltaY * 16 : e.deltaY;
    zoomAt(editor.doc().vp, Math.exp(-delta * (e.ctrlKey ? 0.01 : 0.0015)), ix.local(e));
    editor.closeEditors?.();
    hooks.hover?.(null);
    editor.redraw();
  }

  function onContextMenu(e) {
    e.preventDefault();
    const doc = editor.doc();
    const p = ix.graphPoint(e);
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
    if (hit.kind === Hit.REROUTE) return hooks.rerouteMenu?.(hit.reroute, at);
    return hooks.canvasMenu(p, at);
  }

  const onKey = (e) => {
    const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(e.target?.tagName ?? '');
    if (e.code === 'Space' && !typing) {
      ix.spaceDown = e.type === 'keydown';
      if (ix.spaceDown) e.preventDefault();
      canvas.style.cursor = ix.spaceDown ? 'grab' : 'default';
    }
  };

  canvas.addEventListener('dblclick', onDoubleClick);
  canvas.addEventListener('wheel', onWheel, { passive: false });
  canvas.addEventListener('contextmenu', onContextMenu);
  canvas.addEventListener('pointerleave', () => hooks.hover?.(null));
  window.addEventListener('keydown', onKey);
  window.addEventListener('keyup', onKey);
  return { hover };
}
