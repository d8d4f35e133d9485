// Hover scheduling: at most one request in flight, only the latest position is ever sent.
import { describe, expect, it } from "vitest";
import { HoverScheduler } from "./hover";

describe("HoverScheduler", () => {
  it("keeps one request in flight and sends the latest position when answered", () => {
    const sent: [number, number, number][] = [];
    const s = new HoverScheduler((seq, x, y) => sent.push([seq, x, y]));
    for (let i = 0; i < 2000; i++) s.move(i, i);
    expect(sent).toEqual([[1, 0, 0]]); // the burst produced one request
    expect(s.answered(1)).toBe(true);
    expect(sent).toEqual([[1, 0, 0], [2, 1999, 1999]]); // then only the latest
    expect(s.answered(2)).toBe(true);
    expect(sent).toHaveLength(2); // nothing new: nothing sent
    expect(s.maxInFlight).toBe(1);
  });

  it("ignores answers to requests not in flight and does not resend the same position", () => {
    const sent: number[] = [];
    const s = new HoverScheduler((seq) => sent.push(seq));
    s.move(3, 4);
    expect(s.answered(7)).toBe(false);
    s.move(3, 4);
    expect(sent).toEqual([1]);
    s.answered(1);
    s.move(3, 4);
    expect(sent).toEqual([1]);
    expect(s.positionOf(1)).toEqual([3, 4]);
  });

  it("stops after cancel and recovers from a lost answer", () => {
    let now = 0;
    const sent: number[] = [];
    const s = new HoverScheduler((seq) => sent.push(seq), 1000, () => now);
    s.move(1, 1);
    s.cancel();
    s.answered(1);
    expect(sent).toEqual([1]);
    s.move(2, 2); // answer to 2 gets lost
    s.move(3, 3);
    expect(sent).toEqual([1, 2]);
    now = 1500;
    s.move(4, 4);
    expect(sent).toEqual([1, 2, 3]);
  });
});
