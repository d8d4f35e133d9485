// The synchronous inflate against node's zlib: fixed, dynamic and stored blocks, long matches.
import { deflateSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { inflateSync } from "./inflate";

function sample(n: number, seed: number): Uint8Array {
  // mask-like bytes: long runs of 0x00 / 0xff with noisy edges, and some random stretches
  const out = new Uint8Array(n);
  let x = seed;
  const rand = () => ((x = (x * 1103515245 + 12345) >>> 0) >>> 16) & 0xff;
  for (let i = 0; i < n;) {
    const run = 1 + (rand() % 200);
    const v = rand() < 128 ? 0 : rand() < 200 ? 0xff : rand();
    for (let k = 0; k < run && i < n; k++, i++) out[i] = k === run - 1 ? rand() : v;
  }
  return out;
}

describe("inflateSync", () => {
  for (const level of [0, 1, 6, 9]) {
    it(`inflates what zlib level ${level} deflated`, () => {
      for (const [n, seed] of [[1, 1], [1000, 2], [38400, 3], [300000, 4]]) {
        const data = sample(n, seed);
        const z = new Uint8Array(deflateSync(data, { level }));
        const got = inflateSync(z, n);
        expect(Buffer.compare(Buffer.from(got), Buffer.from(data))).toBe(0);
      }
    });
  }

  it("refuses a wrong size and what is not zlib", () => {
    const data = sample(5000, 7);
    const z = new Uint8Array(deflateSync(data, { level: 1 }));
    expect(() => inflateSync(z, 4999)).toThrow(/larger than expected|expected 4999/);
    expect(() => inflateSync(z, 5001)).toThrow(/expected 5001/);
    expect(() => inflateSync(new Uint8Array([1, 2, 3]), 3)).toThrow(/not a zlib stream/);
  });
});
