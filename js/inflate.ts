// Synchronous zlib inflate (RFC 1950 wrapper around RFC 1951 deflate) for mask blobs.
//
// The browser's DecompressionStream is asynchronous: each mask update went through stream
// plumbing and several tasks, about 5 ms at p50 and tens of ms under load, on the path from a
// click to its overlay. A mask blob is a few KiB that inflate to a known size, so decoding it
// here in one synchronous call takes well under a millisecond. The decoder follows the
// canonical-Huffman scheme of zlib's reference "puff": codes are read bit by bit and matched
// against per-length counts, which needs no lookup tables beyond the code lengths.

const LEN_BASE = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83,
  99, 115, 131, 163, 195, 227, 258];
const LEN_EXTRA = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5,
  5, 0];
const DIST_BASE = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769,
  1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577];
const DIST_EXTRA = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11,
  12, 12, 13, 13];
/** the order in which code-length code lengths are stored in a dynamic block */
const CL_ORDER = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];

interface Huffman {
  counts: Uint16Array; // number of codes of each length 0..15
  symbols: Uint16Array; // symbols ordered by code
}

function huffman(lengths: Uint8Array | number[], n: number): Huffman {
  const counts = new Uint16Array(16);
  for (let i = 0; i < n; i++) counts[lengths[i]]++;
  counts[0] = 0;
  const offsets = new Uint16Array(16);
  for (let len = 1; len < 15; len++) offsets[len + 1] = offsets[len] + counts[len];
  const symbols = new Uint16Array(n);
  for (let i = 0; i < n; i++) if (lengths[i]) symbols[offsets[lengths[i]]++] = i;
  return { counts, symbols };
}

let fixed: [Huffman, Huffman] | null = null;
function fixedCodes(): [Huffman, Huffman] {
  if (!fixed) {
    const lengths = new Uint8Array(288);
    lengths.fill(8, 0, 144);
    lengths.fill(9, 144, 256);
    lengths.fill(7, 256, 280);
    lengths.fill(8, 280, 288);
    fixed = [huffman(lengths, 288), huffman(new Uint8Array(30).fill(5), 30)];
  }
  return fixed;
}

class Reader {
  pos: number;
  private buf = 0;
  private count = 0;
  constructor(private readonly data: Uint8Array, start: number) {
    this.pos = start;
  }
  bits(n: number): number {
    let v = this.buf;
    while (this.count < n) {
      if (this.pos >= this.data.length) throw new Error("inflate: input ends early");
      v |= this.data[this.pos++] << this.count;
      this.count += 8;
    }
    this.buf = v >>> n;
    this.count -= n;
    return v & ((1 << n) - 1);
  }
  align(): void {
    this.buf = 0;
    this.count = 0;
  }
  decode(h: Huffman): number {
    let code = 0;
    let first = 0;
    let index = 0;
    for (let len = 1; len < 16; len++) {
      code |= this.bits(1);
      const count = h.counts[len];
      if (code - count < first) return h.symbols[index + (code - first)];
      index += count;
      first = (first + count) << 1;
      code <<= 1;
    }
    throw new Error("inflate: bad Huffman code");
  }
}

/**
 * Inflate a zlib stream whose output is exactly `size` bytes (as the mask header says).
 * Throws on anything malformed, or when the output size differs.
 */
export function inflateSync(data: Uint8Array, size: number): Uint8Array {
  if (data.length < 2 || (data[0] & 0x0f) !== 8 || ((data[0] << 8) | data[1]) % 31 !== 0) {
    throw new Error("inflate: not a zlib stream");
  }
  if (data[1] & 0x20) throw new Error("inflate: preset dictionaries are not supported");
  const out = new Uint8Array(size);
  let o = 0;
  const r = new Reader(data, 2);
  let last = 0;
  while (!last) {
    last = r.bits(1);
    const type = r.bits(2);
    if (type === 0) {
      r.align();
      if (r.pos + 4 > data.length) throw new Error("inflate: input ends early");
      const len = data[r.pos] | (data[r.pos + 1] << 8);
      r.pos += 4; // LEN and its complement
      if (r.pos + len > data.length || o + len > size) throw new Error("inflate: stored block overruns");
      out.set(data.subarray(r.pos, r.pos + len), o);
      r.pos += len;
      o += len;
      continue;
    }
    let lit: Huffman;
    let dist: Huffman;
    if (type === 1) [lit, dist] = fixedCodes();
    else if (type === 2) {
      const nlen = r.bits(5) + 257;
      const ndist = r.bits(5) + 1;
      const ncode = r.bits(4) + 4;
      const lengths = new Uint8Array(320);
      for (let i = 0; i < ncode; i++) lengths[CL_ORDER[i]] = r.bits(3);
      const lencode = huffman(lengths, 19);
      lengths.fill(0);
      for (let i = 0; i < nlen + ndist;) {
        const sym = r.decode(lencode);
        if (sym < 16) lengths[i++] = sym;
        else {
          let repeat: number;
          let value = 0;
          if (sym === 16) {
            if (i === 0) throw new Error("inflate: repeat with no previous length");
            value = lengths[i - 1];
            repeat = 3 + r.bits(2);
          } else if (sym === 17) repeat = 3 + r.bits(3);
          else repeat = 11 + r.bits(7);
          if (i + repeat > nlen + ndist) throw new Error("inflate: too many code lengths");
          while (repeat--) lengths[i++] = value;
        }
      }
      lit = huffman(lengths, nlen);
      dist = huffman(lengths.subarray(nlen), ndist);
    } else throw new Error("inflate: bad block type");
    for (;;) {
      const sym = r.decode(lit);
      if (sym < 256) {
        if (o >= size) throw new Error("inflate: output larger than expected");
        out[o++] = sym;
      } else if (sym === 256) break;
      else {
        const s = sym - 257;
        if (s >= 29) throw new Error("inflate: bad length symbol");
        const len = LEN_BASE[s] + r.bits(LEN_EXTRA[s]);
        const d = r.decode(dist);
        if (d >= 30) throw new Error("inflate: bad distance symbol");
        const back = DIST_BASE[d] + r.bits(DIST_EXTRA[d]);
        if (back > o) throw new Error("inflate: distance too far back");
        if (o + len > size) throw new Error("inflate: output larger than expected");
        if (back === 1) out.fill(out[o - 1], o, o + len); // a run: most of a mask
        else if (back >= len) out.copyWithin(o, o - back, o - back + len);
        else for (let k = 0; k < len; k++) out[o + k] = out[o + k - back]; // overlapping copy
        o += len;
      }
    }
  }
  if (o !== size) throw new Error(`inflate: ${o} bytes, expected ${size}`);
  return out;
}
