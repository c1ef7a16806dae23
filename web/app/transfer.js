// Getting things into the editor: uploads into LoadImage-like nodes, dropped and pasted files (workflows, API
// prompts, PNGs, images), the node clipboard, and the image URLs a node shows.

import { getWidgetValue, setWidgetValue, WidgetKind } from '../graph/schema.js';
import { toGraph } from '../canvas/viewport.js';
import * as cmd from './commands.js';
import { readDroppedFile } from './files.js';
import { imageRefFromValue } from './images.js';
import { loaderFor } from './model_drop.js';
import { execView, subgraphPath } from '../subgraph/navigate.js';

/** @param c the controller context (controller.js); `opening` from opening.js */
export function createTransfer(c, opening) {
  const { api, deps, storage } = c;
  let pasteKeepsLinks = false;

  function imageUrls(d, node) {
    const exec = execView(d.exec, subgraphPath(d)); // an inner node's images show on its instance, and inside it
    const previews = exec.previews.get(node.id);
    if (previews && exec.running !== null) return [previews];
    const outs = exec.outputs.get(node.id);
    if (outs?.length) return outs.map((im) => api.viewUrl(im));
    const def = deps.getDefs().get(node.type);
    const upload = def?.widgets.find((w) => w.kind === WidgetKind.UPLOAD);
    if (upload) {
      const target = def.widgets.find((w) => w.name === upload.target);
      const value = getWidgetValue(node, target);
      if (value) return [api.viewUrl(imageRefFromValue(value))];
    }
    return [];
  }

  /** Sets the node's upload target (LoadImage's `image`) to an uploaded file's name. */
  function setUploaded(node, res) {
    const def = deps.getDefs().get(node.type);
    const upload = def?.widgets.find((w) => w.kind === WidgetKind.UPLOAD);
    const target = def?.widgets.find((w) => w.name === upload?.target);
    if (!target) return;
    const value = res.subfolder ? `${res.subfolder}/${res.name}` : res.name;
    if (!target.choices.includes(value)) target.choices.push(value);
    setWidgetValue(node, target, value);
    c.changed(true);
  }

  async function uploadTo(node, file) {
    const def = deps.getDefs().get(node.type);
    if (!def?.widgets.some((w) => w.kind === WidgetKind.UPLOAD)) return;
    try {
      setUploaded(node, await api.uploadImage(file));
    } catch (e) {
      c.notify(`Upload failed: ${e.message}`, 'error');
    }
  }

  function chooseUpload(node) {
    const input = document.createElement('input');
    input.type = 'file';
    input.accept = 'image/*';
    input.onchange = () => input.files[0] && uploadTo(node, input.files[0]);
    input.click();
  }

  function loadImageNodeAt(pos) {
    const d = c.doc();
    const node = cmd.createNode(d, 'LoadImage', pos);
    d.selection = new Set([node.id]);
    return node;
  }

  function nodeAt(p) {
    const nodes = [...c.doc().graph.nodes.values()].reverse();
    return nodes.find((n) => p[0] >= n.pos[0] && p[0] <= n.pos[0] + n.size[0] && p[1] >= n.pos[1] - 30
      && p[1] <= n.pos[1] + n.size[1]) ?? null;
  }

  /** Opens dropped files; an image dropped on a LoadImage node (or onto the canvas) is uploaded to it. */
  async function handleFiles(files, screenPoint = null) {
    const at = screenPoint ? toGraph(c.doc().vp, screenPoint) : c.editor().center();
    for (const file of files) {
      let got;
      try {
        got = await readDroppedFile(file);
      } catch (e) {
        c.notify(`Cannot read ${file.name}: ${e.message}`, 'error');
        continue;
      }
      if (got.kind === 'workflow') opening.openWorkflow(got.json, { name: got.name });
      else if (got.kind === 'api') opening.openApiPrompt(got.json, got.name);
      else if (got.kind === 'image') {
        const hit = screenPoint ? nodeAt(at) : null;
        const target = hit && deps.getDefs().get(hit.type)?.widgets.some((w) => w.kind === WidgetKind.UPLOAD) ? hit
          : c.doc().selectedNodes().find((n) => n.type === 'LoadImage') ?? loadImageNodeAt(at);
        await uploadTo(target, file);
      } else c.notify(got.reason, 'warn');
    }
  }

  function pasteAt(at, keepInputLinks) {
    const added = cmd.pasteClipboard(c.doc(), storage, at, { keepInputLinks });
    if (added.length) c.changed();
  }

  function onPaste(e) {
    if (/^(INPUT|TEXTAREA)$/.test(e.target?.tagName ?? '')) return;
    const files = [...(e.clipboardData?.files ?? [])];
    if (files.length) {
      e.preventDefault();
      handleFiles(files);
      return;
    }
    const text = e.clipboardData?.getData('text/plain');
    if (text && /^\s*\{/.test(text)) {
      try {
        const json = JSON.parse(text);
        if (Array.isArray(json.nodes) && Array.isArray(json.links)) {
          e.preventDefault();
          opening.openWorkflow(json, { name: 'Pasted workflow' });
          return;
        }
      } catch {
        // not JSON: fall through to the node clipboard
      }
    }
    e.preventDefault();
    const editor = c.editor();
    pasteAt(editor.pointer ?? editor.center(), pasteKeepsLinks);
  }

  /** Adds the loader of a model file (dragged from the model library) at graph point `at`. */
  function addModelLoader(folder, file, at = c.editor().center()) {
    const defs = deps.getDefs();
    const loader = loaderFor(folder, file, defs);
    if (!loader) {
      c.notify(`No loader node for ${folder}/${file}`, 'warn');
      return null;
    }
    const d = c.doc();
    const node = cmd.createNode(d, loader.type, at);
    const widget = defs.get(loader.type).widgets.find((w) => w.name === loader.widget);
    if (widget.choices && !widget.choices.includes(file)) widget.choices.push(file);
    setWidgetValue(node, widget, file);
    d.selection = new Set([node.id]);
    c.changed(true);
    return node;
  }

  /** Opens the mask editor on the node's image; the painted mask is uploaded (/upload/mask: the original image
   * with the mask in its alpha, under input/clipspace/) and the node then loads that file. */
  async function editMask(node) {
    const def = deps.getDefs().get(node.type);
    const upload = def?.widgets.find((w) => w.kind === WidgetKind.UPLOAD);
    const target = def?.widgets.find((w) => w.name === upload?.target);
    const value = target && getWidgetValue(node, target);
    if (!value) {
      c.notify('Load an image first', 'warn');
      return false;
    }
    const ref = imageRefFromValue(value);
    let blob;
    try {
      blob = await c.ui.maskEditor.open(api.viewUrl(ref));
    } catch (e) {
      c.notify(`Cannot edit the mask: ${e.message}`, 'error');
      return false;
    }
    if (!blob) return false;
    try {
      setUploaded(node, await api.uploadMask(blob, ref, { name: `clipspace-mask-${Date.now()}.png` }));
      return true;
    } catch (e) {
      c.notify(`Mask upload failed: ${e.message}`, 'error');
      return false;
    }
  }

  return {
    editMask,
    addModelLoader,
    imageUrls, uploadTo, setUploaded, chooseUpload, handleFiles, onPaste, pasteAt,
    setPasteKeepsLinks(v) { pasteKeepsLinks = v; },
  };
}
