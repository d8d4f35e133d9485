// Brush state, wheel stepping, the host/widget split of keys and the base64 wire fallback.
import { describe, expect, it } from "vitest";
import { passesToHost } from "./keys";
import { fitImage } from "./layout";
import { BrushTool, wheelStep } from "./tools";
import { asView, isProbe, PROBE } from "./wire";

describe("brush", () => {
  it("toggles modes, resizes with [ ] and sends strokes in image pixels", () => {
    const b = new BrushTool();
    expect(b.toggle("brush")).toBe("brush");
    const r = b.radius;
    expect(b.resize(1)).toBeGreaterThan(r);
    b.resize(-1);
    b.add(10, 10, 2);
    b.add(10.5, 10, 2); // too close: skipped
    b.add(40, 10, 2);
    const msg = b.finish(2)!;
    expect(msg).toMatchObject({ type: "stroke", mode: "add", radius: b.radius * 2, target: null });
    expect(msg.points).toEqual([[10, 10], [40, 10]]);
    expect(b.toggle("eraser")).toBe("eraser");
    expect(b.toggle("eraser")).toBe("prompt");
    expect(b.finish(1)).toBeNull();
  });
});

describe("wheel", () => {
  it("steps candidates only with a modifier, wrapping around", () => {
    const e = { deltaX: 0, deltaY: 100, altKey: true, shiftKey: false };
    expect(wheelStep(e, 2, 3)).toBe(0);
    expect(wheelStep({ ...e, deltaY: -100 }, 0, 3)).toBe(2);
    expect(wheelStep({ ...e, altKey: false }, 0, 3)).toBeNull(); // plain wheel scrolls
    expect(wheelStep({ ...e, altKey: false, shiftKey: true, deltaY: 0, deltaX: 50 }, 0, 3)).toBe(1);
    expect(wheelStep(e, 0, 1)).toBeNull();
  });
});

describe("keys", () => {
  it("lets chords and Shift+Enter through to the host, keeps plain keys", () => {
    const k = { key: "z", ctrlKey: false, metaKey: false, altKey: false, shiftKey: false };
    expect(passesToHost(k)).toBe(false);
    expect(passesToHost({ ...k, key: "Z", shiftKey: true })).toBe(false);
    expect(passesToHost({ ...k, key: "s", ctrlKey: true })).toBe(true);
    expect(passesToHost({ ...k, key: "Enter", shiftKey: true })).toBe(true);
  });
});

describe("layout", () => {
  it("fits a portrait image into the visible height, leaving room for the controls", () => {
    const fit = fitImage({ width: 1200, visibleHeight: 780, chromeHeight: 90, imageWidth: 512,
      imageHeight: 1024, mode: "fit" });
    expect(fit.height).toBeLessThanOrEqual(690);
    expect(fit.width / fit.height).toBeCloseTo(0.5, 1);
    const wide = fitImage({ width: 300, visibleHeight: 780, chromeHeight: 90, imageWidth: 1024,
      imageHeight: 768, mode: "fit" });
    expect(wide.width).toBe(300); // a narrow split view: the width decides
    const full = fitImage({ width: 300, visibleHeight: 780, chromeHeight: 90, imageWidth: 1024,
      imageHeight: 768, mode: "full" });
    expect([full.width, full.height, full.viewportHeight]).toEqual([1024, 768, 690]);
  });
});

describe("wire", () => {
  it("reads bytes traits sent as base64 exactly like binary ones", () => {
    const bin = asView(new DataView(PROBE.buffer))!;
    const b64 = asView(btoa("sam!"))!;
    expect(isProbe(bin)).toBe(true);
    expect(Array.from(new Uint8Array(b64.buffer))).toEqual(Array.from(PROBE));
    expect(asView("")!.byteLength).toBe(0);
    expect(isProbe(new Uint8Array([1, 2, 3, 4]))).toBe(false);
  });
});
