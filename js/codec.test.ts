// Mask blob decoding: the bytes below follow sam_widget/codec.py's format exactly.
import { deflateSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { area, decodeMasks, hexColor, paintMask, parseHeader, unpackMask } from "./codec";

function blob(masks: number[][][], compress: boolean): DataView {
  const count = masks.length;
  const height = masks[0].length;
  const width = masks[0][0].length;
  const per = Math.ceil((height * width) / 8);
  const packed = new Uint8Array(per * count);
  masks.forEach((m, k) => {
    m.flat().forEach((v, i) => {
      if (v) packed[k * per + (i >> 3)] |= 0x80 >> (i & 7);
    });
  });
  const payload = compress ? new Uint8Array(deflateSync(packed)) : packed;
  const buf = new Uint8Array(20 + payload.length + 7);
  const view = new DataView(buf.buffer, 7); // a window into a larger buffer, like anywidget's
  [0x53, 0x41, 0x4d, 0x4d].forEach((b, i) => view.setUint8(i, b));
  view.setUint8(4, 1);
  view.setUint8(5, compress ? 1 : 0);
  view.setUint32(8, count, true);
  view.setUint32(12, height, true);
  view.setUint32(16, width, true);
  buf.set(payload, 7 + 20);
  return new DataView(buf.buffer, 7, 20 + payload.length);
}

const A = [
  [0, 1, 1],
  [1, 1, 0],
  [0, 0, 1],
];
const B = [
  [1, 0, 0],
  [0, 0, 0],
  [0, 0, 0],
];

describe("decodeMasks", () => {
  for (const compress of [false, true]) {
    it(`round-trips packed bits (${compress ? "zlib" : "raw"}) honouring byteOffset`, async () => {
      const set = await decodeMasks(blob([A, B], compress));
      expect([set.count, set.height, set.width]).toEqual([2, 3, 3]);
      expect(Array.from(unpackMask(set, 0))).toEqual(A.flat());
      expect(Array.from(unpackMask(set, 1))).toEqual(B.flat());
      expect(area(unpackMask(set, 0))).toBe(5);
    });
  }

  it("rejects what is not a mask blob", async () => {
    const bad = new DataView(new Uint8Array(24).buffer);
    expect(() => parseHeader(bad)).toThrow(/bad magic/);
    await expect(decodeMasks(new DataView(new Uint8Array(3).buffer))).rejects.toThrow(/too short/);
    const v = blob([A], false);
    v.setUint32(16, 10, true); // claims a wider mask than the payload holds
    await expect(decodeMasks(v)).rejects.toThrow(/expected/);
  });

  it("rejects an out-of-range candidate", async () => {
    const set = await decodeMasks(blob([A], false));
    expect(() => unpackMask(set, 1)).toThrow(/out of range/);
  });
});

describe("paintMask", () => {
  it("fills the inside semi-transparently and outlines the boundary", () => {
    const w = 5;
    const m = new Uint8Array(25);
    for (let y = 1; y < 4; y++) for (let x = 1; x < 4; x++) m[y * w + x] = 1;
    const rgba = new Uint8ClampedArray(25 * 4);
    paintMask(rgba, m, 5, 5, [10, 20, 30], 100, 255);
    const alpha = (x: number, y: number) => rgba[(y * w + x) * 4 + 3];
    expect(alpha(2, 2)).toBe(100); // interior
    expect(alpha(1, 1)).toBe(255); // boundary
    expect(alpha(0, 0)).toBe(0); // outside untouched
    expect(Array.from(rgba.slice((2 * w + 2) * 4, (2 * w + 2) * 4 + 3))).toEqual([10, 20, 30]);
  });

  it("parses colours", () => {
    expect(hexColor("#ff7f0e")).toEqual([255, 127, 14]);
    expect(hexColor("nonsense")).toEqual([30, 144, 255]);
  });
});
