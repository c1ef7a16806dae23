// Prints the editor's widget layout (the order of widgets_values) of every node in an /object_info JSON file:
// `node tests/web/widget_layout.mjs object_info.json` -> {"Node": ["image", "channel", "upload"], ...}; for a node
// with DynamicCombos, also {"Node#combo=option": [...]} for each option of each top-level combo.
// tests/web/test_widget_order.py compares it with the server's reading of widgets_values.
import { readFileSync } from 'node:fs';
import { buildNodeDef } from '../../web/graph/schema.js';

const info = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const out = {};
for (const [name, entry] of Object.entries(info)) {
  const def = buildNodeDef(name, entry);
  out[name] = def.widgets.map((w) => w.name);
  if (!def.layoutForNamed) continue;
  for (const w of def.widgets.filter((x) => x.dynamic)) {
    for (const key of w.choices) out[`${name}#${w.name}=${key}`] = def.layoutForNamed({ [w.name]: key }).map((x) => x.name);
  }
}
process.stdout.write(JSON.stringify(out));
