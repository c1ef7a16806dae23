// Prints the workflow Chisel's editor saves after turning txt2img's encoders and sampler into a subgraph, promoting
// the sampler's seed and the positive prompt, and setting them on the instance (web/subgraph/, run under Node).
// tests/compat/test_subgraphs_frontend.py loads it into ComfyUI's own frontend.
import { loadWorkflow, saveWorkflow } from '../../web/graph/serialize.js';
import { setWidgetValue, widgetsOf } from '../../web/graph/schema.js';
import { fixtureDefs, readFixture } from '../../web/test/fixtures.js';
import { convertToSubgraph } from '../../web/subgraph/convert.js';
import { definitionGraph, findDefinition, toDefinition } from '../../web/subgraph/definition.js';
import { promoteWidget, syncInstances } from '../../web/subgraph/io.js';

const defs = fixtureDefs();
const graph = loadWorkflow(readFixture('default_workflow.json'), { defs });
const { definition, instance } = convertToSubgraph(graph, [6, 7, 3], defs, { name: 'Encode and sample' });
const inner = definitionGraph(definition, defs);
for (const [id, name] of [[3, 'seed'], [6, 'text']]) {
  promoteWidget(inner, id, widgetsOf(inner.getNode(id), defs, inner).find((w) => w.name === name));
}
const after = toDefinition(inner, definition, defs);
const def = syncInstances(graph, definition, after, defs);
Object.assign(findDefinition(graph, definition.id), after);
setWidgetValue(instance, def.widgets.find((w) => w.name === 'seed'), 4321);
setWidgetValue(instance, def.widgets.find((w) => w.name === 'text'), 'a blue square');
process.stdout.write(JSON.stringify(saveWorkflow(graph, { defs })));
