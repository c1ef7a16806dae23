// Run controls and progress in the top bar: Queue (with batch count and queue-front), interrupt,
// the overall and current-node progress, queue size and connection state.
import { h } from './dom.js';

export function createRunBar(container, { onQueue, onInterrupt }) {
  const count = h('input.batch-count', { type: 'number', min: '1', max: '100', value: '1', title: 'Batch count' });
  const queueBtn = h('button.queue-button.primary', { title: 'Queue (Ctrl+Enter)', onclick: (e) => onQueue({
    front: e.shiftKey, count: batchCount() }) }, 'Queue');
  const frontBtn = h('button.queue-front', { title: 'Queue at the front (Ctrl+Shift+Enter)',
    onclick: () => onQueue({ front: true, count: batchCount() }) }, '⤒');
  const stopBtn = h('button.interrupt', { title: 'Interrupt (Ctrl+Alt+Enter)', onclick: onInterrupt }, '■');
  const badge = h('span.queue-badge', { title: 'Prompts in the queue' }, '0');
  const bar = h('div.progress-overall', {}, h('div.progress-fill'));
  const label = h('span.progress-label');
  const dot = h('span.conn-dot', { title: 'Connecting…' });
  container.replaceChildren(h('div.progress-box', {}, bar, label), dot, badge, count, queueBtn, frontBtn, stopBtn);

  function batchCount() {
    return Math.max(1, Math.min(100, Math.round(Number(count.value) || 1)));
  }

  return {
    batchCount,
    setQueue(n) {
      badge.textContent = String(n);
      badge.classList.toggle('busy', n > 0);
    },
    setConnected(ok) {
      dot.classList.toggle('ok', ok);
      dot.title = ok ? 'Connected' : 'Disconnected — reconnecting…';
    },
    /** p = {overall, nodeFraction, nodeTitle} or null when idle. */
    setProgress(p) {
      const fill = bar.firstChild;
      if (!p) {
        fill.style.width = '0%';
        label.textContent = '';
        container.classList.remove('running');
        return;
      }
      container.classList.add('running');
      fill.style.width = `${Math.round((p.overall ?? p.nodeFraction) * 100)}%`;
      label.textContent = `${p.nodeTitle ?? ''} ${Math.round(p.nodeFraction * 100)}%`
        + (p.overall !== null && p.overall !== undefined ? ` · total ${Math.round(p.overall * 100)}%` : '');
    },
  };
}
