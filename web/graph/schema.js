// Node definitions from /object_info: which inputs are sockets and which are widgets, the widget list in
// ComfyUI's creation order (the order of `widgets_values`), defaults, and new-node construction.

/** Widget kinds. CONTROL is the control_after_generate combo that follows a seed; UPLOAD is LoadImage's button. */
export const WidgetKind = Object.freeze({
  INT: 'INT', FLOAT: 'FLOAT', STRING: 'STRING', BOOLEAN: 'BOOLEAN', COMBO: 'COMBO', CONTROL: 'CONTROL',
  UPLOAD: 'UPLOAD',
});

/** control_after_generate choices, applied after each queued run. */
export const CONTROL_VALUES = Object.freeze(['fixed', 'increment', 'decrement', 'randomize']);

const SCALAR_WIDGETS = new Set(['INT', 'FLOAT', 'STRING', 'BOOLEAN']);
const DYNAMIC_COMBO = 'COMFY_DYNAMICCOMBO_V3';

/** Splits one object_info input entry into {type, options, choices, widgetKind}. */
export function parseInputSpec(spec) {
  const [rawType, rawOptions] = Array.isArray(spec) ? spec : [spec, undefined];
  const options = rawOptions && typeof rawOptions === 'object' ? rawOptions : {};
  if (Array.isArray(rawType)) return { type: 'COMBO', options, choices: rawType, widgetKind: WidgetKind.COMBO };
  if (rawType === 'COMBO') {
    return { type: 'COMBO', options, choices: options.options ?? [], widgetKind: WidgetKind.COMBO };
  }
  if (rawType === DYNAMIC_COMBO) { // v3 DynamicCombo: a combo whose chosen option reveals more inputs
    const reveals = new Map((options.options ?? []).map((o) => [o.key, o.inputs ?? {}]));
    return { type: 'COMBO', options, choices: [...reveals.keys()], widgetKind: WidgetKind.COMBO, reveals };
  }
  const type = String(rawType);
  const widgetKind = SCALAR_WIDGETS.has(type) && !options.forceInput ? type : null;
  return { type, options, choices: null, widgetKind };
}

function defaultFor(kind, options, choices) {
  switch (kind) {
    case WidgetKind.INT:
    case WidgetKind.FLOAT: {
      // No default declared (ComfyUI's primitive nodes): 0, as ComfyUI's editor starts them, within the limits.
      let v = options.default ?? 0;
      if (options.min !== undefined) v = Math.max(v, options.min);
      if (options.max !== undefined) v = Math.min(v, options.max);
      return v;
    }
    case WidgetKind.STRING: return options.default ?? '';
    case WidgetKind.BOOLEAN: return options.default ?? false;
    case WidgetKind.COMBO: return options.default ?? (choices?.length ? choices[0] : '');
    case WidgetKind.CONTROL: return 'randomize';
    case WidgetKind.UPLOAD: return 'image';
    default: return null;
  }
}

/** Builds one node definition from an object_info entry. */
export function buildNodeDef(name, info) {
  const inputs = [];
  for (const section of ['required', 'optional']) {
    const entries = info.input?.[section] ?? {};
    const order = info.input_order?.[section] ?? Object.keys(entries);
    for (const inputName of order) {
      if (!(inputName in entries)) continue;
      const parsed = parseInputSpec(entries[inputName]);
      inputs.push({ name: inputName, optional: section === 'optional', ...parsed });
    }
  }
  const layouts = inputs.some((i) => i.reveals) ? dynamicLayouts(inputs) : null;
  const widgets = layouts ? layouts.layoutFor([]) : widgetSpecs(inputs);
  const outTypes = info.output ?? [];
  const outputs = outTypes.map((type, i) => ({
    name: info.output_name?.[i] ?? (Array.isArray(type) ? 'COMBO' : type),
    type: Array.isArray(type) ? 'COMBO' : type,
    isList: Boolean(info.output_is_list?.[i]),
    tooltip: info.output_tooltips?.[i],
  }));
  return {
    name,
    displayName: info.display_name || name,
    category: info.category || 'sd',
    description: info.description || '',
    aliases: info.search_aliases ?? [],
    outputNode: Boolean(info.output_node),
    /** The custom node pack that adds it ('' for core nodes): object_info's python_module custom_nodes.<pack>. */
    pack: String(info.python_module ?? '').startsWith('custom_nodes.') ? info.python_module.slice(13) : '',
    deprecated: Boolean(info.deprecated),
    experimental: Boolean(info.experimental),
    virtual: false,
    inputs,
    sockets: inputs.filter((i) => !i.widgetKind),
    widgets,
    outputs,
    // the widget list for stored values: a DynamicCombo's revealed widgets follow it (its default option's in
    // `widgets`); cached per chosen options
    ...layouts,
  };
}

/** The widgets of a flat input list, in ComfyUI's editor's order: each widget, control_after_generate after a
 * seed, and LoadImage's `upload` button after the last required widget (LoadImageMask: [image, channel,
 * upload]); the server reads widgets_values in the same layout (server/workflow.py). */
function widgetSpecs(inputs) {
  const uploadOf = inputs.find((i) => i.widgetKind && i.options.image_upload);
  const lastRequired = inputs.reduce((last, input, i) => (input.widgetKind && !input.optional ? i : last), -1);
  const widgets = [];
  const pushUpload = () => widgets.push({ name: 'upload', kind: WidgetKind.UPLOAD, options: {}, target: uploadOf.name,
    inPrompt: false, default: 'image' });
  if (uploadOf && lastRequired < 0) pushUpload();
  inputs.forEach((input, index) => {
    if (!input.widgetKind) return;
    widgets.push({
      name: input.name, kind: input.widgetKind, options: input.options, choices: input.choices,
      inputType: input.type, inPrompt: true,
      default: defaultFor(input.widgetKind, input.options, input.choices),
      ...(input.reveals ? { dynamic: true } : {}),
    });
    if (input.options.control_after_generate) {
      widgets.push({
        name: 'control_after_generate', kind: WidgetKind.CONTROL, options: {}, choices: CONTROL_VALUES,
        target: input.name, inPrompt: false, default: 'randomize',
      });
    }
    if (uploadOf && index === lastRequired) pushUpload();
  });
  widgets.forEach((w, i) => { w.valueIndex = i; });
  return widgets;
}

/** Inputs with each DynamicCombo followed by the widget inputs its chosen option reveals (named
 * "combo.input", as the server names them); `chosen(name, input)` gives an option key (default: the combo's). */
function revealedInputs(inputs, chosen, prefix = '') {
  const out = [];
  for (const input of inputs) {
    const name = prefix + input.name;
    out.push({ ...input, name });
    if (!input.reveals) continue;
    let key = chosen(name, input);
    if (!input.reveals.has(key)) key = input.options.default ?? input.choices[0];
    const revealed = [];
    for (const section of ['required', 'optional']) {
      for (const [n, spec] of Object.entries(input.reveals.get(key)?.[section] ?? {})) {
        revealed.push({ name: n, optional: section === 'optional', ...parseInputSpec(spec) });
      }
    }
    out.push(...revealedInputs(revealed.filter((i) => i.widgetKind), chosen, `${name}.`));
  }
  return out;
}

/** For a node with DynamicCombos: layoutFor(values) -> the widget list the stored values are laid out in (each
 * combo's stored option picks the widgets that follow it), layoutForNamed({name: value}) the same from named
 * values (an API prompt's inputs), and relayout(node, widget, value): a combo set to another option, the values
 * re-laid out by name (revealed widgets new to the node take their defaults). Layouts are cached per choice. */
function dynamicLayouts(inputs) {
  const cache = new Map();
  const layoutOf = (choice) => {
    const key = [...choice].map(([k, v]) => `${k}=${v}`).join('|');
    if (!cache.has(key)) {
      const layout = widgetSpecs(revealedInputs(inputs, (name) => choice.get(name)));
      for (const w of layout) if (w.dynamic) w.relayout = relayout;
      cache.set(key, layout);
    }
    return cache.get(key);
  };
  const settle = (valueOf) => {
    const choice = new Map();
    for (let guard = 0; guard < 16; guard++) { // earlier combos' options move later combos' positions
      const layout = layoutOf(choice);
      const w = layout.find((x) => x.dynamic && x.choices.includes(valueOf(x)) && choice.get(x.name) !== valueOf(x));
      if (!w) return layout;
      choice.set(w.name, valueOf(w));
    }
    return layoutOf(choice);
  };
  const layoutFor = (values = []) => settle((w) => values?.[w.valueIndex]);
  const layoutForNamed = (named = {}) => settle((w) => named[w.name]);
  function relayout(node, widget, value) {
    const values = node.widgets_values ?? [];
    const named = new Map(layoutFor(values).map((w) => [w.name, values[w.valueIndex]]));
    named.set(widget.name, value);
    const next = settle((w) => named.get(w.name));
    node.widgets_values = next.map((w) => (named.has(w.name) && named.get(w.name) !== undefined ? named.get(w.name)
      : w.default));
  }
  return { layoutFor, layoutForNamed };
}

/** Front-end-only nodes that ComfyUI workflows contain; the converter drops them from the API prompt. */
export function virtualNodeDefs() {
  const base = { description: '', aliases: [], outputNode: false, deprecated: false, experimental: false,
    virtual: true };
  const text = (name) => ({ name, kind: WidgetKind.STRING, options: { multiline: true }, choices: null,
    inputType: 'STRING', inPrompt: false, default: '', valueIndex: 0 });
  return [
    { ...base, name: 'Reroute', displayName: 'Reroute', category: 'utils', inputs: [{ name: '', type: '*' }],
      sockets: [{ name: '', type: '*' }], widgets: [], outputs: [{ name: '', type: '*', isList: false }] },
    { ...base, name: 'Note', displayName: 'Note', category: 'utils', inputs: [], sockets: [], outputs: [],
      widgets: [text('text')] },
    { ...base, name: 'MarkdownNote', displayName: 'Markdown Note', category: 'utils', inputs: [], sockets: [],
      outputs: [], widgets: [text('text')] },
    { ...base, name: 'PrimitiveNode', displayName: 'Primitive', category: 'utils', inputs: [], sockets: [],
      outputs: [{ name: 'connect to widget input', type: '*', isList: false }], widgets: [], primitive: true },
  ];
}

/** All definitions by class name: object_info entries plus the virtual front-end nodes. */
export function buildNodeDefs(objectInfo) {
  const defs = new Map();
  for (const def of virtualNodeDefs()) defs.set(def.name, def);
  for (const [name, info] of Object.entries(objectInfo ?? {})) defs.set(name, buildNodeDef(name, info));
  return defs;
}

/** The widget list of one node. A PrimitiveNode takes the widget of the input it feeds (plus a control combo
 * for numbers and combos, as ComfyUI does). */
export function widgetsOf(node, defs, graph) {
  const def = defs.get(node.type);
  if (!def) return [];
  if (!def.primitive) return def.layoutFor ? def.layoutFor(node.widgets_values) : def.widgets;
  const target = primitiveTarget(node, defs, graph);
  if (!target) return [];
  const value = { ...target, name: 'value', valueIndex: 0, inPrompt: true };
  const out = [value];
  if (target.kind === WidgetKind.INT || target.kind === WidgetKind.FLOAT || target.kind === WidgetKind.COMBO) {
    out.push({ name: 'control_after_generate', kind: WidgetKind.CONTROL, options: {}, choices: CONTROL_VALUES,
      target: 'value', inPrompt: false, default: 'fixed', valueIndex: 1 });
  }
  return out;
}

function primitiveTarget(node, defs, graph) {
  for (const lid of node.outputs[0]?.links ?? []) {
    const link = graph?.links.get(lid);
    const targetNode = link && graph.getNode(link.target_id);
    const input = targetNode?.inputs[link.target_slot];
    const widgetName = input?.widget?.name;
    const spec = widgetName && defs.get(targetNode.type)?.widgets.find((w) => w.name === widgetName);
    if (spec) return spec;
  }
  return null;
}

/** Rewrites a loaded node's widgets_values into the array form the editor works with: an object (or the
 * newer widgets_values_named) becomes an array in widget order; old boolean control values become strings;
 * values missing at the end (inputs added since the file was saved) get their defaults. */
export function normalizeWidgetValues(node, def) {
  if (!def) return;
  let values = node.widgets_values;
  const named = node.widgets_values_named;
  if ((!Array.isArray(values) || values.length === 0) && named && typeof named === 'object') values = named;
  if (values && !Array.isArray(values) && typeof values === 'object') {
    const named = values;
    values = (def.layoutForNamed?.(named) ?? def.widgets).map((w) => (w.name in named ? named[w.name] : w.default));
  }
  values = Array.isArray(values) ? [...values] : [];
  for (const w of def.layoutFor?.(values) ?? def.widgets) {
    if (w.kind === WidgetKind.CONTROL && typeof values[w.valueIndex] === 'boolean') {
      values[w.valueIndex] = values[w.valueIndex] ? 'randomize' : 'fixed';
    }
    if (values.length <= w.valueIndex) values[w.valueIndex] = w.default;
  }
  node.widgets_values = values;
}

/** Widget values by name (what ComfyUI 1.58 writes as widgets_values_named). */
export function namedWidgetValues(node, widgets) {
  const out = {};
  for (const w of widgets) {
    if (w.kind === WidgetKind.UPLOAD) continue;
    const v = node.widgets_values?.[w.valueIndex];
    if (v !== undefined) out[w.name] = v;
  }
  return out;
}

export function getWidgetValue(node, widget) {
  const v = node.widgets_values?.[widget.valueIndex];
  return v === undefined ? widget.default : v;
}

export function setWidgetValue(node, widget, value) {
  if (!Array.isArray(node.widgets_values)) node.widgets_values = [];
  if (widget.relayout) widget.relayout(node, widget, value); // a DynamicCombo: the widgets after it follow it
  else node.widgets_values[widget.valueIndex] = value;
}

/** Fields of a fresh node of this definition (size is left to the view's layout). */
export function newNodeFields(def, pos) {
  return {
    type: def.name,
    pos: [pos[0], pos[1]],
    inputs: def.sockets.map((s) => ({ name: s.name, type: s.type, link: null, ...(s.optional ? { shape: 7 } : {}) })),
    outputs: def.outputs.map((o, i) => ({ name: o.name, type: o.type, links: [], slot_index: i,
      ...(o.isList ? { shape: 6 } : {}) })),
    properties: def.virtual ? {} : { 'Node name for S&R': def.name },
    widgets_values: def.widgets.map((w) => w.default),
  };
}

/** The widget a widget input (inputs[i].widget.name) stands for. */
export function widgetForInput(def, input) {
  if (!def || !input?.widget) return null;
  return def.widgets.find((w) => w.name === input.widget.name) ?? null;
}
