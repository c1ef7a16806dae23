// Fuzzy node search: substring matches first, then in-order character matches that favour word starts
// and runs; optional filtering by the slot type a dragged link carries.

import { typesCompatible } from '../graph/model.js';

function isWordStart(text, i) {
  return i === 0 || /[\s_\-/().]/.test(text[i - 1]) || (/[a-z]/.test(text[i - 1]) && /[A-Z]/.test(text[i]));
}

/** Score of one query word against a text (higher is better), or null when it does not match. */
export function fuzzyScore(word, text) {
  const q = word.toLowerCase();
  const lower = text.toLowerCase();
  if (!q) return 0;
  const at = lower.indexOf(q);
  if (at >= 0) return 1000 - at * 2 - (lower.length - q.length) * 0.5 + (at === 0 ? 200 : 0)
    + (isWordStart(text, at) ? 100 : 0);
  let score = 0;
  let from = 0;
  let prev = -2;
  for (const ch of q) {
    const i = lower.indexOf(ch, from);
    if (i < 0) return null;
    score += i === prev + 1 ? 15 : isWordStart(text, i) ? 10 : 1;
    prev = i;
    from = i + 1;
  }
  return score - lower.length * 0.1;
}

function fieldsOf(def) {
  return [[def.displayName, 1], [def.name, 0.9], ...def.aliases.map((a) => [a, 0.8]), [def.category, 0.3]];
}

/** Whether the definition can take (`inputType`) or give (`outputType`) a link of that type. */
export function acceptsType(def, { inputType, outputType }) {
  if (inputType) {
    const socket = def.sockets.some((s) => typesCompatible(inputType, s.type));
    const widget = inputType !== '*' && def.widgets.some((w) => w.inputType && typesCompatible(inputType, w.inputType));
    if (!socket && !widget) return false;
  }
  if (outputType && !def.outputs.some((o) => typesCompatible(o.type, outputType))) return false;
  return true;
}

/** Definitions matching the query (every word must match some field), best first. */
export function searchNodes(defs, query, { inputType = null, outputType = null, limit = 50 } = {}) {
  const words = query.trim().split(/\s+/).filter(Boolean);
  const results = [];
  for (const def of defs.values()) {
    if (!acceptsType(def, { inputType, outputType })) continue;
    if ((def.deprecated && !words.length) || def.subgraph || def.subgraphIO) continue; // subgraphs: per workflow
    let total = 0;
    let ok = true;
    for (const w of words) {
      let best = null;
      for (const [text, weight] of fieldsOf(def)) {
        const s = fuzzyScore(w, text);
        if (s !== null && (best === null || s * weight > best)) best = s * weight;
      }
      if (best === null) { ok = false; break; }
      total += best;
    }
    if (!ok) continue;
    if (def.deprecated) total -= 500;
    results.push({ def, score: total });
  }
  results.sort((a, b) => b.score - a.score || a.def.displayName.localeCompare(b.def.displayName));
  return results.slice(0, limit).map((r) => r.def);
}

/** Definitions as a category tree: {children: Map(name -> tree), defs: [def]} (for the right-click menu). */
export function categoryTree(defs) {
  const root = { children: new Map(), defs: [] };
  for (const def of defs.values()) {
    if (def.deprecated || def.subgraph || def.subgraphIO) continue;
    let node = root;
    for (const part of def.category.split('/').filter(Boolean)) {
      if (!node.children.has(part)) node.children.set(part, { children: new Map(), defs: [] });
      node = node.children.get(part);
    }
    node.defs.push(def);
  }
  return root;
}
