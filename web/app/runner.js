// Queueing a workflow, as ComfyUI does: send the current widget values, then move control_after_generate
// widgets on; batch count repeats that. Each run is one POST /prompt carrying the UI workflow: the server
// converts it to an API prompt (refusing with node_errors, as for validation), embeds it in saved images as
// extra_pnginfo.workflow, and answers with the prompt it queued.

import { applyControlAfterGenerate } from '../graph/control.js';
import { errorsFromNodeErrors } from './execution.js';

/** A refused run: the server's error plus per-node errors for the canvas. */
export class QueueError extends Error {
  constructor(message, { nodeErrors = new Map(), body = null } = {}) {
    super(message);
    this.name = 'QueueError';
    this.nodeErrors = nodeErrors;
    this.body = body;
  }
}

function queueErrorFrom(err) {
  const body = err.body;
  if (body && typeof body === 'object' && (body.error || body.node_errors)) {
    const e = body.error;
    const message = typeof e === 'string' ? e : [e?.message, e?.details].filter(Boolean).join(': ');
    return new QueueError(message || 'The server refused the workflow', {
      nodeErrors: errorsFromNodeErrors(body.node_errors), body });
  }
  return new QueueError(err.message);
}

/**
 * Queues `doc` `count` times. Returns [{prompt_id, number, prompt}]. On a refusal the doc's node errors are set
 * and a QueueError is thrown; runs queued before it stay queued. `targets`: run only these output nodes (ids).
 */
export async function queueWorkflow({ api, doc, tracker, front = false, count = 1, random = Math.random,
  targets = null }) {
  const queued = [];
  doc.exec.errors.clear();
  for (let i = 0; i < count; i++) {
    const workflow = doc.toWorkflow();
    let res;
    try {
      res = await api.queuePrompt({ workflow, front, ...(targets ? { targets } : {}) });
    } catch (err) {
      const qe = queueErrorFrom(err);
      doc.exec.errors = qe.nodeErrors;
      throw qe;
    }
    if (res?.node_errors && Object.keys(res.node_errors).length) doc.exec.errors = errorsFromNodeErrors(res.node_errors);
    const prompt = res?.prompt ?? {}; // the converted prompt the server queued
    tracker?.registerPrompt(res.prompt_id, doc, Object.keys(prompt));
    queued.push({ ...res, prompt });
    if (applyControlAfterGenerate(doc.graph, doc.defs, { random })) doc.checkpoint();
  }
  return queued;
}
