import test from 'node:test';
import assert from 'node:assert/strict';
import { buildNodeDef, newNodeFields, normalizeWidgetValues, parseInputSpec, WidgetKind, widgetsOf } from './schema.js';
import { fixtureDefs, readFixture } from '../test/fixtures.js';

const info = readFixture('object_info.json');

test('KSampler widgets follow input_order with control_after_generate right after seed', () => {
  const def = buildNodeDef('KSampler', info.KSampler);
  assert.deepEqual(def.widgets.map((w) => w.name),
    ['seed', 'control_after_generate', 'steps', 'cfg', 'sampler_name', 'scheduler', 'denoise']);
  assert.deepEqual(def.sockets.map((s) => s.name), ['model', 'positive', 'negative', 'latent_image']);
  assert.deepEqual(def.widgets.map((w) => w.valueIndex), [0, 1, 2, 3, 4, 5, 6]);
  assert.equal(def.widgets[1].kind, WidgetKind.CONTROL);
  assert.equal(def.widgets[1].target, 'seed');
});

test('a new KSampler gets ComfyUI\'s default widget values', () => {
  const def = buildNodeDef('KSampler', info.KSampler);
  const fields = newNodeFields(def, [0, 0]);
  assert.deepEqual(fields.widgets_values, [0, 'randomize', 20, 8, 'euler', 'simple', 1]);
  assert.deepEqual(fields.inputs.map((i) => i.type), ['MODEL', 'CONDITIONING', 'CONDITIONING', 'LATENT']);
  assert.deepEqual(fields.outputs, [{ name: 'LATENT', type: 'LATENT', links: [], slot_index: 0 }]);
});

test('combo inputs come as a bare list or as ["COMBO", {options}]', () => {
  assert.deepEqual(parseInputSpec([['a', 'b'], {}]).choices, ['a', 'b']);
  const v3 = parseInputSpec(['COMBO', { options: ['x', 'y'], default: 'y' }]);
  assert.equal(v3.widgetKind, WidgetKind.COMBO);
  assert.deepEqual(v3.choices, ['x', 'y']);
  const def = buildNodeDef('ImageFlip', info.ImageFlip);
  assert.equal(def.widgets[0].default, 'x-axis: vertically');
});

test('forceInput turns a scalar into a socket', () => {
  assert.equal(parseInputSpec(['INT', { forceInput: true }]).widgetKind, null);
  assert.equal(parseInputSpec(['FLOAT', {}]).widgetKind, WidgetKind.FLOAT);
});

test('LoadImage has an upload widget after the image combo', () => {
  const def = buildNodeDef('LoadImage', info.LoadImage);
  assert.deepEqual(def.widgets.map((w) => [w.name, w.kind]), [['image', 'COMBO'], ['upload', 'UPLOAD']]);
});

test('old boolean control values and missing trailing values are normalised', () => {
  const defs = fixtureDefs();
  const node = { type: 'KSampler', widgets_values: [42, true, 20, 8, 'euler', 'normal'] };
  normalizeWidgetValues(node, defs.get('KSampler'));
  assert.deepEqual(node.widgets_values, [42, 'randomize', 20, 8, 'euler', 'normal', 1]);
});

test('widgets_values given by name (object or widgets_values_named) become an ordered array', () => {
  const defs = fixtureDefs();
  const node = { type: 'EmptyLatentImage', widgets_values_named: { height: 768, width: 640, batch_size: 2 } };
  normalizeWidgetValues(node, defs.get('EmptyLatentImage'));
  assert.deepEqual(node.widgets_values, [640, 768, 2]);
  const dict = { type: 'EmptyLatentImage', widgets_values: { width: 320 } };
  normalizeWidgetValues(dict, defs.get('EmptyLatentImage'));
  assert.deepEqual(dict.widgets_values, [320, 512, 1]);
});

test('virtual front-end nodes are defined (Reroute, Note, PrimitiveNode)', () => {
  const defs = fixtureDefs();
  assert.ok(defs.get('Reroute').virtual);
  assert.equal(defs.get('Note').widgets[0].name, 'text');
  assert.equal(defs.get('PrimitiveNode').outputs[0].type, '*');
});

test('a PrimitiveNode takes the widget of the input it feeds, with a control combo for numbers', async () => {
  const { Graph } = await import('./model.js');
  const defs = fixtureDefs();
  const g = new Graph();
  const prim = g.addNode({ type: 'PrimitiveNode', outputs: [{ name: 'connect to widget input', type: '*' }],
    widgets_values: [7, 'fixed'] });
  const ks = g.addNode(newNodeFields(defs.get('KSampler'), [0, 0]));
  const slot = g.widgetInputSlot(ks.id, 'steps', 'INT');
  g.connect(prim.id, 0, ks.id, slot);
  const widgets = widgetsOf(prim, defs, g);
  assert.deepEqual(widgets.map((w) => [w.name, w.kind]), [['value', 'INT'], ['control_after_generate', 'CONTROL']]);
  assert.equal(widgets[0].options.max, 10000);
});

test('numbers without a declared default start at 0 within their limits, and INTs step by 1 without a step', () => {
  const def = buildNodeDef('PrimitiveInt', {
    input: { required: { value: ['INT', { min: -9223372036854775807, max: 9223372036854775807,
      control_after_generate: true }] } },
    input_order: { required: ['value'] }, output: ['INT'], output_name: ['INT'],
  });
  assert.deepEqual(def.widgets.map((w) => [w.name, w.default]), [['value', 0], ['control_after_generate', 'randomize']]);
  const positive = buildNodeDef('N', { input: { required: { n: ['INT', { min: 1, max: 9 }], f: ['FLOAT', { max: -2 }],
    s: ['STRING', { multiline: false }], b: ['BOOLEAN', {}] } } });
  assert.deepEqual(positive.widgets.map((w) => w.default), [1, -2, '', false]);
});
