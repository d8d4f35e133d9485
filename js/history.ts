// The undo stack of prompt states. The kernel owns the history (sam_widget/session.py keeps the
// same rules) and syncs only the states around the current one (previous, current, next) in the
// `history`/`history_index` traits, so the wire never grows with the session; the view applies
// the same rules locally to that window so undo, redo and clear redraw at once, before the
// kernel confirms.

import type { Box, Point } from "./geometry";

export interface PromptState {
  points: Point[];
  box: Box | null;
}

export const EMPTY: PromptState = { points: [], box: null };

export function isEmpty(s: PromptState): boolean {
  return s.points.length === 0 && s.box === null;
}

export function sameState(a: PromptState, b: PromptState): boolean {
  return JSON.stringify(a.points) === JSON.stringify(b.points) &&
    JSON.stringify(a.box) === JSON.stringify(b.box);
}

export class UndoStack {
  private states: PromptState[];
  private index: number;

  constructor(states: PromptState[] = [EMPTY], index = states.length - 1) {
    this.states = states.length ? states.slice() : [EMPTY];
    this.index = Math.min(Math.max(index, 0), this.states.length - 1);
  }

  get current(): PromptState {
    return this.states[this.index];
  }
  get canUndo(): boolean {
    return this.index > 0;
  }
  get canRedo(): boolean {
    return this.index < this.states.length - 1;
  }
  get size(): number {
    return this.states.length;
  }

  /** A new prompt state: drops the redo tail; an unchanged state is not recorded. */
  push(state: PromptState): PromptState {
    if (sameState(state, this.current)) return this.current;
    this.states = this.states.slice(0, this.index + 1);
    this.states.push(state);
    this.index += 1;
    return this.current;
  }

  undo(): PromptState {
    if (this.canUndo) this.index -= 1;
    return this.current;
  }

  redo(): PromptState {
    if (this.canRedo) this.index += 1;
    return this.current;
  }

  /** Clear is itself undoable: it pushes the empty state. */
  clear(): PromptState {
    return isEmpty(this.current) ? this.current : this.push(EMPTY);
  }

  /** "Add object": the prompts become an object, the history starts afresh. */
  reset(): PromptState {
    this.states = [EMPTY];
    this.index = 0;
    return this.current;
  }
}
