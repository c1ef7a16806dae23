// Renaming nodes and groups (a dialog; an empty node title or the display name restores the default).

import { nodeTitle } from '../canvas/layout.js';

/** @param c the controller context (controller.js) */
export function createTitles(c) {
  async function renameNode(node) {
    const def = c.deps.getDefs().get(node.type);
    const title = await c.ui.dialogs.prompt('Node title', nodeTitle(node, def));
    if (title === null) return;
    if (!title || title === def?.displayName) delete node.title;
    else node.title = title;
    c.changed(true);
  }

  async function renameGroup(group) {
    const title = await c.ui.dialogs.prompt('Group title', group.title);
    if (title === null) return;
    group.title = title;
    c.changed(true);
  }

  return { renameNode, renameGroup };
}
