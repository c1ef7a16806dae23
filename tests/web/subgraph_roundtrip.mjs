// Loads each workflow given (tests/fixtures/subgraphs/*.json, the "workflow" key) into Chisel's editor model with
// the node definitions in OBJECT_INFO, opens and leaves every subgraph instance, and prints {file: saved workflow}.
// tests/web/test_subgraph_roundtrip.py converts both on the server and compares.
import { readFileSync } from 'node:fs';
import { buildNodeDefs } from '../../web/graph/schema.js';
import { WorkflowDoc } from '../../web/app/document.js';
import { enterSubgraph, exitSubgraph } from '../../web/subgraph/navigate.js';

const [, , objectInfoPath, ...files] = process.argv;
const defs = buildNodeDefs(JSON.parse(readFileSync(objectInfoPath, 'utf8')));
const out = {};
for (const file of files) {
  const doc = WorkflowDoc.fromWorkflow(JSON.parse(readFileSync(file, 'utf8')).workflow, { defs, name: file });
  for (const node of [...doc.graph.nodes.values()]) if (enterSubgraph(doc, node.id)) exitSubgraph(doc, 0);
  out[file] = doc.toWorkflow();
}
process.stdout.write(JSON.stringify(out));
