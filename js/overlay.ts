// Painting masks fast: a click's overlay must be on screen within a frame of the kernel's answer.
//
// Each layer (kept objects, the current mask) is a canvas at the display resolution the kernel
// sends, scaled by CSS, so an update is one putImageData of the rows that changed: no full-size
// ImageData per click, no rescaling drawImage. Only the rows a mask touches are unpacked from its
// packed bits, and pixels are written as whole 32-bit words.
//
// Styles: objects are filled in their palette colour with a solid outline; the current mask uses
// a colour that is not in the object palette (see PALETTE in sam_widget/widget.py) and a
// black-and-white dashed outline, so it is never mistaken for a kept object.

import type { MaskSet } from "./codec";

/** The current (live) mask's fill colour: not in the object palette. */
export const CURRENT_COLOR: [number, number, number] = [255, 0, 255];

/** RGBA -> one little-endian 32-bit pixel word (as Uint32Array over ImageData sees it). */
export function rgbaWord(r: number, g: number, b: number, a: number): number {
  return ((a & 255) << 24 | (b & 255) << 16 | (g & 255) << 8 | (r & 255)) >>> 0;
}

/** First and last row (inclusive) with any pixel set in mask `index` of a packed set, or null. */
export function rowBounds(set: MaskSet, index: number): [number, number] | null {
  const p = set.packed;
  const base = index * set.bytesPerMask;
  const n = set.height * set.width;
  let first = -1;
  for (let i = 0; i < set.bytesPerMask; i++) {
    if (p[base + i]) {
      first = i;
      break;
    }
  }
  if (first < 0) return null;
  let last = first;
  for (let i = set.bytesPerMask - 1; i > first; i--) {
    if (p[base + i]) {
      last = i;
      break;
    }
  }
  // the exact first and last set bit (MSB first): clz within the byte, and its lowest set bit
  const i0 = first * 8 + Math.clz32(p[base + first]) - 24;
  const lastByte = p[base + last];
  const i1 = Math.min(n - 1, last * 8 + 7 - (31 - Math.clz32(lastByte & -lastByte)));
  return [Math.floor(i0 / set.width), Math.floor(i1 / set.width)];
}

/** Rows y0..y1 (inclusive) of mask `index` as 0/1 bytes, row-major. */
export function unpackRows(set: MaskSet, index: number, y0: number, y1: number): Uint8Array {
  const w = set.width;
  const out = new Uint8Array((y1 - y0 + 1) * w);
  const p = set.packed;
  const base = index * set.bytesPerMask;
  const start = y0 * w;
  for (let j = 0; j < out.length; j++) {
    const i = start + j;
    out[j] = (p[base + (i >> 3)] >> (7 - (i & 7))) & 1;
  }
  return out;
}

export interface MaskStyle {
  fill: number; // pixel word for interior pixels
  /** pixel word for outline pixels at (x, y) */
  edge: (x: number, y: number) => number;
}

/** The current mask's style: fill in CURRENT_COLOR, black/white dashed outline. */
export function currentStyle(alpha: number): MaskStyle {
  const [r, g, b] = CURRENT_COLOR;
  const fill = rgbaWord(r, g, b, alpha);
  const white = rgbaWord(255, 255, 255, 255);
  const black = rgbaWord(0, 0, 0, 255);
  return { fill, edge: (x, y) => (((x + y) >> 2) & 1 ? white : black) };
}

/** A kept object's style: fill and solid outline in its colour. */
export function objectStyle(color: [number, number, number], alpha: number): MaskStyle {
  const [r, g, b] = color;
  const fill = rgbaWord(r, g, b, alpha);
  const edge = rgbaWord(r, g, b, 255);
  return { fill, edge: () => edge };
}

/**
 * Paint rows `y0..y1` of a 0/1 mask given as `rows` (rows `r0..` of the image, at least one row
 * of context above and below where the image has them) into `px` (width x height words).
 * Interior pixels get `style.fill`, pixels with a 4-neighbour outside the mask (or on the image
 * border) get `style.edge`.
 */
export function paintRows(
  px: Uint32Array, width: number, height: number,
  rows: Uint8Array, r0: number, y0: number, y1: number, style: MaskStyle,
): void {
  const rowsCount = rows.length / width;
  for (let y = y0; y <= y1; y++) {
    const j = (y - r0) * width;
    const up = y > 0 && y - 1 >= r0 ? j - width : -1;
    const down = y < height - 1 && y + 1 < r0 + rowsCount ? j + width : -1;
    const o = y * width;
    for (let x = 0; x < width; x++) {
      if (!rows[j + x]) continue;
      const edge = x === 0 || x === width - 1 || up < 0 || down < 0 ||
        !rows[j + x - 1] || !rows[j + x + 1] || !rows[up + x] || !rows[down + x];
      px[o + x] = edge ? style.edge(x, y) : style.fill;
    }
  }
}

/** One overlay layer: a canvas at display resolution showing masks, updated by dirty rows. */
export class MaskLayer {
  readonly canvas: HTMLCanvasElement;
  private ctx: CanvasRenderingContext2D | null = null;
  private image: ImageData | null = null;
  private px: Uint32Array = new Uint32Array(0);
  /** rows holding paint now (to clear next time), inclusive */
  private painted: [number, number] | null = null;
  /** rows to hand to the canvas at the next flush */
  private dirty: [number, number] | null = null;
  width = 0;
  height = 0;

  constructor(doc: Document, className: string) {
    this.canvas = doc.createElement("canvas");
    this.canvas.className = className;
    this.canvas.setAttribute("aria-hidden", "true");
  }

  /** Set the resolution (display pixels); clears the layer when it changes. */
  resize(width: number, height: number): void {
    if (width === this.width && height === this.height && this.image) return;
    this.width = this.canvas.width = Math.max(1, width);
    this.height = this.canvas.height = Math.max(1, height);
    this.ctx = this.canvas.getContext("2d");
    this.image = this.ctx ? this.ctx.createImageData(this.width, this.height) : null;
    this.px = this.image ? new Uint32Array(this.image.data.buffer) : new Uint32Array(0);
    this.painted = null;
    this.dirty = null;
  }

  private mark(y0: number, y1: number): void {
    this.dirty = this.dirty ? [Math.min(this.dirty[0], y0), Math.max(this.dirty[1], y1)] : [y0, y1];
    this.painted = this.painted ? [Math.min(this.painted[0], y0), Math.max(this.painted[1], y1)] : [y0, y1];
  }

  /** Remove all paint (only the rows that had some). */
  clear(): void {
    if (this.painted) {
      const [y0, y1] = this.painted;
      this.px.fill(0, y0 * this.width, (y1 + 1) * this.width);
      this.dirty = this.dirty ? [Math.min(this.dirty[0], y0), Math.max(this.dirty[1], y1)] : [y0, y1];
      this.painted = null;
    }
  }

  /** Paint mask `index` of a packed set (same size as the layer). */
  paintPacked(set: MaskSet, index: number, style: MaskStyle): void {
    if (set.width !== this.width || set.height !== this.height) return;
    const bounds = rowBounds(set, index);
    if (!bounds) return;
    const [y0, y1] = bounds;
    const r0 = Math.max(0, y0 - 1);
    const rows = unpackRows(set, index, r0, Math.min(this.height - 1, y1 + 1));
    paintRows(this.px, this.width, this.height, rows, r0, y0, y1, style);
    this.mark(y0, y1);
  }

  /** Paint a whole 0/1 mask (width x height bytes). */
  paintMask(mask: Uint8Array, style: MaskStyle): void {
    if (mask.length !== this.width * this.height) return;
    paintRows(this.px, this.width, this.height, mask, 0, 0, this.height - 1, style);
    this.mark(0, this.height - 1);
  }

  /** Hand the changed rows to the canvas. */
  flush(): void {
    if (!this.dirty || !this.ctx || !this.image) return;
    const [y0, y1] = this.dirty;
    this.ctx.putImageData(this.image, 0, 0, 0, y0, this.width, y1 - y0 + 1);
    this.dirty = null;
  }
}
