// Dragging links: from an output or an input (detaching a connected input), the validity shown while dragging,
// and the drop: onto a slot or widget (type-checked), onto a node (its first compatible slot) or onto empty
// canvas (a search filtered by the link's type, whose pick is created and connected).

import { typesCompatible } from '../graph/model.js';
import { createNode, firstCompatibleInput, firstCompatibleOutput, seedPrimitive } from '../app/commands.js';
import { Hit, hitTest } from './hit.js';

/** @param ix the interaction context (interaction.js): editor, hooks, graphPoint(e), commit() */
export function createLinkDrag(ix) {
  const { editor, hooks } = ix;

  function start(doc, hit) {
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

  /** While dragging: the end follows the pointer; `valid` says whether the slot under it would accept. */
  function move(doc, g, p) {
    g.to = p;
    const hit = hitTest(editor.scene(), p);
    g.valid = undefined;
    if (g.fromOutput && hit.kind === Hit.INPUT && hit.node !== g.node) {
      g.valid = doc.graph.connectionError(g.node.id, g.slot, hit.node.id, hit.slot) === null;
    } else if (!g.fromOutput && hit.kind === Hit.OUTPUT && hit.node !== g.node) {
      g.valid = doc.graph.connectionError(hit.node.id, hit.slot, g.node.id, g.slot) === null;
    }
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

  function dropOnNode(doc, g, hit) {
    const target = hit.node;
    if (g.fromOutput) {
      let slot = -1;
      if (hit.kind === Hit.INPUT) slot = hit.slot;
      else if (hit.kind === Hit.WIDGET && hit.widget.inputType) {
        if (!typesCompatible(g.type, hit.widget.inputType)) {
          hooks.notify(`Cannot connect: ${g.type} output cannot feed ${hit.widget.inputType} "${hit.widget.name}"`, 'warn');
          return;
        }
        slot = doc.graph.widgetInputSlot(target.id, hit.widget.name, hit.widget.inputType);
      } else slot = firstCompatibleInput(doc, target, g.type, typesCompatible);
      if (slot >= 0) tryConnect(doc, true, g.node, g.slot, target, slot);
      else hooks.notify(`${target.title ?? target.type} has no input for ${g.type}`, 'warn');
    } else {
      const slot = hit.kind === Hit.OUTPUT ? hit.slot : firstCompatibleOutput(target, g.type, typesCompatible);
      if (slot >= 0) tryConnect(doc, false, g.node, g.slot, target, slot);
      else hooks.notify(`${target.title ?? target.type} has no output for ${g.type}`, 'warn');
    }
  }

  function searchAndConnect(g, e) {
    const at = ix.graphPoint(e);
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
        ix.commit();
        editor.redraw();
      },
    });
  }

  function drop(g, e) {
    const doc = editor.doc();
    const hit = hitTest(editor.scene(), ix.graphPoint(e));
    if (hit.node && hit.node !== g.node) dropOnNode(doc, g, hit);
    else if ((hit.kind === Hit.NONE || hit.kind === Hit.GROUP) && !g.detached) searchAndConnect(g, e);
  }

  return { start, move, drop };
}
