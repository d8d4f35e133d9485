// Mask painting: only the rows a mask touches, outline vs fill, the current mask's own style.
import { describe, expect, it } from "vitest";
import type { MaskSet } from "./codec";
import { CURRENT_COLOR, currentStyle, objectStyle, paintRows, rgbaWord, rowBounds, unpackRows } from "./overlay";

function pack(masks: number[][][]): MaskSet {
  const count = masks.length;
  const height = masks[0].length;
  const width = masks[0][0].length;
  const bytesPerMask = Math.ceil((height * width) / 8);
  const packed = new Uint8Array(bytesPerMask * count);
  masks.forEach((m, k) => m.flat().forEach((v, i) => {
    if (v) packed[k * bytesPerMask + (i >> 3)] |= 1 << (7 - (i & 7));
  }));
  return { count, height, width, packed, bytesPerMask };
}

describe("overlay", () => {
  const zero = Array.from({ length: 6 }, () => Array(5).fill(0));
  const block = zero.map((row, y) => row.map((_, x) => (y >= 2 && y <= 4 && x >= 1 && x <= 3 ? 1 : 0)));

  it("finds the rows a mask touches and unpacks only those", () => {
    const set = pack([zero, block]);
    expect(rowBounds(set, 0)).toBeNull();
    expect(rowBounds(set, 1)).toEqual([2, 4]);
    expect(Array.from(unpackRows(set, 1, 3, 3))).toEqual([0, 1, 1, 1, 0]);
  });

  it("paints interior pixels with the fill and boundary pixels with the outline", () => {
    const px = new Uint32Array(30);
    const style = objectStyle([10, 20, 30], 100);
    paintRows(px, 5, 6, Uint8Array.from(block.flat()), 0, 0, 5, style);
    expect(px[3 * 5 + 2]).toBe(rgbaWord(10, 20, 30, 100)); // centre of the 3x3 block
    expect(px[2 * 5 + 1]).toBe(rgbaWord(10, 20, 30, 255)); // its corner
    expect(px[0]).toBe(0); // outside: untouched
  });

  it("gives the current mask a colour no object has and a black/white outline", () => {
    const palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
      "#17becf", "#bcbd22", "#7f7f7f"];
    const hex = "#" + CURRENT_COLOR.map((c) => c.toString(16).padStart(2, "0")).join("");
    expect(palette).not.toContain(hex);
    const s = currentStyle(128);
    const edges = new Set([0, 4, 8, 12].map((x) => s.edge(x, 0)));
    expect(edges).toEqual(new Set([rgbaWord(0, 0, 0, 255), rgbaWord(255, 255, 255, 255)]));
  });
});
