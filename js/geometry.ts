// Coordinate transforms between the pointer (CSS pixels), the canvases (device pixels) and the
// image (original pixels, x right, y down), and the prompt edits made by clicks and drags.

export interface Rect {
  left: number;
  top: number;
  width: number;
  height: number;
}

export type Point = [number, number, number]; // [x, y, label] in image pixels
export type Box = [number, number, number, number]; // [x0, y0, x1, y1] in image pixels

/** Continuous image coordinates of a pointer position over an element showing the image. */
export function clientToImage(
  clientX: number,
  clientY: number,
  rect: Rect,
  imageWidth: number,
  imageHeight: number,
): [number, number] {
  const x = ((clientX - rect.left) / rect.width) * imageWidth;
  const y = ((clientY - rect.top) / rect.height) * imageHeight;
  return [x, y];
}

/** The image pixel (integer indices, clamped into the image) under a pointer position. */
export function clientToPixel(
  clientX: number,
  clientY: number,
  rect: Rect,
  imageWidth: number,
  imageHeight: number,
): [number, number] {
  const [x, y] = clientToImage(clientX, clientY, rect, imageWidth, imageHeight);
  return [clamp(Math.floor(x), 0, imageWidth - 1), clamp(Math.floor(y), 0, imageHeight - 1)];
}

/** Where an image coordinate lands on a canvas of `canvasWidth` x `canvasHeight` pixels. */
export function imageToCanvas(
  x: number,
  y: number,
  imageWidth: number,
  imageHeight: number,
  canvasWidth: number,
  canvasHeight: number,
): [number, number] {
  return [(x / imageWidth) * canvasWidth, (y / imageHeight) * canvasHeight];
}

/** The box spanned by a drag between two pointer positions, in whole image pixels. */
export function dragToBox(
  a: [number, number],
  b: [number, number],
  rect: Rect,
  imageWidth: number,
  imageHeight: number,
): Box {
  const [ax, ay] = clientToImage(a[0], a[1], rect, imageWidth, imageHeight);
  const [bx, by] = clientToImage(b[0], b[1], rect, imageWidth, imageHeight);
  let x0 = clamp(Math.round(Math.min(ax, bx)), 0, imageWidth);
  let y0 = clamp(Math.round(Math.min(ay, by)), 0, imageHeight);
  let x1 = clamp(Math.round(Math.max(ax, bx)), 0, imageWidth);
  let y1 = clamp(Math.round(Math.max(ay, by)), 0, imageHeight);
  // a box is never empty: a thin drag still spans one pixel
  if (x1 <= x0) x1 < imageWidth ? (x1 = x0 + 1) : (x0 = x1 - 1);
  if (y1 <= y0) y1 < imageHeight ? (y1 = y0 + 1) : (y0 = y1 - 1);
  return [x0, y0, x1, y1];
}

/** Index of the point within `radius` CSS pixels of a pointer position, or -1. */
export function nearestPoint(
  points: readonly Point[],
  clientX: number,
  clientY: number,
  rect: Rect,
  imageWidth: number,
  imageHeight: number,
  radius: number,
): number {
  let best = -1;
  let bestDist = radius;
  points.forEach((p, i) => {
    // points mark the centre of their pixel
    const px = rect.left + ((p[0] + 0.5) / imageWidth) * rect.width;
    const py = rect.top + ((p[1] + 0.5) / imageHeight) * rect.height;
    const d = Math.hypot(px - clientX, py - clientY);
    if (d <= bestDist) {
      best = i;
      bestDist = d;
    }
  });
  return best;
}

/** The prompt after a click: remove the point near it, else add one with `label`. */
export function clickPoints(
  points: readonly Point[],
  clientX: number,
  clientY: number,
  rect: Rect,
  imageWidth: number,
  imageHeight: number,
  label: number,
  radius = 8,
): Point[] {
  const near = nearestPoint(points, clientX, clientY, rect, imageWidth, imageHeight, radius);
  if (near >= 0) return points.filter((_, i) => i !== near);
  const [x, y] = clientToPixel(clientX, clientY, rect, imageWidth, imageHeight);
  return [...points, [x, y, label]];
}

/** CSS size of the image area for a container width (never wider than `maxWidth`). */
export function fitSize(
  containerWidth: number,
  imageWidth: number,
  imageHeight: number,
  maxWidth: number,
): { width: number; height: number } {
  const width = Math.max(1, Math.min(containerWidth, maxWidth));
  return { width, height: (width * imageHeight) / imageWidth };
}

export function clamp(v: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, v));
}
