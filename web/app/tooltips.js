// What a tooltip over the canvas says: the node's description over its title, an input's or widget's tooltip
// from /object_info (with its type and range), an output's tooltip. Pure: hit (canvas/hit.js) + defs -> text.

import { Hit } from '../canvas/hit.js';
import { widgetForInput } from '../graph/schema.js';

function range(o) {
  if (o.min === undefined && o.max === undefined) return '';
  return ` (${o.min ?? '−∞'} to ${o.max ?? '∞'}${o.step !== undefined ? `, step ${o.step}` : ''})`;
}

/** {title, text} for what lies under the pointer, or null when there is nothing to say. */
export function tooltipFor(hit, defs) {
  if (!hit?.node) return null;
  const def = defs.get(hit.node.type);
  if (!def) return hit.kind === Hit.TITLE ? { title: hit.node.type, text: 'This node type is not installed.' } : null;
  switch (hit.kind) {
    case Hit.TITLE:
      return def.description ? { title: def.displayName, text: def.description } : null;
    case Hit.INPUT: {
      const inp = hit.node.inputs[hit.slot];
      const spec = def.inputs.find((i) => i.name === inp?.name) ?? widgetForInput(def, inp);
      const tip = spec?.options?.tooltip;
      return { title: `${inp.label ?? inp.name}: ${inp.type}`, text: tip ?? (spec?.optional ? 'Optional input.' : '') };
    }
    case Hit.WIDGET: {
      const w = hit.widget;
      const spec = def.inputs.find((i) => i.name === (w.target ?? w.name));
      const tip = w.kind === 'CONTROL' ? 'What happens to the value after each queued run.' : spec?.options?.tooltip;
      if (!tip) return null;
      return { title: `${w.name}${spec && w.kind !== 'CONTROL' ? `: ${spec.type}${range(spec.options)}` : ''}`, text: tip };
    }
    case Hit.OUTPUT: {
      const out = def.outputs[hit.slot];
      if (!out) return null;
      return { title: `${out.name}: ${out.type}`, text: out.tooltip ?? '' };
    }
    default:
      return null;
  }
}
