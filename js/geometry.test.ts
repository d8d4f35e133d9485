// Pointer (CSS pixels) <-> image pixels, and the prompt edits clicks and drags make.
import { describe, expect, it } from "vitest";
import { clickPoints, clientToPixel, dragToBox, fitSize, imageToCanvas, nearestPoint, type Point } from "./geometry";

// a 2400x1600 image shown 600x400 CSS pixels at page offset (100, 50)
const rect = { left: 100, top: 50, width: 600, height: 400 };

describe("clientToPixel", () => {
  it("maps CSS pixels to original image pixels on a downscaled image", () => {
    expect(clientToPixel(100, 50, rect, 2400, 1600)).toEqual([0, 0]);
    expect(clientToPixel(400, 250, rect, 2400, 1600)).toEqual([1200, 800]);
    expect(clientToPixel(100.3, 50.6, rect, 2400, 1600)).toEqual([1, 2]);
  });
  it("clamps the far edge into the image", () => {
    expect(clientToPixel(700, 450, rect, 2400, 1600)).toEqual([2399, 1599]);
    expect(clientToPixel(90, 40, rect, 2400, 1600)).toEqual([0, 0]);
  });
  it("gives the same pixel after a resize (the rect changes, the image does not)", () => {
    const small = { left: 100, top: 50, width: 300, height: 200 };
    expect(clientToPixel(250, 150, small, 2400, 1600)).toEqual(clientToPixel(400, 250, rect, 2400, 1600));
  });
  it("upscales small images", () => {
    expect(clientToPixel(100 + 599, 50, rect, 6, 4)).toEqual([5, 0]);
  });
});

describe("imageToCanvas", () => {
  it("is the inverse scale onto a HiDPI canvas", () => {
    expect(imageToCanvas(1200, 800, 2400, 1600, 1200, 800)).toEqual([600, 400]);
  });
});

describe("dragToBox", () => {
  it("orders the corners whatever the drag direction", () => {
    expect(dragToBox([400, 250], [100, 50], rect, 2400, 1600)).toEqual([0, 0, 1200, 800]);
    expect(dragToBox([100, 250], [400, 50], rect, 2400, 1600)).toEqual([0, 0, 1200, 800]);
  });
  it("never yields an empty box", () => {
    const [x0, y0, x1, y1] = dragToBox([200, 100], [200, 300], rect, 6, 4);
    expect(x1).toBeGreaterThan(x0);
    expect(y1).toBeGreaterThan(y0);
    const edge = dragToBox([700, 100], [700, 300], rect, 6, 4);
    expect(edge[0]).toBe(5);
    expect(edge[2]).toBe(6);
  });
});

describe("clickPoints", () => {
  const points: Point[] = [[1200, 800, 1]];
  it("adds a point with the given label", () => {
    expect(clickPoints(points, 200, 100, rect, 2400, 1600, 0)).toEqual([[1200, 800, 1], [400, 200, 0]]);
  });
  it("removes the point within the radius instead", () => {
    // the point's centre is at CSS (400.125, 250.125)
    expect(nearestPoint(points, 405, 252, rect, 2400, 1600, 8)).toBe(0);
    expect(clickPoints(points, 405, 252, rect, 2400, 1600, 1)).toEqual([]);
    expect(clickPoints(points, 420, 250, rect, 2400, 1600, 1)).toHaveLength(2);
  });
});

describe("fitSize", () => {
  it("follows the container width and keeps the aspect ratio", () => {
    expect(fitSize(500, 1024, 683, 1024)).toEqual({ width: 500, height: (500 * 683) / 1024 });
    expect(fitSize(2000, 1024, 683, 1024).width).toBe(1024);
  });
});
