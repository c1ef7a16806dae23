// Keeps each open workflow's model suggestions current: when the checkpoint its loader names changes, asks the
// server for that model's metadata and card and stores suggestDefaults(...) on the document, where
// commands.createNode applies them to new latent and sampler nodes.

import { getWidgetValue } from '../graph/schema.js';
import { suggestDefaults } from './model_defaults.js';

const MODEL_WIDGETS = { ckpt_name: 'checkpoints', unet_name: 'diffusion_models' };

/** The first loaded model of a document: {folder, file} or null. */
export function loadedModel(doc) {
  for (const node of doc.graph.nodes.values()) {
    const def = doc.defs.get(node.type);
    const w = def?.widgets.find((x) => x.name in MODEL_WIDGETS);
    const file = w && getWidgetValue(node, w);
    if (file) return { folder: MODEL_WIDGETS[w.name], file };
  }
  return null;
}

/** @param c the controller context (controller.js) */
export function createModelHints(c) {
  const cache = new Map(); // "folder/file" -> Promise<suggestions>

  function fetchHints(folder, file) {
    const key = `${folder}/${file}`;
    if (!cache.has(key)) {
      cache.set(key, Promise.all([
        c.api.modelMetadata(folder, file).catch(() => null),
        c.api.request(`/chisel/model_card/${encodeURIComponent(folder)}?filename=${encodeURIComponent(file)}`)
          .then((r) => r.card).catch(() => null),
      ]).then(([meta, card]) => suggestDefaults(meta, card)));
    }
    return cache.get(key);
  }

  /** Refreshes `doc.modelDefaults` when its model changed (asynchronously; new nodes use what has arrived). */
  function update(doc) {
    if (!doc || c.deps.fixtures) return;
    const model = loadedModel(doc);
    const key = model ? `${model.folder}/${model.file}` : null;
    if (doc.modelDefaultsFor === key) return;
    doc.modelDefaultsFor = key;
    if (!model) {
      doc.modelDefaults = null;
      return;
    }
    fetchHints(model.folder, model.file).then((hints) => {
      if (doc.modelDefaultsFor === key) doc.modelDefaults = Object.keys(hints).length ? hints : null;
    });
  }

  return { update };
}
