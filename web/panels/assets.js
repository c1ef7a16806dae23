// The assets panel: past runs (GET /history) as an image grid, each with its prompt text, duration and status;
// a click opens the lightbox (zoom, compare), two picked images open side by side under a compare slider, Rerun
// queues the same prompt again and Open loads the run's workflow into a tab.
import { formatDuration, rerunRequest, runSummaries, STATUS_MARK, togglePick } from '../app/runs.js';
import { h, timeAgo } from './dom.js';

/**
 * @param deps {api, lightbox: {open(urls, i, {comparing})}, onLoadWorkflow(workflow, id), onQueued(res),
 *   notify(msg, kind)}
 */
export function createAssetsPanel(container, { api, lightbox, onLoadWorkflow, onQueued, notify }) {
  let runs = [];
  let picked = []; // image keys "runId/index"
  let busy = false;

  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      runs = runSummaries(await api.getHistory(100));
      const keys = new Set(runs.flatMap((r) => r.images.map((_, i) => `${r.id}/${i}`)));
      picked = picked.filter((k) => keys.has(k));
      render();
    } catch (e) {
      container.replaceChildren(h('div.panel-empty', { text: `Cannot read the history: ${e.message}` }));
    } finally {
      busy = false;
    }
  }

  const imageOf = (key) => {
    const cut = key.lastIndexOf('/');
    const run = runs.find((r) => r.id === key.slice(0, cut));
    const image = run?.images[Number(key.slice(cut + 1))];
    return image && { run, image, url: api.viewUrl(image) };
  };

  function compare() {
    const [a, b] = picked.map(imageOf);
    if (!a || !b) return;
    lightbox.open([a.url, b.url], 1, { comparing: true }); // compare mode shows the previous image under this one
  }

  async function rerun(run) {
    try {
      const res = await api.queuePrompt(rerunRequest(run));
      notify?.(`Queued run #${run.number ?? ''} again`, 'success');
      onQueued?.(res);
    } catch (e) {
      notify?.(`Rerun failed: ${e.message}`, 'error');
    }
  }

  function thumb(run, image, i, urls) {
    const key = `${run.id}/${i}`;
    const on = picked.includes(key);
    return h(`div.asset-thumb${on ? '.picked' : ''}`, { dataset: { key }, title: image.filename,
      onclick: () => lightbox.open(urls, i) },
    h('img', { src: urls[i], loading: 'lazy', alt: image.filename }),
    h('input.asset-pick', { type: 'checkbox', checked: on, title: 'Pick for comparing (two)',
      onclick: (e) => { e.stopPropagation(); picked = togglePick(picked, key); render(); } }));
  }

  function card(run) {
    const urls = run.images.map((im) => api.viewUrl(im));
    return h(`div.asset-run.${run.status}`, { dataset: { promptId: run.id } },
      h('div.asset-meta', {},
        h('span.asset-status', { text: STATUS_MARK[run.status] ?? '•', title: run.status }),
        h('span.asset-number', { text: `#${run.number ?? ''}`, title: run.id }),
        h('span.asset-when', { text: run.finishedAt ? timeAgo(run.finishedAt) : '' }),
        h('span.asset-duration', { text: formatDuration(run.durationMs), title: 'Run time' })),
      run.text ? h('div.asset-text', { text: run.text, title: run.text }) : null,
      urls.length ? h('div.asset-grid', {}, ...run.images.map((im, i) => thumb(run, im, i, urls))) : null,
      h('div.asset-actions', {},
        h('button.q-btn.asset-rerun', { text: 'Rerun', title: 'Queue this prompt again', onclick: () => rerun(run) }),
        h('button.q-btn.asset-open', { text: 'Open', title: 'Open the run\'s workflow in a tab',
          onclick: () => onLoadWorkflow(run.workflow, run.id) })));
  }

  function render() {
    const head = h('div.assets-head', {},
      h('span.assets-title', { text: `Assets (${runs.length} run${runs.length === 1 ? '' : 's'})` }),
      h('button.q-btn.assets-compare', { disabled: picked.length !== 2, onclick: compare,
        text: picked.length === 2 ? 'Compare 2' : `Pick 2 to compare (${picked.length})` }),
      h('button.q-btn.assets-refresh', { text: '↻', title: 'Refresh', onclick: refresh }));
    container.replaceChildren(h('div.assets', {}, head,
      ...(runs.length ? runs.map(card) : [h('div.panel-empty', { text: 'No runs yet' })])));
  }

  return { refresh, get picked() { return [...picked]; } };
}
