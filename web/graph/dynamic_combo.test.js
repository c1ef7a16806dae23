// A v3 DynamicCombo (ResizeImageMaskNode's resize_type): the stored values' layout follows the chosen option.
import test from 'node:test';
import assert from 'node:assert/strict';
import { buildNodeDef, normalizeWidgetValues, setWidgetValue, widgetsOf } from './schema.js';

const INT = (d) => ['INT', { default: d, min: 0, max: 16384, step: 1 }];
const CROP = ['COMBO', { default: 'center', options: ['disabled', 'center'] }];
const INFO = {
  input: { required: {
    input: ['COMFY_MATCHTYPE_V3', {}],
    resize_type: ['COMFY_DYNAMICCOMBO_V3', { options: [
      { key: 'scale by multiplier', inputs: { required: { multiplier: ['FLOAT', { default: 1.0, min: 0.01, max: 8 }] } } },
      { key: 'scale dimensions', inputs: { required: { width: INT(512), height: INT(512), crop: CROP } } },
      { key: 'match size', inputs: { required: { match: ['IMAGE,MASK', {}], crop: CROP } } },
    ] }],
    scale_method: ['COMBO', { default: 'area', options: ['nearest-exact', 'area', 'lanczos'] }],
  } },
  input_order: { required: ['input', 'resize_type', 'scale_method'] },
  output: ['COMFY_MATCHTYPE_V3'], category: 'transform',
};

test('a DynamicCombo\'s stored values are read in the layout of the option they chose', () => {
  const def = buildNodeDef('ResizeImageMaskNode', INFO);
  const defs = new Map([[def.name, def]]);
  assert.deepEqual(def.widgets.map((w) => w.name), ['resize_type', 'resize_type.multiplier', 'scale_method']);
  const node = { type: def.name, widgets_values: ['scale dimensions', 2048, 1024, 'center', 'lanczos'] };
  normalizeWidgetValues(node, def);
  const names = widgetsOf(node, defs).map((w) => w.name);
  assert.deepEqual(names, ['resize_type', 'resize_type.width', 'resize_type.height', 'resize_type.crop', 'scale_method']);
  assert.equal(widgetsOf(node, defs).find((w) => w.name === 'scale_method').valueIndex, 4);
});

test('choosing another option re-lays the values out: kept by name, new widgets at their defaults', () => {
  const def = buildNodeDef('ResizeImageMaskNode', INFO);
  const defs = new Map([[def.name, def]]);
  const node = { type: def.name, widgets_values: ['scale dimensions', 2048, 1024, 'disabled', 'lanczos'] };
  const combo = widgetsOf(node, defs)[0];
  setWidgetValue(node, combo, 'scale by multiplier');
  assert.deepEqual(node.widgets_values, ['scale by multiplier', 1.0, 'lanczos']);
  setWidgetValue(node, widgetsOf(node, defs)[0], 'match size');
  assert.deepEqual(node.widgets_values, ['match size', 'center', 'lanczos']);
  const named = { type: def.name, widgets_values: { resize_type: 'scale dimensions', 'resize_type.width': 64,
    scale_method: 'area' } };
  normalizeWidgetValues(named, def);
  assert.deepEqual(named.widgets_values, ['scale dimensions', 64, 512, 'center', 'area']);
});
