// Decoding of the kernel's mask blobs (the format is documented in sam_widget/codec.py):
// a 20-byte header ("SAMM", version, compression, C, H, W) and C*H*W bits packed MSB-first,
// deflated with zlib when that was smaller. Inflating is synchronous (js/inflate.ts: no stream
// plumbing on the click-to-overlay path); the browser's DecompressionStream is the fallback.

import { inflateSync } from "./inflate";

export const HEADER_BYTES = 20;
const MAGIC = [0x53, 0x41, 0x4d, 0x4d]; // "SAMM"

export interface MaskSet {
  count: number;
  height: number;
  width: number;
  /** packed bits, `bytesPerMask` bytes per mask, row-major, MSB first */
  packed: Uint8Array;
  bytesPerMask: number;
}

export interface MaskHeader {
  compression: number;
  count: number;
  height: number;
  width: number;
}

/** Parse the header of a mask blob; throws on anything that is not one. */
export function parseHeader(view: DataView): MaskHeader {
  if (view.byteLength < HEADER_BYTES) throw new Error(`mask blob too short: ${view.byteLength} bytes`);
  for (let i = 0; i < 4; i++) {
    if (view.getUint8(i) !== MAGIC[i]) throw new Error("not a mask blob (bad magic)");
  }
  const version = view.getUint8(4);
  if (version !== 1) throw new Error(`unsupported mask blob version ${version}`);
  return {
    compression: view.getUint8(5),
    count: view.getUint32(8, true),
    height: view.getUint32(12, true),
    width: view.getUint32(16, true),
  };
}

async function inflate(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** DataView (as anywidget hands over bytes traits and message buffers) -> MaskSet. */
export async function decodeMasks(view: DataView): Promise<MaskSet> {
  const h = parseHeader(view);
  // honour byteOffset/byteLength: the view may be a window into a larger buffer
  const body = new Uint8Array(view.buffer, view.byteOffset + HEADER_BYTES, view.byteLength - HEADER_BYTES);
  const bytesPerMask = Math.ceil((h.height * h.width) / 8);
  let packed: Uint8Array;
  if (h.compression === 1) {
    try {
      packed = inflateSync(body, bytesPerMask * h.count);
    } catch {
      packed = await inflate(body); // the browser's own inflate says what is wrong, if anything
    }
  }
  else if (h.compression === 0) packed = body.slice();
  else throw new Error(`unknown mask compression ${h.compression}`);
  if (packed.length !== bytesPerMask * h.count) {
    throw new Error(`mask payload has ${packed.length} bytes, expected ${bytesPerMask * h.count}`);
  }
  return { count: h.count, height: h.height, width: h.width, packed, bytesPerMask };
}

/** One mask of a set as 0/1 bytes, row-major (height*width). */
export function unpackMask(set: MaskSet, index: number): Uint8Array {
  if (index < 0 || index >= set.count) throw new Error(`mask ${index} out of range 0..${set.count - 1}`);
  const n = set.height * set.width;
  const out = new Uint8Array(n);
  const base = index * set.bytesPerMask;
  const p = set.packed;
  for (let i = 0; i < n; i++) {
    out[i] = (p[base + (i >> 3)] >> (7 - (i & 7))) & 1;
  }
  return out;
}

/** Number of set pixels in a 0/1 mask. */
export function area(mask: Uint8Array): number {
  let s = 0;
  for (let i = 0; i < mask.length; i++) s += mask[i];
  return s;
}

/**
 * Paint a 0/1 mask into RGBA pixels (same width/height): interior pixels get `fillAlpha`,
 * boundary pixels (in the mask with a 4-neighbour outside it or at the border) get
 * `edgeAlpha`, so the overlay shows a semi-transparent fill with a crisp outline.
 */
export function paintMask(
  rgba: Uint8ClampedArray,
  mask: Uint8Array,
  width: number,
  height: number,
  color: [number, number, number],
  fillAlpha: number,
  edgeAlpha = 255,
): void {
  const [r, g, b] = color;
  for (let y = 0; y < height; y++) {
    const row = y * width;
    for (let x = 0; x < width; x++) {
      const i = row + x;
      if (!mask[i]) continue;
      const edge =
        x === 0 || y === 0 || x === width - 1 || y === height - 1 ||
        !mask[i - 1] || !mask[i + 1] || !mask[i - width] || !mask[i + width];
      const o = i * 4;
      rgba[o] = r;
      rgba[o + 1] = g;
      rgba[o + 2] = b;
      rgba[o + 3] = edge ? edgeAlpha : fillAlpha;
    }
  }
}

/** "#rrggbb" -> [r, g, b] */
export function hexColor(hex: string): [number, number, number] {
  const m = /^#?([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex);
  if (!m) return [30, 144, 255];
  return [parseInt(m[1], 16), parseInt(m[2], 16), parseInt(m[3], 16)];
}
