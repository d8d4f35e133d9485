// Binary buffers or base64: how bytes (image, masks) cross the wire on this host.
//
// JupyterLab, Notebook 7, Voila and marimo carry binary buffers; some hosts (older Colab and
// VS Code renderers, custom widget managers) drop or mangle them. At start-up the view sends a
// probe with a 4-byte buffer and the kernel answers with one; if either direction fails, the
// view asks the kernel for base64 (the `_wire` trait of sam_widget/widget.py), and every bytes
// value then arrives as a base64 string, which `asView` turns back into a DataView.

/** The probe's bytes: "sam!" */
export const PROBE = new Uint8Array([0x73, 0x61, 0x6d, 0x21]);

/** A bytes trait or buffer as a DataView, whether it came as binary or as base64 text. */
export function asView(value: unknown): DataView | null {
  if (value == null) return null;
  if (value instanceof DataView) return value;
  if (typeof value === "string") {
    if (!value) return new DataView(new ArrayBuffer(0));
    const text = atob(value);
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    return new DataView(bytes.buffer);
  }
  if (value instanceof ArrayBuffer) return new DataView(value);
  if (ArrayBuffer.isView(value)) return new DataView(value.buffer, value.byteOffset, value.byteLength);
  return null;
}

/** Do these bytes equal the probe's? */
export function isProbe(value: unknown): boolean {
  const view = value instanceof DataView || value instanceof ArrayBuffer || ArrayBuffer.isView(value)
    ? asView(value) : null;
  if (!view || view.byteLength !== PROBE.length) return false;
  for (let i = 0; i < PROBE.length; i++) if (view.getUint8(i) !== PROBE[i]) return false;
  return true;
}

interface ProbeModel {
  get(key: "_wire"): string;
  send(content: unknown, callbacks?: unknown, buffers?: ArrayBuffer[] | ArrayBufferView[]): void;
  on(name: string, cb: (...args: any[]) => void): void;
  off(name: string, cb?: (...args: any[]) => void): void;
}

/**
 * Test the binary path once; resolves to "binary" or "base64" (and has asked the kernel for
 * base64 in the second case). `force` (window.samWidgetWire === "base64") skips the test.
 */
export function probeWire(model: ProbeModel, client: string, timeoutMs = 10000): Promise<string> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (mode: string) => {
      if (done) return;
      done = true;
      model.off("msg:custom", onMsg);
      clearTimeout(timer);
      if (mode === "base64" && model.get("_wire") !== "base64") {
        model.send({ type: "wire", client, mode: "base64" });
      }
      resolve(mode);
    };
    const onMsg = (msg: any, buffers: unknown[]) => {
      if (!msg || msg.type !== "wire-probe" || msg.client !== client) return;
      finish(msg.received && isProbe(buffers?.[0]) ? "binary" : "base64");
    };
    const forced = (globalThis as any).samWidgetWire === "base64";
    // no answer at all (the kernel never got the message): keep binary, it may just be slow
    const timer = setTimeout(() => finish("binary"), timeoutMs);
    if (forced) {
      finish("base64");
      return;
    }
    model.on("msg:custom", onMsg);
    try {
      model.send({ type: "wire-probe", client }, undefined, [PROBE.slice()]);
    } catch {
      finish("base64");
    }
  });
}
