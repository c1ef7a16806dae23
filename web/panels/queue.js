// The queue and history panel: the running and pending prompts (cancel), past runs with their images
// (open the run's workflow, delete), and clearing both; on a cluster (`chisel serve --ray`), its workers.
import { runSummary, STATUS_MARK } from '../app/runs.js';
import { h, timeAgo } from './dom.js';

/**
 * GET /workers as the panel's rows: [] for a server without a cluster (mode "local") or one without the route.
 * Each row: {id, device, state ("idle", "running", "dead", "starting"), label (the state, with the prompt for a
 * running worker), done (prompts done), title (host, pid, models held, why it died)}.
 */
export function workerRows(body) {
  if (!body || body.mode === 'local' || !Array.isArray(body.workers)) return [];
  return body.workers.map((w) => {
    const state = String(w.state ?? 'unknown');
    const running = state === 'running' && w.prompt_id ? ` ${String(w.prompt_id).slice(0, 8)}` : '';
    const models = Array.isArray(w.models) && w.models.length ? `models: ${w.models.join(', ')}` : 'no model loaded';
    const title = [`${w.host ?? '?'} pid ${w.pid ?? '?'}`, models, w.error ? `error: ${w.error}` : null]
      .filter(Boolean).join('\n');
    return { id: String(w.id), device: String(w.device || '?'), state, label: state + running,
      done: Number(w.prompts_done ?? 0), title };
  });
}

export function createQueuePanel(container, { api, onLoadWorkflow, onImage, notify }) {
  let busy = false;

  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      const [queue, history, workers] = await Promise.all([api.getQueue(), api.getHistory(50),
        api.getWorkers ? api.getWorkers().catch(() => null) : null]);
      render(queue, history, workerRows(workers));
    } catch (e) {
      container.replaceChildren(h('div.panel-empty', { text: `Cannot read the queue: ${e.message}` }));
    } finally {
      busy = false;
    }
  }

  function workflowOf(item) {
    return item?.[3]?.extra_pnginfo?.workflow ?? null;
  }

  function queueRow(item, running) {
    const [number, id] = item;
    return h(`div.q-item${running ? '.running' : ''}`, { dataset: { promptId: id } },
      h('span.q-num', { text: `#${number}` }), h('span.q-state', { text: running ? 'running' : 'pending' }),
      h('span.q-id', { text: id.slice(0, 8), title: id }),
      h('button.q-btn', { title: 'Open this workflow', text: 'Open', onclick: () => onLoadWorkflow(workflowOf(item), id) }),
      h('button.q-btn.danger', { title: running ? 'Interrupt' : 'Remove from the queue', text: running ? 'Stop' : '×',
        onclick: async () => {
          await (running ? api.interrupt(id) : api.deleteFromQueue([id])).catch((e) => notify(e.message, 'error'));
          refresh();
        } }));
  }

  function historyRow(id, entry) {
    const run = runSummary(id, entry);
    const started = entry.status?.messages?.find((m) => m[0] === 'execution_start')?.[1]?.timestamp
      ?? entry.prompt?.[3]?.create_time;
    const urls = run.images.map((im) => api.viewUrl(im));
    return h(`div.h-item.${run.status}`, { dataset: { promptId: id } },
      h('div.h-head', {}, h('span.h-status', { text: STATUS_MARK[run.status] ?? '•', title: run.status }),
        h('span.h-id', { text: `#${run.number ?? ''} ${id.slice(0, 8)}`, title: id }),
        h('span.h-time', { text: started ? timeAgo(started) : '' })),
      urls.length ? h('div.h-thumbs', {}, ...urls.slice(0, 4).map((u, i) => h('img.h-thumb', { src: u, loading: 'lazy',
        alt: 'output', onclick: () => onImage(urls, i) }))) : null,
      h('div.h-actions', {},
        h('button.q-btn.h-load', { text: 'Load workflow', onclick: () => onLoadWorkflow(run.workflow, id) }),
        h('button.q-btn.danger', { title: 'Delete from history', text: 'Delete', onclick: async () => {
          await api.deleteHistory([id]).catch((e) => notify(e.message, 'error'));
          refresh();
        } })));
  }

  function workerRow(row) {
    return h(`div.q-item.w-item.${row.state}`, { dataset: { workerId: row.id }, title: row.title },
      h('span.q-num', { text: row.id }), h('span.q-state', { text: row.label }),
      h('span.q-id', { text: row.device }), h('span.q-id', { text: `${row.done} done` }));
  }

  function render(queue, history, workers = []) {
    const running = queue?.queue_running ?? [];
    const pending = [...(queue?.queue_pending ?? [])].sort((a, b) => a[0] - b[0]);
    const entries = Object.entries(history ?? {}).reverse();
    container.replaceChildren(
      ...(workers.length ? [h('div.panel-section.workers', {}, h('div.panel-title', {},
        h('span', { text: `Workers (${workers.filter((w) => w.state !== 'dead').length} live)` })),
      ...workers.map(workerRow))] : []),
      h('div.panel-section', {}, h('div.panel-title', {}, h('span', { text: `Queue (${running.length + pending.length})` }),
        h('button.q-btn', { text: 'Clear', title: 'Remove all pending prompts',
          onclick: async () => { await api.clearQueue().catch((e) => notify(e.message, 'error')); refresh(); } })),
      ...(running.length + pending.length ? [...running.map((i) => queueRow(i, true)), ...pending.map((i) => queueRow(i, false))]
        : [h('div.panel-empty', { text: 'Nothing queued' })])),
      h('div.panel-section', {}, h('div.panel-title', {}, h('span', { text: `History (${entries.length})` }),
        h('button.q-btn', { text: 'Clear', title: 'Delete all history',
          onclick: async () => { await api.clearHistory().catch((e) => notify(e.message, 'error')); refresh(); } })),
      ...(entries.length ? entries.map(([id, e]) => historyRow(id, e)) : [h('div.panel-empty', { text: 'No runs yet' })])),
    );
  }

  return { refresh };
}
