// Room for what a node shows below its widgets: a node that gets result images, a latent preview, an inspection
// panel or a sigma curve grows to show it (as ComfyUI's nodes grow for previews). Growing is not an undo step.

import { widgetsOf } from '../graph/schema.js';
import { minSize } from '../canvas/layout.js';

export const OUTPUT_IMAGE_H = 256;

/** Grows `node` so that its area below the widgets is at least need = [width, height]. Returns whether it grew. */
export function growToFit(doc, node, [w, h]) {
  if (!node) return false;
  const needH = Math.ceil(minSize(node, widgetsOf(node, doc.defs, doc.graph))[1] + h + 2);
  const needW = Math.ceil(w);
  if (node.size[1] >= needH && node.size[0] >= needW) return false;
  node.size[1] = Math.max(node.size[1], needH);
  node.size[0] = Math.max(node.size[0], needW);
  doc.absorb();
  return true;
}
