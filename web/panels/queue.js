// The queue and history panel: the running and pending prompts (cancel), past runs with their images
// (open the run's workflow, delete), and clearing both.
import { h, timeAgo } from './dom.js';

export function createQueuePanel(container, { api, onLoadWorkflow, onImage, notify }) {
  let busy = false;

  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      const [queue, history] = await Promise.all([api.getQueue(), api.getHistory(50)]);
      render(queue, history);
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
    const status = entry.status?.status_str ?? (entry.status?.completed ? 'success' : 'unknown');
    const images = Object.values(entry.outputs ?? {}).flatMap((o) => o.images ?? []);
    const started = entry.status?.messages?.find((m) => m[0] === 'execution_start')?.[1]?.timestamp
      ?? entry.prompt?.[3]?.create_time;
    const urls = images.map((im) => api.viewUrl(im));
    return h(`div.h-item.${status}`, { dataset: { promptId: id } },
      h('div.h-head', {}, h('span.h-status', { text: status === 'success' ? '✓' : status === 'error' ? '✕' : '•',
        title: status }), h('span.h-id', { text: `#${entry.prompt?.[0] ?? ''} ${id.slice(0, 8)}`, title: id }),
      h('span.h-time', { text: started ? timeAgo(started) : '' })),
      urls.length ? h('div.h-thumbs', {}, ...urls.slice(0, 4).map((u, i) => h('img.h-thumb', { src: u, loading: 'lazy',
        alt: 'output', onclick: () => onImage(urls, i) }))) : null,
      h('div.h-actions', {},
        h('button.q-btn.h-load', { text: 'Load workflow', onclick: () => onLoadWorkflow(workflowOf(entry.prompt), id) }),
        h('button.q-btn.danger', { title: 'Delete from history', text: 'Delete', onclick: async () => {
          await api.deleteHistory([id]).catch((e) => notify(e.message, 'error'));
          refresh();
        } })));
  }

  function render(queue, history) {
    const running = queue?.queue_running ?? [];
    const pending = [...(queue?.queue_pending ?? [])].sort((a, b) => a[0] - b[0]);
    const entries = Object.entries(history ?? {}).reverse();
    container.replaceChildren(
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
