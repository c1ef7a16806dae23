// Which loader node a model file becomes when dragged from the model library onto the canvas, and with which
// widget set to the file. Pure: folder + file + node definitions -> {type, widget} | null.

import { WidgetKind } from '../graph/schema.js';

/** ComfyUI's loaders for its model folders: [node type, widget]. */
export const LOADERS = Object.freeze({
  checkpoints: ['CheckpointLoaderSimple', 'ckpt_name'],
  loras: ['LoraLoader', 'lora_name'],
  vae: ['VAELoader', 'vae_name'],
  vae_approx: ['VAELoader', 'vae_name'],
  controlnet: ['ControlNetLoader', 'control_net_name'],
  upscale_models: ['UpscaleModelLoader', 'model_name'],
  clip: ['CLIPLoader', 'clip_name'],
  text_encoders: ['CLIPLoader', 'clip_name'],
  unet: ['UNETLoader', 'unet_name'],
  diffusion_models: ['UNETLoader', 'unet_name'],
  clip_vision: ['CLIPVisionLoader', 'clip_name'],
  style_models: ['StyleModelLoader', 'style_model_name'],
  gligen: ['GLIGENLoader', 'gligen_name'],
  hypernetworks: ['HypernetworkLoader', 'hypernetwork_name'],
  photomaker: ['PhotoMakerLoader', 'photomaker_model_name'],
});

/** {type, widget} for a file of `folder`: the folder's loader, else any loader whose combo lists the file. */
export function loaderFor(folder, file, defs) {
  const known = LOADERS[folder];
  if (known && defs.get(known[0])?.widgets.some((w) => w.name === known[1])) return { type: known[0], widget: known[1] };
  for (const def of defs.values()) {
    if (!/loader/i.test(def.name)) continue;
    const w = def.widgets.find((x) => x.kind === WidgetKind.COMBO && x.choices?.includes(file));
    if (w) return { type: def.name, widget: w.name };
  }
  return null;
}
