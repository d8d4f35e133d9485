// How big the image is drawn: it fits the width it is given AND the height the user can see,
// so the toolbar, the candidate tabs and the status line stay on screen next to it (a tall
// portrait photo in a 1300x900 window used to push the toolbar 250 px below the fold). "Full
// size" shows the image at its display resolution instead, scrolling inside its own box.

/** The smallest height we ever shrink the image to, whatever the window (CSS px). */
export const MIN_IMAGE_HEIGHT = 160;

export interface FitInput {
  /** width available to the image (CSS px) */
  width: number;
  /** height of the visible area the whole widget should fit in (CSS px) */
  visibleHeight: number;
  /** height the widget's controls take besides the image (toolbar, tabs, status...) */
  chromeHeight: number;
  /** the image's display resolution (what the kernel sent) */
  imageWidth: number;
  imageHeight: number;
  /** "fit": scaled to width and visible height; "full": display resolution, 1:1 */
  mode: "fit" | "full";
}

export interface Fit {
  /** CSS size of the drawn image */
  width: number;
  height: number;
  /** max CSS height of the scrolling box around the image (full size), else null */
  viewportHeight: number | null;
}

/** The image's CSS size for the given room. Never upscales beyond 2x, never below 1 px. */
export function fitImage(f: FitInput): Fit {
  const iw = Math.max(1, f.imageWidth);
  const ih = Math.max(1, f.imageHeight);
  const roomH = Math.max(MIN_IMAGE_HEIGHT, f.visibleHeight - f.chromeHeight);
  if (f.mode === "full") {
    return { width: iw, height: ih, viewportHeight: Math.round(roomH) };
  }
  const maxW = Math.max(1, Math.min(f.width, Math.max(iw, 320)));
  const scale = Math.min(maxW / iw, roomH / ih);
  const width = Math.max(1, Math.floor(iw * scale));
  return { width, height: Math.max(1, Math.floor((width * ih) / iw)), viewportHeight: null };
}

/**
 * The height of the area through which the user sees `el`: the nearest ancestor that scrolls
 * it (JupyterLab's and Notebook 7's notebook panel, marimo's app), capped by the window; crosses
 * shadow roots. An ancestor that merely wraps the widget (an output area with overflow-x: auto
 * computes overflow-y: auto too, at the widget's own height) is not a scroller: it must be
 * taller than the widget or actually scroll.
 */
export function visibleHeight(el: HTMLElement): number {
  const win = el.ownerDocument?.defaultView ?? window;
  const own = el.offsetHeight;
  let h = win.innerHeight || 800;
  let node: Node | null = el.parentNode;
  while (node) {
    if (node instanceof Element) {
      const style = win.getComputedStyle(node);
      const scrolls = /(auto|scroll)/.test(style.overflowY) && node.clientHeight > 0;
      if (scrolls && (node.scrollHeight > node.clientHeight + 1 || node.clientHeight > own + 4)) {
        h = Math.min(h, node.clientHeight);
        break;
      }
      node = node.parentNode;
    } else if (node instanceof ShadowRoot) {
      node = node.host;
    } else {
      node = node.parentNode;
    }
  }
  return h;
}
