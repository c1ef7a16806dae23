// Reads the text chunks ComfyUI writes into PNGs (tEXt; also iTXt, compressed or not, and the 'comf' chunk
// some tools use) and picks the workflow / prompt / A1111 parameters out of them.

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

export class PngFormatError extends Error {
  constructor(message) {
    super(message);
    this.name = 'PngFormatError';
  }
}

const latin1 = new TextDecoder('latin1');
const utf8 = new TextDecoder('utf-8');

async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('deflate'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function splitAtNul(bytes, from) {
  const end = bytes.indexOf(0, from);
  return end < 0 ? [bytes.length, bytes.length] : [end, end + 1];
}

/** All text chunks of a PNG as {keyword: text}. `data` is an ArrayBuffer or Uint8Array. */
export async function readPngText(data) {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  if (bytes.length < 8 || SIGNATURE.some((b, i) => bytes[i] !== b)) throw new PngFormatError('not a PNG file');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = {};
  let pos = 8;
  while (pos + 8 <= bytes.length) {
    const length = view.getUint32(pos);
    const type = latin1.decode(bytes.subarray(pos + 4, pos + 8));
    const start = pos + 8;
    const end = start + length;
    if (end + 4 > bytes.length) throw new PngFormatError(`chunk ${type} runs past the end of the file`);
    const body = bytes.subarray(start, end);
    if (type === 'tEXt' || type === 'comf') {
      const [kEnd, vStart] = splitAtNul(body, 0);
      out[latin1.decode(body.subarray(0, kEnd))] = (type === 'comf' ? utf8 : latin1).decode(body.subarray(vStart));
    } else if (type === 'iTXt') {
      const [kEnd, afterKey] = splitAtNul(body, 0);
      const compressed = body[afterKey] === 1;
      const [, afterLang] = splitAtNul(body, afterKey + 2);
      const [, afterTrans] = splitAtNul(body, afterLang);
      const text = body.subarray(afterTrans);
      out[latin1.decode(body.subarray(0, kEnd))] = utf8.decode(compressed ? await inflate(text) : text);
    } else if (type === 'IEND') {
      break;
    }
    pos = end + 4;
  }
  return out;
}

function parseJson(text) {
  if (typeof text !== 'string') return null;
  try {
    return JSON.parse(text);
  } catch {
    // Python's json.dumps writes NaN for float('nan') widget values, which JSON.parse refuses.
    try {
      return JSON.parse(text.replace(/(?<=[:,\[]\s*)NaN(?=\s*[,}\]])/g, 'null'));
    } catch {
      return null;
    }
  }
}

/** {workflow, prompt, parameters} from a PNG: the parsed UI workflow and API prompt (or null) and the A1111
 * parameters text (or null). */
export async function readPngMetadata(data) {
  const text = await readPngText(data);
  return {
    workflow: parseJson(text.workflow ?? text.Workflow),
    prompt: parseJson(text.prompt ?? text.Prompt),
    parameters: text.parameters ?? null,
  };
}
