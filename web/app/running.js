// Running: queueing the open workflow, the run bar's progress, execution events and resyncing after a reconnect.

import { normId } from '../graph/model.js';
import { nodeTitle } from '../canvas/layout.js';
import { queueWorkflow, QueueError } from './runner.js';

/** @param c the controller context (controller.js) */
export function createRunning(c) {
  const { api, workspace, tracker, ui, deps } = c;

  async function queue({ front = false, count = ui.runBar.batchCount(), targets = null } = {}) {
    const d = c.doc();
    c.editor().closeEditors();
    ui.errors.close();
    try {
      const queued = await queueWorkflow({ api, doc: d, tracker, front, count, targets });
      const what = targets ? ` (${targets.length} selected output${targets.length > 1 ? 's' : ''})` : '';
      c.notify(`Queued ${queued.length > 1 ? `${queued.length} runs` : `#${queued[0].number}`}${what}${front ? ' at the front' : ''}`,
        'success');
    } catch (e) {
      if (e instanceof QueueError && e.nodeErrors.size) ui.errors.showValidation(e.message, e.nodeErrors, d);
      else ui.errors.showMessage('Cannot queue', e.message);
    }
    c.changed();
    ui.sidebar.refreshQueue();
  }

  function updateProgress() {
    const p = tracker.progress();
    const doc = c.doc();
    if (!p) {
      ui.runBar.setProgress(null);
      document.title = `${doc?.modified ? '*' : ''}${doc?.name ?? ''} - Chisel`;
      return;
    }
    const d = workspace.docs.find((x) => x.exec.promptIds.has(p.promptId)) ?? doc;
    const node = d?.graph.getNode(p.node);
    ui.runBar.setProgress({ ...p, nodeTitle: node ? nodeTitle(node, deps.getDefs().get(node.type)) : '' });
    document.title = `[${Math.round((p.overall ?? p.nodeFraction) * 100)}%] ${doc?.name ?? ''} - Chisel`;
  }

  /** Execution events; a node with new results has already grown to show them (node_area.js). */
  function onExecution(kind, detail) {
    if (kind === 'queue') ui.runBar.setQueue(detail.queueRemaining);
    if (kind === 'error') {
      ui.errors.showExecution(detail, detail.doc);
      c.notify(`Run failed: ${detail.exception_message}`, 'error');
    }
    if (kind === 'done' || kind === 'success' || kind === 'interrupted' || kind === 'error') ui.sidebar.refreshQueue();
    updateProgress();
    c.editor()?.redraw();
  }

  /** After a reconnect (or at start): adopt what is running; finish what ended while we were away. */
  async function resync() {
    let q;
    try {
      q = await api.getQueue();
    } catch {
      return;
    }
    const running = q.queue_running?.[0];
    const ours = tracker.running;
    if (ours && running?.[1] !== ours.promptId) {
      try {
        const hist = await api.getHistoryItem(ours.promptId);
        const entry = hist?.[ours.promptId];
        const d = workspace.docs.find((x) => x.exec.promptIds.has(ours.promptId));
        if (entry && d) {
          for (const [id, out] of Object.entries(entry.outputs ?? {})) tracker.showOutput(d, normId(id), out);
        }
      } catch {
        // history unavailable: just clear the running state
      }
      tracker.finish(ours.promptId);
    }
    if (running && !ours) tracker.adoptPrompt(running[1], c.doc(), Object.keys(running[2] ?? {}).length);
    ui.runBar.setQueue((q.queue_running?.length ?? 0) + (q.queue_pending?.length ?? 0));
    ui.sidebar.refreshQueue();
    updateProgress();
    c.editor()?.redraw();
  }

  /** ComfyUI's "Queue selected output nodes": only the selected output nodes run, with what they need. */
  function queueSelectedOutputs() {
    const defs = deps.getDefs();
    const outputs = c.doc().selectedNodes().filter((n) => defs.get(n.type)?.outputNode);
    if (!outputs.length) {
      c.notify('Select one or more output nodes (Save Image, Preview Image, ...) to run just them', 'info');
      return Promise.resolve();
    }
    return queue({ count: 1, targets: outputs.map((n) => String(n.id)) });
  }

  return { queue, queueSelectedOutputs, updateProgress, onExecution, resync };
}
