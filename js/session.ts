// The view's side of the SamWidget protocol (sam_widget/protocol.py is the kernel's): one
// `Session` per widget model, shared by all its views. It sends prompts and edits with sequence
// numbers and the revision they were based on, drops answers that are out of date, decodes the
// image, masks, objects and hover masks as they arrive, and tells the views when to redraw.
// It knows nothing of the DOM beyond `createImageBitmap`.

import { area, decodeMasks, unpackMask, type MaskSet } from "./codec";
import { type Box, type Point } from "./geometry";
import { EMPTY, UndoStack, type PromptState } from "./history";
import { HoverScheduler } from "./hover";
import { asView, probeWire } from "./wire";

/** Mirrors the synced traits of `SamWidget` in sam_widget/widget.py: keep the two in step. */
export interface SamWidgetModel {
  points: Point[];
  box: Box | null;
  selected: number;
  scores: number[];
  objects: WireObject[];
  status: string;
  message: string;
  opacity: number;
  hover: boolean;
  refine: boolean;
  multimask: boolean;
  /** a short notice shown until dismissed (e.g. SAM's weights are missing: how to get them) */
  notice: string;
  /** "ready" | "running" | "unavailable: why" (the Everything button and its Stop) */
  everything_state: string;
  engine: string;
  device: string;
  image_width: number;
  image_height: number;
  display_width: number;
  display_height: number;
  can_undo: boolean;
  can_redo: boolean;
  history: PromptState[];
  history_index: number;
  index: number;
  count: number;
  image_name: string;
  labels: string[];
  label_colors: string[];
  label: string | null;
  prompt_rev: number;
  mask_rev: number;
  prompt_seq: string;
  _uid: string;
  /** the mask revision this page drew after its own last action: a frontend-made change, so
   * hosts that re-run code on view changes (marimo) see every click, not only tab changes */
  _view_rev: number;
  /** "binary" or "base64": how bytes travel (js/wire.ts); bytes traits are strings in base64 */
  _wire: string;
  _image: DataView | string;
  _masks: DataView | string;
}

/** A committed object as it crosses the wire (the full-size mask stays in Python). */
export interface WireObject {
  id: number;
  name: string;
  label: string | null;
  color: string;
  score: number;
  visible: boolean;
  mask: DataView | string;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

type Key = keyof SamWidgetModel;
export interface AnyModel {
  get<K extends Key>(key: K): SamWidgetModel[K];
  set<K extends Key>(key: K, value: SamWidgetModel[K]): void;
  save_changes(): void;
  send(content: unknown, callbacks?: unknown, buffers?: ArrayBuffer[] | ArrayBufferView[]): void;
  on(name: string, cb: (...args: any[]) => void): void;
  off(name: string, cb?: (...args: any[]) => void): void;
}

/** an unacknowledged message older than this makes the status line say "queued" */
const QUEUED_AFTER_MS = 400;

/** What all views of one widget share: the protocol with the kernel. */
export class Session {
  readonly client = Math.random().toString(36).slice(2, 10);
  private seq = 0;
  /** prompts this page sent and the kernel has not acknowledged yet */
  local: (PromptState & { seq: number }) | null = null;
  masks: MaskSet | null = null;
  masksRev = -1;
  /** "binary" | "base64", once the start-up probe (js/wire.ts) has answered */
  wire = "";
  objectMasks = new Map<number, Uint8Array>();
  /** the wire bytes each object mask was decoded from: ids restart on every image and an edit
   * keeps its object's id, so a cached mask is reused only for the very same bytes */
  private objectBytes = new Map<number, Uint8Array>();
  /** the objects `objectMasks` belongs to (the latest list once its masks are decoded) and a
   * number bumped with each (views redraw the objects layer) */
  objectsLoaded: WireObject[] = [];
  objectsVersion = 0;
  private objectsLoad = 0;
  image: ImageBitmap | null = null;
  hoverMask: { mask: Uint8Array; rev: number; width: number; height: number } | null = null;
  hover: HoverScheduler;
  private views = new Set<() => void>();
  private clickStart: number | null = null;
  private clickSeq = -1;
  private clickRev = -1;
  /** prompt revision the kernel gave this page's last action; reported once its masks arrive */
  private awaitRev = -1;
  private cleanups: (() => void)[] = [];
  /** when the oldest message the kernel has not acknowledged was sent (null: none) */
  waitingSince: number | null = null;
  private waitTimer: ReturnType<typeof setTimeout> | null = null;
  /** the kernel is gone (restarted, shut down): nothing can be sent */
  disconnected = false;

  constructor(readonly model: AnyModel) {
    this.hover = new HoverScheduler((seq, x, y) =>
      this.post({ type: "hover", client: this.client, seq, x, y }),
    );
    const on = (name: string, cb: (...args: any[]) => void) => {
      model.on(name, cb);
      this.cleanups.push(() => model.off(name, cb));
    };
    on("change:_image", () => this.loadImage());
    probeWire(model, this.client).then((mode) => { this.wire = mode; });
    on("change:_masks", () => this.loadMasks());
    on("change:objects", () => this.loadObjects());
    on("change:prompt_seq", () => this.ackSeq());
    on("msg:custom", (msg: any, buffers: DataView[]) => this.onCustom(msg, buffers));
    // ipywidgets marks every model of a restarting (or shut down) kernel as no longer live;
    // a model's comm is live from its creation, so this event only ever means "gone" (the
    // anywidget model proxy does not expose `comm_live` itself)
    on("comm_live_update", () => {
      // anywidget hands views a proxy without `comm_live`; the event itself only fires when
      // the backbone model's comm goes from live to dead (kernel restart or shutdown)
      this.disconnected = (model as any).comm_live !== true;
      this.notify();
    });
    for (const name of ["points", "box", "selected", "scores", "status", "message", "opacity",
      "hover", "can_undo", "can_redo", "prompt_rev", "mask_rev", "index", "count", "image_name",
      "labels", "label", "label_colors", "everything_state", "notice"]) {
      on(`change:${name}`, () => this.notify());
    }
    this.loadImage();
    this.loadMasks();
    this.loadObjects();
  }

  dispose(): void {
    if (this.waitTimer) clearTimeout(this.waitTimer);
    this.cleanups.forEach((f) => f());
    this.views.clear();
  }

  subscribe(redraw: () => void): () => void {
    this.views.add(redraw);
    return () => this.views.delete(redraw);
  }

  notify(): void {
    this.views.forEach((f) => f());
  }

  /** Prompts to draw: this page's unacknowledged edit, else the kernel's. */
  prompts(): PromptState {
    if (this.local) return this.local;
    return { points: this.model.get("points") ?? [], box: this.model.get("box") ?? null };
  }

  stack(): UndoStack {
    const states = this.model.get("history") ?? [EMPTY];
    return new UndoStack(states, this.model.get("history_index") ?? states.length - 1);
  }

  private nextSeq(): number {
    this.seq += 1;
    return this.seq;
  }

  /** Send to the kernel; false (and the view says so) when it cannot be reached. */
  private post(content: Record<string, unknown>): boolean {
    if (this.disconnected) {
      this.notify();
      return false;
    }
    try {
      this.model.send(content);
      return true;
    } catch (err) {
      console.warn("sam-widget: the kernel cannot be reached", err);
      this.disconnected = true;
      this.notify();
      return false;
    }
  }

  /** A message the kernel acknowledges (prompt_seq): tagged with the revision it was based on
   * (the kernel drops it if its state has moved on); after a while unanswered, the view says
   * it is queued behind a busy kernel. */
  private request(content: Record<string, unknown>): number {
    const seq = this.nextSeq();
    const rev = this.model.get("prompt_rev") ?? 0;
    if (!this.post({ ...content, client: this.client, seq, rev })) return seq;
    if (this.waitingSince === null) {
      this.waitingSince = performance.now();
      this.waitTimer = setTimeout(() => this.notify(), QUEUED_AFTER_MS);
    }
    return seq;
  }

  /** What the status line says about the link to the kernel, or null when all is well. */
  linkStatus(): string | null {
    if (this.disconnected) return "disconnected from the kernel: re-run the cell to continue";
    if (this.waitingSince !== null && performance.now() - this.waitingSince >= QUEUED_AFTER_MS) {
      return "queued: the kernel is busy; your prompt is answered when it is free";
    }
    return null;
  }

  sendPrompt(state: PromptState, kind = "prompt"): void {
    if (this.disconnected) return this.notify();
    const seq = this.request({ type: kind, points: state.points, box: state.box });
    this.local = { ...state, seq };
    this.clickStart = performance.now();
    this.clickSeq = seq;
    this.clickRev = -1;
    performance.mark("sam:prompt", { detail: { seq } });
    this.hoverMask = null;
    this.notify();
  }

  /** Undo/redo/clear: drawn at once from the synced history, confirmed by the kernel. */
  sendEdit(kind: "undo" | "redo" | "clear"): void {
    const stack = this.stack();
    if (this.disconnected) return this.notify();
    const next = kind === "undo" ? stack.undo() : kind === "redo" ? stack.redo() : stack.clear();
    const seq = this.request({ type: kind });
    this.local = { ...next, seq };
    this.hoverMask = null;
    this.notify();
  }

  sendCommit(): void {
    this.request({ type: "commit" });
  }

  send(content: Record<string, unknown>): void {
    this.request(content);
  }

  private ackSeq(): void {
    const [client, seq] = (this.model.get("prompt_seq") ?? "").split(":");
    if (client !== this.client) return;
    if (Number(seq) >= this.seq) {
      this.waitingSince = null; // everything this view sent has been handled
      if (this.waitTimer) clearTimeout(this.waitTimer);
    }
    if (Number(seq) === this.clickSeq) this.clickRev = this.model.get("prompt_rev");
    this.awaitRev = this.model.get("prompt_rev");
    if (this.local && Number(seq) >= this.local.seq) this.local = null;
    this.notify();
  }

  private async loadImage(): Promise<void> {
    const view = asView(this.model.get("_image"));
    if (!view || view.byteLength === 0) return;
    const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
    try {
      this.image = await createImageBitmap(new Blob([bytes as Uint8Array<ArrayBuffer>]));
    } catch (err) {
      console.error("sam-widget: cannot decode the image", err);
    }
    this.notify();
  }

  private async loadMasks(): Promise<void> {
    const view = asView(this.model.get("_masks"));
    const rev = this.model.get("mask_rev");
    performance.mark("sam:masks-received", { detail: { rev } }); // for latency breakdowns
    try {
      const masks = view && view.byteLength > 0 ? await decodeMasks(view) : null;
      performance.mark("sam:masks-decoded", { detail: { rev } });
      if (rev < this.masksRev) return; // an older answer finished decoding late: drop it
      this.masks = masks;
      this.masksRev = rev;
      if (this.awaitRev >= 0 && rev >= this.awaitRev) {
        this.awaitRev = -1;
        this.model.set("_view_rev", rev);
        this.model.save_changes();
      }
    } catch (err) {
      console.error("sam-widget: cannot decode masks", err);
      return;
    }
    this.notify();
  }

  /** A view drew the overlay of mask revision `rev` in this frame: measure click -> overlay
   * (the frame is painted right after its requestAnimationFrame callbacks). */
  overlayDrawn(rev: number): void {
    if (this.clickStart !== null && this.clickRev >= 0 && rev >= this.clickRev) {
      const start = this.clickStart;
      this.clickStart = null;
      performance.measure("sam:click-to-overlay", { start, end: performance.now() });
    }
  }

  private async loadObjects(): Promise<void> {
    const load = ++this.objectsLoad;
    const next = new Map<number, Uint8Array>();
    const nextBytes = new Map<number, Uint8Array>();
    const objects = this.model.get("objects") ?? [];
    for (const obj of objects) {
      const view = asView(obj.mask)!;
      const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
      const cached = this.objectMasks.get(obj.id);
      const from = this.objectBytes.get(obj.id);
      if (cached && from && sameBytes(from, bytes)) {
        next.set(obj.id, cached);
        nextBytes.set(obj.id, from);
        continue;
      }
      try {
        const set = await decodeMasks(view);
        next.set(obj.id, unpackMask(set, 0));
        nextBytes.set(obj.id, bytes.slice());
      } catch (err) {
        console.error("sam-widget: cannot decode object mask", err);
      }
    }
    if (load !== this.objectsLoad) return; // a newer list arrived while decoding
    this.objectMasks = next;
    this.objectBytes = nextBytes;
    this.objectsLoaded = objects;
    this.objectsVersion++;
    this.notify();
  }

  private async onCustom(msg: any, buffers: DataView[]): Promise<void> {
    if (!msg || msg.type !== "hover") return;
    const position = this.hover.positionOf(msg.seq);
    this.hover.answered(msg.seq);
    const data = buffers?.length ? buffers[0] : asView(msg.data);
    if (msg.empty || !data || position === null) return;
    if (msg.rev !== this.model.get("prompt_rev") || this.local) return; // prompts moved on
    try {
      const set = await decodeMasks(data);
      const mask = unpackMask(set, 0);
      this.hoverMask = { mask, rev: msg.rev, width: set.width, height: set.height };
      performance.mark("sam:hover-drawn", {
        detail: { seq: msg.seq, x: position[0], y: position[1], area: area(mask) },
      });
    } catch (err) {
      console.error("sam-widget: cannot decode hover mask", err);
    }
    this.notify();
  }
}

const sessions = new Map<string, Session>();

export function sessionFor(model: AnyModel): Session {
  const uid = model.get("_uid");
  let s = sessions.get(uid);
  if (!s) {
    s = new Session(model);
    sessions.set(uid, s);
  }
  return s;
}

/** The model is gone (its widget closed): end its session and forget it. */
export function endSession(model: AnyModel, session: Session): void {
  session.dispose();
  sessions.delete(model.get("_uid"));
}
