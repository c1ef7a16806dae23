// Turns the server's execution messages into what the tabs show: the running node and its progress, overall
// progress, result images on output nodes, inspection panels (inspect.js), latent previews, validation and
// execution errors on nodes.

import { normId } from '../graph/model.js';
import { parseInspect } from './inspect.js';

/** Per-node errors from a /prompt or /workflow/convert 400 body: Map(node id -> {inputs, messages}). */
export function errorsFromNodeErrors(nodeErrors) {
  const out = new Map();
  for (const [id, entry] of Object.entries(nodeErrors ?? {})) {
    const inputs = new Set();
    const messages = [];
    for (const err of entry.errors ?? []) {
      const input = err.extra_info?.input_name;
      if (input) inputs.add(input);
      messages.push(err.details ? `${err.message}: ${err.details}` : err.message);
    }
    out.set(normId(id), { inputs, messages, classType: entry.class_type });
  }
  return out;
}

/**
 * @param {object} deps docs() -> open WorkflowDocs, active() -> the shown doc, onChange(kind, detail),
 *   createUrl(blob) / revokeUrl(url) for previews (URL.createObjectURL in the browser).
 */
export function createExecutionTracker({ docs, active, onChange = () => {}, createUrl, revokeUrl }) {
  const prompts = new Map(); // prompt id -> {docKey, total, done: Set}
  let current = null; // {promptId, node, value, max}
  let queueRemaining = 0;

  const docFor = (promptId) => {
    const key = prompts.get(promptId)?.docKey;
    return docs().find((d) => d.key === key) ?? null;
  };

  function registerPrompt(promptId, doc, nodeIds) {
    prompts.set(promptId, { docKey: doc.key, total: nodeIds.length, done: new Set() });
    doc.exec.promptIds.add(promptId);
  }

  /** Claims a prompt that was not queued from this page (e.g. after a reload) for a doc. */
  function adoptPrompt(promptId, doc, total = 0) {
    if (!prompts.has(promptId)) registerPrompt(promptId, doc, new Array(total).fill(0));
  }

  /** Shows a node's result (an executed message's output or a history entry's): its images and its inspection
   * panel. Returns whether there was anything to show. */
  function showOutput(doc, node, output) {
    const images = output?.images ?? output?.gifs ?? [];
    const panel = parseInspect(output, doc.exec.panels.get(node));
    if (images.length) doc.exec.outputs.set(node, images);
    if (panel) doc.exec.panels.set(node, panel);
    return images.length > 0 || panel !== null;
  }

  function clearRunning(doc) {
    if (!doc) return;
    doc.exec.running = null;
    doc.exec.progress.clear();
    for (const url of doc.exec.previews.values()) revokeUrl?.(url);
    doc.exec.previews.clear();
  }

  function handle({ type, data }) {
    const pid = data?.prompt_id;
    if (type === 'status') {
      queueRemaining = data?.status?.exec_info?.queue_remaining ?? queueRemaining;
      onChange('queue', { queueRemaining });
      return;
    }
    if (pid && !prompts.has(pid) && active()) adoptPrompt(pid, active());
    const doc = pid ? docFor(pid) : null;
    const info = prompts.get(pid);
    switch (type) {
      case 'execution_start':
        current = { promptId: pid, node: null, value: 0, max: 1 };
        if (doc) { doc.exec.errors.clear(); clearRunning(doc); }
        break;
      case 'execution_cached':
        for (const n of data.nodes ?? []) info?.done.add(String(n));
        break;
      case 'executing': {
        const node = data.display_node ?? data.node;
        if (doc && doc.exec.running !== null) info?.done.add(String(doc.exec.running));
        if (node === null || node === undefined) {
          clearRunning(doc);
          current = null;
          onChange('done', { promptId: pid });
        } else {
          current = { promptId: pid, node: normId(node), value: 0, max: 1 };
          if (doc) { doc.exec.running = normId(node); doc.exec.progress.set(normId(node), 0); }
        }
        break;
      }
      case 'progress':
        if (current) Object.assign(current, { value: data.value, max: data.max });
        if (doc) doc.exec.progress.set(normId(data.node ?? current?.node), data.value / Math.max(1, data.max));
        break;
      case 'executed': {
        const node = normId(data.display_node ?? data.node);
        info?.done.add(String(node));
        if (doc && showOutput(doc, node, data.output)) onChange('output', { doc, nodeId: node });
        if (doc && doc.exec.previews.has(node)) { revokeUrl?.(doc.exec.previews.get(node)); doc.exec.previews.delete(node); }
        break;
      }
      case 'execution_error':
        if (doc) {
          doc.exec.errors.set(normId(data.node_id), { inputs: new Set(), messages: [
            `${data.exception_type ? `${data.exception_type}: ` : ''}${data.exception_message}`] });
          clearRunning(doc);
        }
        current = null;
        onChange('error', { promptId: pid, doc, ...data });
        break;
      case 'execution_interrupted':
        clearRunning(doc);
        current = null;
        onChange('interrupted', { promptId: pid });
        break;
      case 'execution_success':
        clearRunning(doc);
        onChange('success', { promptId: pid });
        break;
      default:
        return;
    }
    onChange('progress', progress());
  }

  /** A latent preview frame (decoded binary message) shown on its node, or on the running node. */
  function handlePreview(msg) {
    const pid = msg.meta?.prompt_id ?? current?.promptId;
    const doc = pid ? docFor(pid) : null;
    const nodeId = normId(msg.meta?.display_node_id ?? msg.meta?.node_id ?? current?.node);
    if (!doc || nodeId === undefined || nodeId === null || !createUrl) return;
    const old = doc.exec.previews.get(nodeId);
    if (old) revokeUrl?.(old);
    doc.exec.previews.set(nodeId, createUrl(new Blob([msg.image], { type: msg.mime })));
    onChange('preview', { doc, nodeId });
  }

  /** {promptId, node, nodeFraction, overall} of the running prompt, or null. */
  function progress() {
    if (!current) return null;
    const info = prompts.get(current.promptId);
    const nodeFraction = current.max ? current.value / current.max : 0;
    const total = info?.total ?? 0;
    const overall = total ? Math.min(1, (info.done.size + nodeFraction) / total) : null;
    return { promptId: current.promptId, node: current.node, nodeFraction, overall };
  }

  return {
    registerPrompt, adoptPrompt, handle, handlePreview, progress, showOutput,
    get queueRemaining() { return queueRemaining; },
    get running() { return current; },
    /** Forgets the running state (the prompt finished while the socket was down). */
    finish(promptId) {
      if (current?.promptId === promptId) current = null;
      clearRunning(docFor(promptId));
      onChange('progress', progress());
    },
  };
}
