// Test helpers (Node only): fixture loading and a tiny PNG writer for metadata tests.
import { readFileSync } from 'node:fs';
import { deflateSync } from 'node:zlib';
import { buildNodeDefs } from '../graph/schema.js';

const here = new URL('./fixtures/', import.meta.url);

export function readFixture(name) {
  return JSON.parse(readFileSync(new URL(name, here), 'utf8'));
}

export function fixtureDefs() {
  return buildNodeDefs(readFixture('object_info.json'));
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, body) {
  const out = new Uint8Array(12 + body.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, body.length);
  out.set(Buffer.from(type, 'latin1'), 4);
  out.set(body, 8);
  view.setUint32(8 + body.length, crc32(out.subarray(4, 8 + body.length)));
  return out;
}

/** A 1x1 PNG carrying the given text chunks: [{type:'tEXt'|'iTXt', key, text, compressed?}]. */
export function makePng(texts) {
  const ihdr = new Uint8Array([0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0]);
  const idat = deflateSync(Buffer.from([0, 255, 0, 0]));
  const parts = [new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr)];
  for (const t of texts) {
    if (t.type === 'iTXt') {
      const text = t.compressed ? deflateSync(Buffer.from(t.text, 'utf8')) : Buffer.from(t.text, 'utf8');
      const head = Buffer.from(`${t.key}\0${t.compressed ? '\x01' : '\x00'}\0\0\0`, 'latin1');
      parts.push(chunk('iTXt', Buffer.concat([head, text])));
    } else {
      parts.push(chunk('tEXt', Buffer.from(`${t.key}\0${t.text}`, 'latin1')));
    }
  }
  parts.push(chunk('IDAT', idat), chunk('IEND', new Uint8Array(0)));
  return Buffer.concat(parts);
}
