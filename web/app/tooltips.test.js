import test from 'node:test';
import assert from 'node:assert/strict';
import { buildNodeDefs } from '../graph/schema.js';
import { Hit } from '../canvas/hit.js';
import { tooltipFor } from './tooltips.js';

const defs = buildNodeDefs({
  KSampler: {
    input: { required: {
      model: ['MODEL', { tooltip: 'The model used for denoising.' }],
      cfg: ['FLOAT', { default: 8, min: 0, max: 100, step: 0.1, tooltip: 'Classifier-free guidance scale.' }],
    } },
    input_order: { required: ['model', 'cfg'] },
    output: ['LATENT'], output_name: ['LATENT'], output_tooltips: ['The denoised latent.'],
    description: 'Uses the provided model to denoise the latent.', display_name: 'KSampler', category: 'sampling',
  },
});
const node = { type: 'KSampler', inputs: [{ name: 'model', type: 'MODEL', link: null }], outputs: [] };

test('an input shows its object_info tooltip, a widget its range, the title the description', () => {
  assert.deepEqual(tooltipFor({ kind: Hit.INPUT, node, slot: 0 }, defs),
    { title: 'model: MODEL', text: 'The model used for denoising.' });
  const cfg = defs.get('KSampler').widgets[0];
  const w = tooltipFor({ kind: Hit.WIDGET, node, widget: cfg }, defs);
  assert.equal(w.text, 'Classifier-free guidance scale.');
  assert.match(w.title, /cfg: FLOAT \(0 to 100, step 0.1\)/);
  assert.equal(tooltipFor({ kind: Hit.TITLE, node }, defs).text, 'Uses the provided model to denoise the latent.');
  assert.equal(tooltipFor({ kind: Hit.OUTPUT, node, slot: 0 }, defs).text, 'The denoised latent.');
  assert.equal(tooltipFor({ kind: Hit.NONE }, defs), null);
});
