// Image elements for node previews, loaded once per URL; a load triggers a redraw.

export function createImageStore({ onLoad, limit = 300 }) {
  const cache = new Map();
  return {
    get(url) {
      let img = cache.get(url);
      if (!img) {
        if (cache.size >= limit) cache.delete(cache.keys().next().value);
        img = new Image();
        img.onload = onLoad;
        img.src = url;
        cache.set(url, img);
      }
      return img;
    },
  };
}

/** {filename, subfolder, type} for a LoadImage value such as "sub/dir/pic.png [output]". */
export function imageRefFromValue(value) {
  let name = String(value ?? '');
  let type = 'input';
  const m = name.match(/^(.*) \[(input|output|temp)\]$/);
  if (m) {
    name = m[1];
    type = m[2];
  }
  const slash = name.lastIndexOf('/');
  return { filename: slash >= 0 ? name.slice(slash + 1) : name, subfolder: slash >= 0 ? name.slice(0, slash) : '', type };
}
