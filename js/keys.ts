// The widget's keyboard, kept away from the host (JupyterLab, Notebook 7, marimo, VS Code).
//
// Hosts listen for shortcuts on `document`: JupyterLab in the bubble phase, Notebook 7 in the
// capture phase (so a listener on the widget runs too late: `z` there restored a deleted cell).
// We listen on `window` in the capture phase, which runs before either, and stop the keys the
// widget uses there. Lumino (JupyterLab, Notebook 7) also skips every shortcut whose event
// target carries `data-lm-suppress-shortcuts`: the focused element inside the widget gets it, so
// single-letter notebook commands ("d d" deletes the cell) cannot fire while the widget has the
// keyboard. Chords with Ctrl/Cmd/Alt and Shift+Enter still reach the host (save, run cell).

export const SUPPRESS = "data-lm-suppress-shortcuts";

/** Keys the host keeps even while the widget has focus: chords and Shift+Enter (run cell). */
export function passesToHost(e: Pick<KeyboardEvent, "key" | "ctrlKey" | "metaKey" | "altKey" | "shiftKey">): boolean {
  return e.ctrlKey || e.metaKey || e.altKey || (e.shiftKey && e.key === "Enter");
}

/** Is `node` inside `root`, across shadow roots (marimo renders widgets in a shadow DOM)? */
export function within(root: Node, path: EventTarget[]): boolean {
  return path.includes(root);
}

/** The element holding focus in the document or shadow root `root` lives in. */
export function activeIn(root: HTMLElement): Element | null {
  const scope = root.getRootNode() as Document | ShadowRoot;
  return scope.activeElement ?? null;
}

/**
 * Route keys that reach `root` to `handle` before the host sees them. `handle` returns true for
 * a key it used; such a key is stopped (no default, no host shortcut). Returns a cleanup.
 */
export function bindKeys(root: HTMLElement, handle: (e: KeyboardEvent) => boolean): () => void {
  root.setAttribute(SUPPRESS, "true");
  const onFocusIn = (e: FocusEvent) => {
    const el = e.target as Element | null;
    if (el && el !== root && el.setAttribute) el.setAttribute(SUPPRESS, "true");
  };
  const onKey = (e: KeyboardEvent) => {
    if (!within(root, e.composedPath())) return;
    if (passesToHost(e)) {
      // let this one chord through to the host's shortcuts, then suppress again
      const marked = Array.from(root.querySelectorAll(`[${SUPPRESS}]`));
      marked.push(root);
      marked.forEach((el) => el.removeAttribute(SUPPRESS));
      setTimeout(() => marked.forEach((el) => el.isConnected && el.setAttribute(SUPPRESS, "true")), 0);
      return;
    }
    if (handle(e)) {
      e.preventDefault();
      e.stopPropagation();
      e.stopImmediatePropagation();
    }
  };
  root.addEventListener("focusin", onFocusIn);
  window.addEventListener("keydown", onKey, { capture: true });
  return () => {
    root.removeEventListener("focusin", onFocusIn);
    window.removeEventListener("keydown", onKey, { capture: true });
  };
}

/**
 * Keep the keyboard in the widget after the user acted in it (a button that turns disabled
 * drops focus to <body>; hosts move focus to the cell on mousedown). Runs after the host's own
 * handlers of the same event.
 */
export function keepFocus(root: HTMLElement): void {
  setTimeout(() => {
    const active = activeIn(root);
    if (!active || !root.contains(active)) root.focus({ preventScroll: true });
  }, 0);
}
