// Opening dropped or pasted files: a workflow JSON, an API prompt JSON, or a PNG carrying either
// (ComfyUI's handleFile order: workflow, then prompt). Images without metadata are for LoadImage.

import { readPngMetadata } from '../graph/png.js';
import { detectFormat } from '../graph/serialize.js';

/** What a file holds: {kind: 'workflow'|'api', json, name} | {kind: 'image', file} | {kind: 'unknown', reason}. */
export async function readDroppedFile(file) {
  const name = (file.name ?? 'workflow').replace(/\.(json|png|webp)$/i, '');
  const type = file.type ?? '';
  if (type === 'image/png' || /\.png$/i.test(file.name ?? '')) {
    const meta = await readPngMetadata(await file.arrayBuffer());
    if (meta.workflow && detectFormat(meta.workflow) === 'workflow') return { kind: 'workflow', json: meta.workflow, name };
    if (meta.prompt && detectFormat(meta.prompt) === 'api') return { kind: 'api', json: meta.prompt, name };
    return { kind: 'image', file };
  }
  if (type.startsWith('image/')) return { kind: 'image', file };
  if (type === 'application/json' || /\.json$/i.test(file.name ?? '')) {
    let json;
    try {
      json = JSON.parse(await file.text());
    } catch (e) {
      return { kind: 'unknown', reason: `${file.name} is not valid JSON (${e.message})` };
    }
    const format = detectFormat(json);
    if (format) return { kind: format, json, name };
    if (json?.workflow && detectFormat(json.workflow) === 'workflow') return { kind: 'workflow', json: json.workflow, name };
    return { kind: 'unknown', reason: `${file.name} is neither a ComfyUI workflow nor an API prompt` };
  }
  return { kind: 'unknown', reason: `cannot open ${file.name || 'this file'} (${type || 'unknown type'})` };
}
