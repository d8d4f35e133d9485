// The undo stack: the same rules as SamWidget's history in sam_widget/widget.py.
import { describe, expect, it } from "vitest";
import { EMPTY, UndoStack } from "./history";

const s1 = { points: [[1, 1, 1]] as [number, number, number][], box: null };
const s2 = { points: [[1, 1, 1], [2, 2, 0]] as [number, number, number][], box: null };
const s3 = { points: [], box: [0, 0, 5, 5] as [number, number, number, number] };

describe("UndoStack", () => {
  it("undoes and redoes, stopping at both ends", () => {
    const h = new UndoStack();
    h.push(s1);
    h.push(s2);
    expect(h.undo()).toEqual(s1);
    expect(h.undo()).toEqual(EMPTY);
    expect(h.undo()).toEqual(EMPTY);
    expect(h.canUndo).toBe(false);
    expect(h.redo()).toEqual(s1);
    expect(h.redo()).toEqual(s2);
    expect(h.redo()).toEqual(s2);
    expect(h.canRedo).toBe(false);
  });

  it("drops the redo tail on a new state and ignores unchanged states", () => {
    const h = new UndoStack();
    h.push(s1);
    h.push(s2);
    h.undo();
    h.push(s3);
    expect(h.canRedo).toBe(false);
    expect(h.size).toBe(3);
    h.push({ points: [], box: [0, 0, 5, 5] });
    expect(h.size).toBe(3);
  });

  it("makes clear undoable and reset start afresh", () => {
    const h = new UndoStack();
    h.push(s2);
    expect(h.clear()).toEqual(EMPTY);
    expect(h.clear()).toEqual(EMPTY); // clearing nothing records nothing
    expect(h.size).toBe(3);
    expect(h.undo()).toEqual(s2);
    h.reset();
    expect([h.size, h.canUndo, h.canRedo]).toEqual([1, false, false]);
  });

  it("starts from a synced history at its index", () => {
    const h = new UndoStack([EMPTY, s1, s2], 1);
    expect(h.current).toEqual(s1);
    expect(h.redo()).toEqual(s2);
    expect(new UndoStack([], 5).current).toEqual(EMPTY);
  });
});
