// Keyboard shortcuts: one table used both to dispatch keys and to draw the help overlay.

export const SHORTCUTS = Object.freeze([
  { keys: 'Ctrl+Enter', command: 'queue', label: 'Queue the workflow' },
  { keys: 'Ctrl+Shift+Enter', command: 'queueFront', label: 'Queue at the front' },
  { keys: 'Ctrl+Alt+Enter', command: 'interrupt', label: 'Interrupt the running prompt' },
  { keys: 'Ctrl+Z', command: 'undo', label: 'Undo' },
  { keys: 'Ctrl+Y', command: 'redo', label: 'Redo' },
  { keys: 'Ctrl+Shift+Z', command: 'redo', label: 'Redo' },
  { keys: 'Ctrl+S', command: 'save', label: 'Save the workflow' },
  { keys: 'Ctrl+Shift+S', command: 'saveAs', label: 'Save as…' },
  { keys: 'Ctrl+O', command: 'open', label: 'Open a workflow file' },
  { keys: 'Ctrl+A', command: 'selectAll', label: 'Select all nodes' },
  { keys: 'Ctrl+C', command: 'copy', label: 'Copy' },
  { keys: 'Ctrl+V', command: 'paste', label: 'Paste' },
  { keys: 'Ctrl+Shift+V', command: 'pasteWithLinks', label: 'Paste keeping input links' },
  { keys: 'Ctrl+D', command: 'duplicate', label: 'Duplicate' },
  { keys: 'Delete', command: 'delete', label: 'Delete the selection' },
  { keys: 'Backspace', command: 'delete', label: 'Delete the selection' },
  { keys: 'Ctrl+G', command: 'group', label: 'Group the selection' },
  { keys: 'Ctrl+Shift+E', command: 'convertToSubgraph', label: 'Turn the selection into a subgraph' },
  { keys: 'Ctrl+M', command: 'mute', label: 'Mute / unmute (mode never)' },
  { keys: 'Ctrl+B', command: 'bypass', label: 'Bypass / un-bypass' },
  { keys: 'Alt+C', command: 'collapse', label: 'Collapse / expand' },
  { keys: 'P', command: 'pin', label: 'Pin / unpin' },
  { keys: '.', command: 'fitView', label: 'Fit the view to the selection (or all)' },
  { keys: 'Alt+=', command: 'zoomIn', label: 'Zoom in' },
  { keys: 'Alt+-', command: 'zoomOut', label: 'Zoom out' },
  { keys: 'Ctrl+Backspace', command: 'clear', label: 'Clear the workflow' },
  { keys: 'R', command: 'refresh', label: 'Refresh node definitions' },
  { keys: 'Q', command: 'togglePanelQueue', label: 'Queue and history panel' },
  { keys: 'W', command: 'togglePanelWorkflows', label: 'Workflows panel' },
  { keys: 'N', command: 'togglePanelNodes', label: 'Node library panel' },
  { keys: 'M', command: 'togglePanelModels', label: 'Model library panel' },
  { keys: 'Shift+M', command: 'toggleMinimap', label: 'Show / hide the minimap' },
  { keys: 'Ctrl+,', command: 'settings', label: 'Settings' },
  { keys: '?', command: 'help', label: 'This help' },
  { keys: 'Space+drag', command: null, label: 'Pan the canvas' },
  { keys: 'Ctrl+drag', command: null, label: 'Box select (Shift+drag adds)' },
  { keys: 'Alt+drag', command: null, label: 'Clone the dragged nodes' },
  { keys: 'Double-click', command: null, label: 'Search nodes (on a link: add a reroute; on a subgraph: open it)' },
  { keys: 'Ctrl+Alt+click', command: null, label: 'Disconnect a slot' },
  { keys: 'Ctrl+Up/Down', command: null, label: 'Prompt weight of the selection (in a prompt)' },
]);

/** Canonical "Ctrl+Shift+Alt+Key" of a keyboard event (Cmd counts as Ctrl). */
export function chordOf(e) {
  const parts = [];
  if (e.ctrlKey || e.metaKey) parts.push('Ctrl');
  if (e.shiftKey && e.key.length > 1) parts.push('Shift');
  else if (e.shiftKey && /^[a-z]$/i.test(e.key)) parts.push('Shift');
  if (e.altKey) parts.push('Alt');
  let key = e.key;
  if (e.altKey && e.code?.startsWith('Key')) key = e.code.slice(3);
  if (e.altKey && (e.code === 'Equal' || e.code === 'Minus')) key = e.code === 'Equal' ? '=' : '-';
  if (key.length === 1) key = key.toUpperCase();
  parts.push(key);
  return parts.join('+');
}

/** The command for a key event, or null. Keys typed into text fields are left alone unless they carry Ctrl. */
export function commandFor(e, shortcuts = SHORTCUTS) {
  const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(e.target?.tagName ?? '') || e.target?.isContentEditable;
  const chord = chordOf(e);
  const hit = shortcuts.find((s) => s.command && s.keys.toUpperCase() === chord.toUpperCase());
  if (!hit) return null;
  if (typing && !/^Ctrl\+(Enter|Shift\+Enter|Alt\+Enter|S|Shift\+S|O|,)$/i.test(hit.keys)) return null;
  return hit.command;
}

/** The shortcut table with the user's bindings ({command: chord, or '' to unbind}) in place of the defaults. */
export function withBindings(overrides = {}, shortcuts = SHORTCUTS) {
  const out = shortcuts.filter((s) => !(s.command && s.command in overrides));
  for (const [command, keys] of Object.entries(overrides)) {
    const label = shortcuts.find((s) => s.command === command)?.label ?? command;
    if (keys) out.push({ keys, command, label });
  }
  return out;
}

/** The commands a chord is bound to in a table (a conflict when more than one). */
export function boundTo(chord, shortcuts) {
  return shortcuts.filter((s) => s.command && s.keys.toUpperCase() === chord.toUpperCase()).map((s) => s.command);
}
