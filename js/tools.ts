// Editing tools besides prompts: the brush and eraser (paint on the current mask or on a kept
// object; the kernel applies each stroke at full resolution and keeps it undoable), and
// stepping through the candidates with the mouse wheel (with Alt or Shift held, so a plain
// wheel still scrolls the notebook).

export type ToolMode = "prompt" | "brush" | "eraser";

/** Smallest and largest brush radius, in display pixels. */
export const MIN_RADIUS = 1;
export const MAX_RADIUS = 200;

/** The brush's state for one view: mode, radius (display pixels), the stroke being drawn. */
export class BrushTool {
  mode: ToolMode = "prompt";
  radius = 12;
  /** the object the brush edits (id), or null for the current mask */
  target: number | null = null;
  /** the stroke being drawn, in image pixels */
  stroke: [number, number][] = [];

  toggle(mode: "brush" | "eraser"): ToolMode {
    this.mode = this.mode === mode ? "prompt" : mode;
    this.stroke = [];
    return this.mode;
  }

  /** `[` / `]`: about 20% smaller or larger, at least one pixel each step. */
  resize(direction: -1 | 1): number {
    const step = Math.max(1, Math.round(this.radius * 0.2));
    this.radius = Math.min(MAX_RADIUS, Math.max(MIN_RADIUS, this.radius + direction * step));
    return this.radius;
  }

  get active(): boolean {
    return this.mode !== "prompt";
  }

  /** Add a pointer position (image pixels), skipping ones closer than a quarter radius. */
  add(x: number, y: number, scale: number): void {
    const last = this.stroke[this.stroke.length - 1];
    const min = Math.max(1, (this.radius * scale) / 4);
    if (last && Math.hypot(last[0] - x, last[1] - y) < min) return;
    this.stroke.push([Math.round(x * 100) / 100, Math.round(y * 100) / 100]);
  }

  /** The finished stroke as the kernel's "stroke" message, or null when empty. */
  finish(scale: number): Record<string, unknown> | null {
    const points = this.stroke;
    this.stroke = [];
    if (!points.length || !this.active) return null;
    return {
      type: "stroke",
      mode: this.mode === "brush" ? "add" : "erase",
      radius: Math.max(0.5, this.radius * scale), // image pixels
      points,
      target: this.target,
    };
  }
}

/**
 * The candidate a wheel event steps to, or null when the wheel should scroll the page (no
 * modifier, no candidates, or no movement). Shift turns the wheel horizontal in some browsers,
 * so deltaX counts too.
 */
export function wheelStep(
  e: Pick<WheelEvent, "deltaX" | "deltaY" | "altKey" | "shiftKey">, selected: number, count: number,
): number | null {
  if (!(e.altKey || e.shiftKey) || count < 2) return null;
  const delta = e.deltaY || e.deltaX;
  if (!delta) return null;
  return (selected + (delta > 0 ? 1 : -1) + count) % count;
}
