// Right-click menus for the canvas, nodes, groups, links and reroutes (item lists for panels/contextmenu.js).

import { Mode } from '../graph/model.js';
import { categoryTree } from '../panels/fuzzy.js';
import { GROUP_COLORS, NODE_COLORS } from '../canvas/theme.js';
import * as cmd from './commands.js';

function addNodeItems(tree, onPick) {
  const items = [...tree.children].sort((a, b) => a[0].localeCompare(b[0]))
    .map(([name, sub]) => ({ label: name, submenu: () => addNodeItems(sub, onPick) }));
  const defs = [...tree.defs].sort((a, b) => a.displayName.localeCompare(b.displayName));
  if (items.length && defs.length) items.push({ separator: true });
  return [...items, ...defs.map((d) => ({ label: d.displayName, action: () => onPick(d) }))];
}

/** @param ctx {doc, defs, editor, commands, at (graph point), storage} */
export function canvasMenu(ctx) {
  const { doc, defs, at, commands } = ctx;
  return [
    { label: 'Add Node', submenu: () => addNodeItems(categoryTree(defs), (def) => commands.addNodeAt(def.name, at)) },
    { label: 'Add Group', action: () => commands.addGroupAt(at) },
    { separator: true },
    { label: 'Paste', hint: 'Ctrl+V', action: () => commands.pasteAt(at, false) },
    { label: 'Select all', hint: 'Ctrl+A', action: () => commands.run('selectAll') },
    { label: 'Fit view', hint: '.', action: () => commands.run('fitView') },
    { separator: true },
    { label: 'Queue', hint: 'Ctrl+Enter', action: () => commands.run('queue') },
    { label: 'Clear workflow', disabled: !doc.graph.nodes.size, action: () => commands.run('clear') },
    ...(commands.subgraphs?.canvasItems(at) ?? []),
  ];
}

export function nodeMenu(ctx, node) {
  const { doc, commands } = ctx;
  const sel = doc.selectedNodes();
  const many = sel.length > 1;
  const mode = (m) => () => cmd.setMode(doc, sel, m) && commands.changed();
  const colorItems = [
    { label: 'No colour', action: () => { for (const n of sel) { delete n.color; delete n.bgcolor; } commands.changed(true); } },
    ...Object.entries(NODE_COLORS).map(([name, c]) => ({ label: name.replace('_', ' '), action: () => {
      for (const n of sel) { n.color = c.color; n.bgcolor = c.bgcolor; }
      commands.changed(true);
    } })),
  ];
  const images = ctx.imageUrls?.(node) ?? [];
  return [
    { label: 'Rename', action: () => commands.renameNode(node) },
    sel.some((n) => ctx.defs.get(n.type)?.outputNode)
      ? { label: 'Queue selected output nodes', action: () => commands.run('queueSelectedOutputs') } : null,
    { label: 'Mode', submenu: [
      { label: 'Always', checked: node.mode === Mode.ALWAYS, action: mode(Mode.ALWAYS) },
      { label: 'Never (mute)', hint: 'Ctrl+M', checked: node.mode === Mode.NEVER, action: mode(Mode.NEVER) },
      { label: 'Bypass', hint: 'Ctrl+B', checked: node.mode === Mode.BYPASS, action: mode(Mode.BYPASS) },
    ] },
    { label: node.flags.collapsed ? 'Expand' : 'Collapse', hint: 'Alt+C', action: () => commands.run('collapse') },
    { label: node.flags.pinned ? 'Unpin' : 'Pin', hint: 'P', action: () => commands.run('pin') },
    { label: 'Colour', submenu: colorItems },
    many ? { label: 'Align', submenu: [
      ...['left', 'right', 'top', 'bottom'].map((e) => ({ label: `Align ${e}`, action: () => {
        cmd.alignSelection(doc, e); commands.changed();
      } })),
      { separator: true },
      ...['horizontal', 'vertical'].map((a) => ({ label: `Distribute ${a}ly`, action: () => {
        cmd.distributeSelection(doc, a); commands.changed();
      } })),
    ] } : null,
    images.length ? { label: 'Open image', action: () => commands.lightbox(node) } : null,
    images.length > 1 && commands.compareImages
      ? { label: 'Compare images', action: () => commands.compareImages(node) } : null,
    ctx.defs.get(node.type)?.widgets.some((w) => w.kind === 'UPLOAD')
      ? { label: 'Edit mask…', action: () => commands.editMask(node) } : null,
    { separator: true },
    { label: 'Copy', hint: 'Ctrl+C', action: () => commands.run('copy') },
    { label: 'Duplicate', hint: 'Ctrl+D', action: () => commands.run('duplicate') },
    { label: 'Group selection', hint: 'Ctrl+G', action: () => commands.run('group') },
    ...(commands.subgraphs?.nodeItems(node) ?? []),
    { separator: true },
    { label: many ? `Remove ${sel.length} nodes` : 'Remove', hint: 'Del', action: () => commands.run('delete') },
  ].filter(Boolean);
}

export function groupMenu(ctx, group) {
  const { doc, commands } = ctx;
  return [
    { label: 'Edit title', action: () => commands.renameGroup(group) },
    { label: 'Colour', submenu: GROUP_COLORS.map((c) => ({ label: c, checked: group.color === c,
      action: () => { group.color = c; commands.changed(true); } })) },
    { label: 'Fit to nodes', action: () => {
      const nodes = doc.graph.nodesInGroup(group);
      const r = doc.graph.boundsOf(nodes);
      if (r) group.bounding = [r[0] - 10, r[1] - 44, r[2] + 20, r[3] + 54];
      commands.changed(true);
    } },
    { label: 'Select nodes', action: () => { doc.selection = new Set(doc.graph.nodesInGroup(group).map((n) => n.id)); commands.redraw(); } },
    { separator: true },
    { label: 'Remove group', action: () => { doc.graph.removeGroup(group); commands.changed(true); } },
    { label: 'Remove group and nodes', action: () => {
      for (const n of doc.graph.nodesInGroup(group)) doc.graph.removeNode(n.id);
      doc.graph.removeGroup(group);
      commands.changed(true);
    } },
  ];
}

export function linkMenu(ctx, link, point) {
  const { doc, commands } = ctx;
  return [
    { label: 'Add reroute here', action: () => {
      doc.graph.addReroute(link.id, point);
      commands.changed(true);
    } },
    { label: 'Delete link', action: () => { doc.graph.removeLink(link.id); commands.changed(true); } },
  ];
}

export function rerouteMenu(ctx, reroute) {
  const { doc, commands } = ctx;
  return [{ label: 'Delete reroute', action: () => { doc.graph.removeReroute(reroute.id); commands.changed(true); } }];
}
