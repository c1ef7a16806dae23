import test from 'node:test';
import assert from 'node:assert/strict';
import { copyNodes, pasteNodes } from './clipboard.js';
import { loadWorkflow } from './serialize.js';
import { fixtureDefs, readFixture } from '../test/fixtures.js';

const defs = fixtureDefs();
const load = () => loadWorkflow(readFixture('default_workflow.json'), { defs });

test('paste adds copies with new ids, the internal links, and the layout kept', () => {
  const g = load();
  const clip = JSON.parse(JSON.stringify(copyNodes(g, [3, 8])));
  const added = pasteNodes(g, clip, [2000, 1000]);
  assert.equal(added.length, 2);
  assert.ok(added.every((n) => n.id > 9));
  const [ks, dec] = added;
  assert.deepEqual(ks.pos, [2000, 1000]);
  assert.deepEqual(dec.pos, [2000 + 1209 - 863, 1000 + 188 - 186]);
  assert.equal(g.links.size, 10, 'one internal link (KSampler -> VAEDecode) was added');
  assert.equal(g.getNode(dec.id).inputs[0].link !== null, true);
  assert.equal(ks.inputs[0].link, null, 'inputs from outside are not kept by a plain paste');
});

test('paste keeping input links reconnects to the original upstream nodes', () => {
  const g = load();
  const clip = copyNodes(g, [3]);
  const [ks] = pasteNodes(g, clip, [0, 900], { keepInputLinks: true });
  const origins = ks.inputs.map((i) => g.links.get(i.link).origin_id);
  assert.deepEqual(origins, [4, 6, 7, 5]);
});

test('copies do not share data with the source graph', () => {
  const g = load();
  const clip = copyNodes(g, [5]);
  clip.nodes[0].widgets_values[0] = 1;
  assert.equal(g.getNode(5).widgets_values[0], 512);
});
