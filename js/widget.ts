// The SamWidget frontend (anywidget): the image and its mask overlay on canvases, prompts by
// click and drag, the candidate masks as an ARIA tab list, hover preview, undo/redo/clear,
// committed objects. The protocol with the kernel (sequence numbers, decoded masks, hover
// scheduling) is `Session` in ./session.ts, one per model (`initialize`); the DOM is built in
// `render` (once per view); both return cleanups.

import { hexColor, paintMask } from "./codec";
import CSS from "./widget.css";
import { activeIn, bindKeys, keepFocus } from "./keys";
import { fitImage, visibleHeight } from "./layout";
import { MaskLayer, currentStyle, objectStyle } from "./overlay";
import { followTheme } from "./theme";
import { BrushTool, wheelStep } from "./tools";
import {
  clickPoints, clientToPixel, dragToBox, imageToCanvas,
  type Box, type Rect,
} from "./geometry";
import { endSession, sessionFor, type AnyModel } from "./session";

const HOVER_COLOR: [number, number, number] = [255, 215, 0];

function h<K extends keyof HTMLElementTagNameMap>(
  tag: K, attrs: Record<string, string> = {}, text = "",
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text) el.textContent = text;
  return el;
}

export default {
  initialize({ model }: { model: AnyModel }) {
    const session = sessionFor(model);
    return () => endSession(model, session);
  },

  render({ model, el }: { model: AnyModel; el: HTMLElement }) {
    const session = sessionFor(model);
    const doc = el.ownerDocument;
    const root = h("div", {
      class: "sam-widget", tabindex: "0", "aria-label": "Segment Anything: click the image to segment",
      "data-jp-suppress-context-menu": "",
    });
    root.append(h("style", {}, CSS));

    // the image in a box that scrolls only at full size; layers at display resolution
    const viewport = h("div", { class: "sam-viewport" });
    const stage = h("div", { class: "sam-stage" });
    const imageCanvas = h("canvas", { class: "sam-image", "aria-hidden": "true" });
    const objectLayer = new MaskLayer(doc, "sam-layer sam-objects-layer");
    const currentLayer = new MaskLayer(doc, "sam-layer sam-overlay");
    const markerCanvas = h("canvas", {
      class: "sam-markers", role: "img",
      "aria-label": "Image: left click adds a foreground point, right or shift click a background point, drag draws a box",
      title: "Click: object · right-click or shift-click: background · drag: box · click a point again (within 8 px) to remove it · Alt+wheel: next candidate",
    });
    const hint = h("div", { class: "sam-hint", "aria-hidden": "true" },
      "Click an object · right-click: background · drag: box");
    stage.append(imageCanvas, objectLayer.canvas, currentLayer.canvas, markerCanvas, hint);
    viewport.append(stage);

    const bar = h("div", { class: "sam-bar", role: "toolbar", "aria-label": "Segmentation tools" });
    const undoBtn = h("button", { "aria-label": "Undo", title: "Undo the last prompt or stroke (z)" }, "↶ Undo");
    const redoBtn = h("button", { "aria-label": "Redo", title: "Redo (shift+z)" }, "↷ Redo");
    const clearBtn = h("button", { "aria-label": "Clear", title: "Clear prompts (Esc)" }, "Clear");
    const addBtn = h("button", { "aria-label": "Add object", title: "Keep this mask as an object and start the next one (Enter)" }, "Add object");
    const allBtn = h("button", { "aria-label": "Everything", title: "Segment everything: SAM's automatic masks, each kept as an object" }, "Everything");
    const stopBtn = h("button", { "aria-label": "Stop", title: "Stop segmenting everything (nothing is added)", hidden: "" }, "■ Stop");
    const brushBtn = h("button", { "aria-label": "Brush", "aria-pressed": "false", title: "Brush: paint onto the current mask, or onto the object chosen in the list (b; size: [ and ])" }, "Brush");
    const eraserBtn = h("button", { "aria-label": "Eraser", "aria-pressed": "false", title: "Eraser: remove pixels from the current mask or the chosen object (e; size: [ and ])" }, "Eraser");
    const fullBtn = h("button", { "aria-label": "Full size", "aria-pressed": "false", title: "Show the image at full display resolution (scrolls), or fit it to the window (f)" }, "⤢");
    const hoverLabel = h("label", { title: "Hover preview: faintly show (in yellow) the mask a click at the pointer would give" });
    const hoverBox = h("input", { type: "checkbox", "aria-label": "Hover preview" });
    hoverLabel.append(hoverBox, "hover");
    const refineLabel = h("label", { title: "Refine: feed the chosen mask back into SAM with the next prompt, so each point corrects it instead of starting over" });
    const refineBox = h("input", { type: "checkbox", "aria-label": "Refine" });
    refineLabel.append(refineBox, "refine");
    const opacityLabel = h("label", { title: "Opacity of the mask fill" });
    const opacity = h("input", { type: "range", min: "0", max: "1", step: "0.05", "aria-label": "Opacity" });
    opacityLabel.append("opacity", opacity);
    const tabs = h("div", {
      class: "sam-tabs", role: "tablist",
      "aria-label": "Candidate masks, each with SAM's predicted IoU (its own estimate of mask quality)",
      title: "SAM's three candidates; the number is its predicted IoU, an estimate of mask quality (keys 1-3, Alt+wheel)",
    });
    bar.append(undoBtn, redoBtn, clearBtn, addBtn, allBtn, stopBtn, h("span", { class: "sam-sep" }), tabs,
      h("span", { class: "sam-sep" }), brushBtn, eraserBtn, hoverLabel, refineLabel, opacityLabel, fullBtn);

    // dataset navigation and class labels (shown when there are several images / labels)
    const nav = h("div", { class: "sam-bar sam-nav", role: "toolbar", "aria-label": "Images" });
    const prevBtn = h("button", { "aria-label": "Previous image", title: "Previous image (p, PageUp)" }, "◀");
    const nextBtn = h("button", { "aria-label": "Next image", title: "Next image (n, PageDown)" }, "▶");
    const position = h("input", {
      class: "sam-position", type: "text", inputmode: "numeric", size: "5",
      "aria-label": "Image number", title: "Type an image number and press Enter to jump there",
    });
    const countLabel = h("span", { class: "sam-count" });
    const nameLabel = h("span", { class: "sam-name" });
    const labelPick = h("select", { "aria-label": "Label", title: "Label of the next object (shift+1…9)" });
    nav.append(prevBtn, position, countLabel, nextBtn, nameLabel, labelPick);

    const objectList = h("ul", { class: "sam-objects", "aria-label": "Objects" });
    const status = h("div", { class: "sam-status", role: "status", "aria-live": "polite" });
    const notice = h("div", { class: "sam-notice", role: "note", hidden: "" });
    const noticeText = h("span", { class: "sam-notice-text" });
    const noticeClose = h("button", { "aria-label": "Dismiss notice", title: "Dismiss this notice" }, "×");
    notice.append(noticeText, noticeClose);
    root.append(notice, viewport, nav, bar, objectList, status);
    el.append(root);
    const stopTheme = followTheme(root);
    const brush = new BrushTool();

    // ---------------------------------------------------------------- sizing (fit, HiDPI)
    let cssW = 0;
    let cssH = 0;
    let full = false;
    const dims = () => ({
      iw: model.get("image_width"), ih: model.get("image_height"),
      dw: model.get("display_width"), dh: model.get("display_height"),
    });
    const layout = () => {
      const { dw, dh } = dims();
      if (!dw || !dh) return;
      const chrome = Math.max(0, root.offsetHeight - viewport.offsetHeight) + 8;
      const fit = fitImage({
        width: root.clientWidth || el.clientWidth || dw, visibleHeight: visibleHeight(root),
        chromeHeight: chrome, imageWidth: dw, imageHeight: dh, mode: full ? "full" : "fit",
      });
      viewport.style.maxHeight = fit.viewportHeight === null ? "" : `${fit.viewportHeight}px`;
      const dpr = window.devicePixelRatio || 1;
      const changed = fit.width !== cssW || fit.height !== cssH;
      cssW = fit.width;
      cssH = fit.height;
      stage.style.width = `${cssW}px`;
      stage.style.height = `${cssH}px`;
      stage.classList.toggle("sam-upscaled", cssW * dpr > dw * 1.01);
      objectLayer.resize(dw, dh);
      currentLayer.resize(dw, dh);
      if (changed || !imageCanvas.width) {
        for (const c of [imageCanvas, markerCanvas]) {
          c.width = Math.max(1, Math.round(cssW * dpr));
          c.height = Math.max(1, Math.round(cssH * dpr));
        }
        imageDrawn = null;
      }
      schedule();
    };

    // ---------------------------------------------------------------- drawing (one per frame)
    let imageDrawn: ImageBitmap | null = null;
    const drawImage = () => {
      if (session.image === imageDrawn) return; // only when the image or the size changed
      const ctx = imageCanvas.getContext("2d");
      if (!ctx) return;
      ctx.clearRect(0, 0, imageCanvas.width, imageCanvas.height);
      if (session.image) {
        ctx.imageSmoothingEnabled = true;
        ctx.imageSmoothingQuality = "high";
        ctx.drawImage(session.image, 0, 0, imageCanvas.width, imageCanvas.height);
      }
      imageDrawn = session.image;
    };

    let objectsKey = "";
    let currentKey = "";
    const drawMasks = () => {
      const { dw, dh } = dims();
      const alpha = Math.round(255 * Math.min(1, Math.max(0, model.get("opacity"))));
      const objects = session.objectsLoaded; // never a new list with the last image's masks
      const oKey = JSON.stringify([alpha, dw, dh, session.objectsVersion]);
      if (oKey !== objectsKey) {
        objectsKey = oKey;
        objectLayer.clear();
        for (const obj of objects) {
          const m = session.objectMasks.get(obj.id);
          if (obj.visible && m) objectLayer.paintMask(m, objectStyle(hexColor(obj.color), alpha));
        }
        objectLayer.flush();
      }
      const masks = session.masks;
      const selected = model.get("selected");
      const cKey = `${session.masksRev}|${masks?.count}|${selected}|${alpha}|${dw}|${dh}`;
      if (cKey !== currentKey) {
        currentKey = cKey;
        currentLayer.clear();
        if (masks && masks.count > 0) {
          currentLayer.paintPacked(masks, Math.min(Math.max(selected, 0), masks.count - 1), currentStyle(alpha));
        }
        currentLayer.flush();
        session.overlayDrawn(session.masksRev);
      }
      // what is on screen, for tests and assistive tooling
      root.dataset.maskRev = String(session.masksRev);
      root.dataset.selected = String(selected);
    };

    const hoverCanvas = document.createElement("canvas");
    let hoverDrawn: unknown = null;
    let dragBox: Box | null = null;
    let pointerInside = false;
    let pointerAt: [number, number] | null = null; // CSS px within the stage, for the brush ring
    const drawMarkers = () => {
      const ctx = markerCanvas.getContext("2d");
      if (!ctx) return;
      const W = markerCanvas.width;
      const H = markerCanvas.height;
      const { iw, ih, dw } = dims();
      const dpr = window.devicePixelRatio || 1;
      ctx.clearRect(0, 0, W, H);
      const hm = session.hoverMask;
      if (hm && model.get("hover") && pointerInside && !brush.active && hm.rev === model.get("prompt_rev")) {
        if (hoverDrawn !== hm) {
          hoverCanvas.width = hm.width;
          hoverCanvas.height = hm.height;
          const hctx = hoverCanvas.getContext("2d")!;
          const img = hctx.createImageData(hm.width, hm.height);
          paintMask(img.data, hm.mask, hm.width, hm.height, HOVER_COLOR, 70, 160);
          hctx.putImageData(img, 0, 0);
          hoverDrawn = hm;
        }
        ctx.imageSmoothingEnabled = false;
        ctx.drawImage(hoverCanvas, 0, 0, W, H);
      }
      const { points, box } = session.prompts();
      const drawBox = (b: Box, dashed: boolean) => {
        const [x0, y0] = imageToCanvas(b[0], b[1], iw, ih, W, H);
        const [x1, y1] = imageToCanvas(b[2], b[3], iw, ih, W, H);
        ctx.save();
        ctx.lineWidth = 2 * dpr;
        ctx.setLineDash(dashed ? [6 * dpr, 4 * dpr] : []);
        ctx.strokeStyle = "#fff";
        ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
        ctx.strokeStyle = "#ff00ff";
        ctx.lineWidth = 1 * dpr;
        ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
        ctx.restore();
      };
      if (box) drawBox(box, false);
      if (dragBox) drawBox(dragBox, true);
      for (const [x, y, label] of points) {
        const [cx, cy] = imageToCanvas(x + 0.5, y + 0.5, iw, ih, W, H);
        ctx.beginPath();
        ctx.arc(cx, cy, 5 * dpr, 0, 2 * Math.PI);
        ctx.fillStyle = label === 1 ? "#2e7d32" : "#c62828";
        ctx.fill();
        ctx.lineWidth = 1.5 * dpr;
        ctx.strokeStyle = "#fff";
        ctx.stroke();
      }
      if (brush.active) {
        // the stroke being drawn, then the brush ring under the pointer
        const r = (brush.radius * W) / Math.max(1, dw);
        ctx.save();
        ctx.lineCap = ctx.lineJoin = "round";
        ctx.lineWidth = 2 * r;
        ctx.strokeStyle = brush.mode === "brush" ? "rgba(255,0,255,.45)" : "rgba(255,255,255,.55)";
        if (brush.stroke.length) {
          ctx.beginPath();
          brush.stroke.forEach(([x, y], i) => {
            const [cx, cy] = imageToCanvas(x, y, iw, ih, W, H);
            if (i === 0) ctx.moveTo(cx, cy);
            else ctx.lineTo(cx, cy);
          });
          if (brush.stroke.length === 1) ctx.lineTo(...imageToCanvas(brush.stroke[0][0] + 0.01, brush.stroke[0][1], iw, ih, W, H));
          ctx.stroke();
        }
        if (pointerAt && pointerInside) {
          ctx.lineWidth = 1.5 * dpr;
          ctx.strokeStyle = "#fff";
          ctx.beginPath();
          ctx.arc(pointerAt[0] * dpr, pointerAt[1] * dpr, r, 0, 2 * Math.PI);
          ctx.stroke();
          ctx.setLineDash([3 * dpr, 3 * dpr]);
          ctx.strokeStyle = "#000";
          ctx.stroke();
        }
        ctx.restore();
      }
    };

    const disable = (btn: HTMLButtonElement, off: boolean) => {
      // a focused button that turns disabled drops focus to <body>: hand it to the widget first
      if (off && !btn.disabled && activeIn(root) === btn) root.focus({ preventScroll: true });
      btn.disabled = off;
    };
    // rebuilding a list that holds the focus (a tab, a delete button) must not drop it to <body>
    const rebuild = (list: HTMLElement, children: HTMLElement[]) => {
      const active = activeIn(root);
      const had = !!active && list.contains(active);
      list.replaceChildren(...children);
      if (had) root.focus({ preventScroll: true });
    };
    const drawControls = () => {
      disable(undoBtn, !model.get("can_undo"));
      disable(redoBtn, !model.get("can_redo"));
      hoverBox.checked = model.get("hover");
      refineBox.checked = model.get("refine");
      opacity.value = String(model.get("opacity"));
      brushBtn.setAttribute("aria-pressed", String(brush.mode === "brush"));
      eraserBtn.setAttribute("aria-pressed", String(brush.mode === "eraser"));
      fullBtn.setAttribute("aria-pressed", String(full));
      const every = model.get("everything_state") ?? "ready";
      disable(allBtn, every !== "ready");
      allBtn.title = every.startsWith("unavailable")
        ? every.slice("unavailable: ".length)
        : "Segment everything: SAM's automatic masks, each kept as an object (progress and count below; Stop ends it)";
      stopBtn.hidden = every !== "running";
      stage.classList.toggle("sam-brush", brush.active);
      const scores = model.get("scores") ?? [];
      const selected = model.get("selected");
      if (tabs.children.length !== scores.length) {
        rebuild(tabs, scores.map((_, i) => {
          const tab = h("button", { role: "tab", "data-index": String(i) });
          tab.addEventListener("click", () => {
            select(i);
            keepFocus(root);
          });
          return tab;
        }));
      }
      scores.forEach((s, i) => {
        const tab = tabs.children[i] as HTMLElement;
        const on = i === selected;
        tab.setAttribute("aria-selected", String(on));
        tab.tabIndex = on ? 0 : -1;
        tab.textContent = `${i + 1} · ${s.toFixed(2)}`;
        tab.title = `Candidate ${i + 1}: predicted IoU ${s.toFixed(3)}, SAM's own estimate of its quality (key ${i + 1})`;
      });
      const count = model.get("count") ?? 1;
      const index = model.get("index") ?? 0;
      const labels = model.get("labels") ?? [];
      nav.hidden = count <= 1 && labels.length === 0;
      for (const el of [prevBtn, nextBtn, position, countLabel, nameLabel]) el.hidden = count <= 1;
      prevBtn.disabled = index <= 0;
      nextBtn.disabled = index >= count - 1;
      if (document.activeElement !== position) position.value = String(index + 1);
      countLabel.textContent = `/ ${count}`;
      nameLabel.textContent = model.get("image_name") ?? "";
      labelPick.hidden = labels.length === 0;
      const labelSig = JSON.stringify(labels);
      if (labelPick.dataset.sig !== labelSig) {
        labelPick.dataset.sig = labelSig;
        labelPick.replaceChildren(h("option", { value: "" }, "(no label)"),
          ...labels.map((name, i) => h("option", { value: name }, i < 9 ? `${name} (⇧${i + 1})` : name)));
      }
      labelPick.value = model.get("label") ?? "";
      const colors = model.get("label_colors") ?? [];
      const current = labels.indexOf(model.get("label") ?? "");
      labelPick.style.borderColor = current >= 0 ? colors[current] ?? "" : "";

      const objects = model.get("objects") ?? [];
      if (brush.target !== null && !objects.some((o) => o.id === brush.target)) brush.target = null;
      const sig = JSON.stringify([brush.target, labels, objects.map((o) => [o.id, o.name, o.visible, o.color, o.label])]);
      if (objectList.dataset.sig !== sig) {
        objectList.dataset.sig = sig;
        rebuild(objectList, objects.map((o) => {
          const li = h("li");
          const sw = h("span", { class: "sam-swatch" });
          sw.style.background = o.color;
          const vis = h("input", { type: "checkbox", "aria-label": `Show ${o.name}`, title: `Show or hide ${o.name}` });
          vis.checked = o.visible;
          vis.addEventListener("change", () => session.send({ type: "object", id: o.id, visible: vis.checked }));
          const pick = h("button", {
            "aria-label": `Edit ${o.name} with the brush`, "aria-pressed": String(brush.target === o.id),
            title: `Brush and eraser edit ${o.name} (click again: the current mask)`,
          }, `${o.name} (${o.score.toFixed(2)})`);
          pick.addEventListener("click", () => {
            brush.target = brush.target === o.id ? null : o.id;
            if (brush.target !== null && !brush.active) brush.toggle("brush");
            redraw();
            keepFocus(root);
          });
          const del = h("button", { class: "sam-delete", "aria-label": `Delete ${o.name}`, title: `Delete ${o.name}` }, "×");
          del.addEventListener("click", () => {
            session.send({ type: "object", id: o.id, delete: true });
            keepFocus(root);
          });
          li.append(vis, sw, pick);
          if (labels.length) {
            const choose = h("select", { "aria-label": `Label of ${o.name}` });
            choose.append(h("option", { value: "" }, "(no label)"), ...labels.map((n) => h("option", { value: n }, n)));
            choose.value = o.label ?? "";
            choose.addEventListener("change", () =>
              session.send({ type: "object", id: o.id, label: choose.value === "" ? null : choose.value }));
            li.append(choose);
          }
          li.append(del);
          return li;
        }));
      }
      const note = model.get("notice") ?? "";
      if (noticeText.textContent !== note) noticeText.textContent = note;
      if (notice.hidden !== !note) {
        notice.hidden = !note;
        layout(); // the notice takes room from the image, never pushes the toolbar away
      }
      const st = model.get("status");
      const link = session.linkStatus();
      status.textContent = link ?? (model.get("message") || st);
      status.classList.toggle("error", st.startsWith("error") || session.disconnected);
      root.dataset.link = session.disconnected ? "disconnected" : link ? "queued" : "ok";
      const { points, box } = session.prompts();
      hint.hidden = points.length > 0 || box !== null || objects.length > 0 || brush.active ||
        !st.startsWith("ready");
    };

    let frame = 0;
    const redraw = () => {
      frame = 0;
      if (!cssW) layout();
      drawImage();
      drawMasks();
      drawMarkers();
      drawControls();
    };
    // every change lands in one draw per frame: a click's several trait changes paint once
    const schedule = () => {
      if (!frame) frame = requestAnimationFrame(redraw);
    };

    // ---------------------------------------------------------------- input
    const select = (i: number) => {
      const n = (model.get("scores") ?? []).length;
      if (i < 0 || i >= n) return;
      model.set("selected", i);
      model.save_changes();
      schedule();
    };
    const go = (i: number) => {
      const count = model.get("count") ?? 1;
      if (!Number.isInteger(i) || i < 0 || i >= count || i === model.get("index")) return;
      model.set("index", i);
      model.save_changes();
    };
    const pickLabel = (i: number) => {
      const labels = model.get("labels") ?? [];
      if (i < 0 || i >= labels.length) return;
      model.set("label", labels[i]);
      model.save_changes();
      redraw();
    };
    const rect = (): Rect => markerCanvas.getBoundingClientRect();
    let down: { x: number; y: number; button: number; shift: boolean; id: number } | null = null;
    let dragging = false;
    const imageAt = (e: PointerEvent): [number, number] => {
      const r = rect();
      const { iw, ih } = dims();
      return [((e.clientX - r.left) / r.width) * iw, ((e.clientY - r.top) / r.height) * ih];
    };
    const imagePerDisplay = () => {
      const { iw, dw } = dims();
      return iw / Math.max(1, dw);
    };

    const onPointerDown = (e: PointerEvent) => {
      if (e.button !== 0 && e.button !== 2) return;
      root.focus({ preventScroll: true });
      down = { x: e.clientX, y: e.clientY, button: e.button, shift: e.shiftKey, id: e.pointerId };
      dragging = false;
      markerCanvas.setPointerCapture?.(e.pointerId);
      if (brush.active && e.button === 0) {
        const [x, y] = imageAt(e);
        brush.add(x, y, imagePerDisplay());
        schedule();
      }
      e.preventDefault();
    };
    const onPointerMove = (e: PointerEvent) => {
      const { iw, ih } = dims();
      pointerInside = true;
      const r = rect();
      pointerAt = [e.clientX - r.left, e.clientY - r.top];
      if (brush.active) {
        if (down && down.button === 0) {
          const [x, y] = imageAt(e);
          brush.add(x, y, imagePerDisplay());
        }
        schedule();
        return;
      }
      if (down) {
        if (down.button === 0 && Math.hypot(e.clientX - down.x, e.clientY - down.y) > 4) dragging = true;
        if (dragging) {
          dragBox = dragToBox([down.x, down.y], [e.clientX, e.clientY], rect(), iw, ih);
          schedule();
        }
        return;
      }
      if (!model.get("hover") || e.buttons) return;
      const [x, y] = clientToPixel(e.clientX, e.clientY, rect(), iw, ih);
      session.hover.move(x, y);
    };
    const onPointerUp = (e: PointerEvent) => {
      if (!down) return;
      const { iw, ih } = dims();
      const start = down;
      down = null;
      markerCanvas.releasePointerCapture?.(e.pointerId);
      if (brush.active) {
        const msg = brush.finish(imagePerDisplay());
        if (msg) session.send(msg);
        schedule();
        return;
      }
      const cur = session.prompts();
      if (dragging) {
        dragging = false;
        dragBox = null;
        const box = dragToBox([start.x, start.y], [e.clientX, e.clientY], rect(), iw, ih);
        session.sendPrompt({ points: cur.points, box });
        return;
      }
      const label = start.button === 2 || start.shift ? 0 : 1;
      const points = clickPoints(cur.points, e.clientX, e.clientY, rect(), iw, ih, label);
      session.sendPrompt({ points, box: cur.box });
    };
    const onLeave = () => {
      pointerInside = false;
      session.hover.cancel();
      schedule();
    };
    // right click is a background point: neither the browser's nor JupyterLab's menu
    const onContext = (e: Event) => {
      e.preventDefault();
      e.stopPropagation();
    };
    // Alt/Shift + wheel over the image: the next or previous candidate (a plain wheel scrolls)
    const onWheel = (e: WheelEvent) => {
      const next = wheelStep(e, model.get("selected"), (model.get("scores") ?? []).length);
      if (next === null) return;
      e.preventDefault();
      e.stopPropagation();
      select(next);
    };
    const setTool = (mode: "brush" | "eraser") => {
      brush.toggle(mode);
      session.hover.cancel();
      schedule();
    };
    const toggleFull = () => {
      full = !full;
      layout();
    };
    // the widget's keys (js/keys.ts keeps them from the host); true: used here
    const onKey = (e: KeyboardEvent): boolean => {
      if (e.type !== "keydown") return false;
      const target = e.target as HTMLElement;
      const tag = target?.tagName;
      // text boxes and pickers keep their keys (the image number box jumps on Enter); on
      // checkboxes and sliders only Esc and Enter are the widget's
      const typing = tag === "SELECT" || (tag === "INPUT" && !["checkbox", "range"].includes((target as HTMLInputElement).type));
      if (typing) return false;
      if (tag === "INPUT" && e.key !== "Escape" && e.key !== "Enter") return false;
      const digit = /^Digit([1-9])$/.exec(e.code);
      if (e.shiftKey && digit) pickLabel(Number(digit[1]) - 1);
      else if (e.key === "n" || e.key === "PageDown") go(model.get("index") + 1);
      else if (e.key === "p" || e.key === "PageUp") go(model.get("index") - 1);
      else if (e.key === "1" || e.key === "2" || e.key === "3") select(Number(e.key) - 1);
      else if (e.key === "z") session.sendEdit("undo");
      else if (e.key === "Z") session.sendEdit("redo");
      else if (e.key === "Escape") {
        if (brush.active) setTool(brush.mode as "brush" | "eraser");
        else session.sendEdit("clear");
      } else if (e.key === "Enter") {
        if ((e.target as HTMLElement)?.tagName === "BUTTON" && e.target !== root) return false; // activates it
        session.sendCommit();
      } else if (e.key === "b") setTool("brush");
      else if (e.key === "e") setTool("eraser");
      else if (e.key === "f") toggleFull();
      else if (e.key === "[" || e.key === "]") {
        brush.resize(e.key === "]" ? 1 : -1);
        schedule();
      } else if ((e.key === "ArrowRight" || e.key === "ArrowLeft") && tabs.contains(e.target as Node)) {
        const n = (model.get("scores") ?? []).length;
        const d = e.key === "ArrowRight" ? 1 : -1;
        select((model.get("selected") + d + n) % n);
        (tabs.children[model.get("selected")] as HTMLElement)?.focus();
      } else return false;
      keepFocus(root);
      return true;
    };

    markerCanvas.addEventListener("pointerdown", onPointerDown);
    markerCanvas.addEventListener("pointermove", onPointerMove);
    markerCanvas.addEventListener("pointerup", onPointerUp);
    markerCanvas.addEventListener("pointerleave", onLeave);
    markerCanvas.addEventListener("contextmenu", onContext);
    markerCanvas.addEventListener("wheel", onWheel, { passive: false });
    const unbindKeys = bindKeys(root, onKey);
    // a button that becomes disabled drops focus to <body>: keep the keys with the widget
    const act = (f: () => void) => () => {
      f();
      root.focus({ preventScroll: true });
      keepFocus(root);
    };
    undoBtn.addEventListener("click", act(() => session.sendEdit("undo")));
    redoBtn.addEventListener("click", act(() => session.sendEdit("redo")));
    clearBtn.addEventListener("click", act(() => session.sendEdit("clear")));
    addBtn.addEventListener("click", act(() => session.sendCommit()));
    allBtn.addEventListener("click", act(() => session.send({ type: "everything" })));
    noticeClose.addEventListener("click", act(() => session.send({ type: "dismiss" })));
    stopBtn.addEventListener("click", act(() => session.send({ type: "stop" })));
    brushBtn.addEventListener("click", act(() => setTool("brush")));
    eraserBtn.addEventListener("click", act(() => setTool("eraser")));
    fullBtn.addEventListener("click", act(toggleFull));
    prevBtn.addEventListener("click", act(() => go(model.get("index") - 1)));
    nextBtn.addEventListener("click", act(() => go(model.get("index") + 1)));
    position.addEventListener("keydown", (e) => {
      if (e.key !== "Enter") return;
      e.preventDefault();
      e.stopPropagation();
      go(Math.round(Number(position.value)) - 1);
      position.value = String(model.get("index") + 1);
      root.focus({ preventScroll: true });
    });
    labelPick.addEventListener("change", () => {
      model.set("label", labelPick.value === "" ? null : labelPick.value);
      model.save_changes();
    });
    hoverBox.addEventListener("change", () => {
      model.set("hover", hoverBox.checked);
      model.save_changes();
      if (!hoverBox.checked) session.hover.cancel();
    });
    refineBox.addEventListener("change", () => {
      model.set("refine", refineBox.checked);
      model.save_changes();
    });
    opacity.addEventListener("input", () => {
      model.set("opacity", Number(opacity.value));
      model.save_changes();
      schedule();
    });

    const onDims = () => {
      cssW = 0;
      layout();
    };
    model.on("change:display_width", onDims);
    model.on("change:display_height", onDims);
    const unsubscribe = session.subscribe(schedule);
    const resize = new ResizeObserver(() => layout());
    resize.observe(root);
    const onWindow = () => layout();
    window.addEventListener("resize", onWindow);
    layout();
    redraw();

    return () => {
      unsubscribe();
      unbindKeys();
      stopTheme();
      if (frame) cancelAnimationFrame(frame);
      resize.disconnect();
      window.removeEventListener("resize", onWindow);
      model.off("change:display_width", onDims);
      model.off("change:display_height", onDims);
      root.remove();
    };
  },
};
