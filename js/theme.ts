// Light or dark: follow the host's theme where it says one, else the OS setting.
//
// JupyterLab and Notebook 7 mark <body data-jp-theme-light="true|false">; VS Code sets
// body.vscode-dark / body.vscode-light; marimo and many sites put a "dark" class or
// data-theme="dark" on <html> or <body>. Without any of these, prefers-color-scheme decides.
// The result lands on the widget's root as data-theme="light|dark" (see widget.css), which
// also works inside a shadow root, where `body[...]` selectors cannot reach.

export type Theme = "light" | "dark";

/** The host's theme as its document says it, or null when it says nothing. */
export function hostTheme(doc: Document): Theme | null {
  const body = doc.body;
  const html = doc.documentElement;
  const jp = body?.getAttribute("data-jp-theme-light");
  if (jp === "true") return "light";
  if (jp === "false") return "dark";
  for (const el of [body, html]) {
    if (!el) continue;
    if (el.classList.contains("vscode-dark") || el.classList.contains("vscode-high-contrast")) return "dark";
    if (el.classList.contains("vscode-light")) return "light";
    const theme = el.getAttribute("data-theme") ?? el.getAttribute("data-color-mode");
    if (theme === "dark" || theme === "light") return theme;
    if (el.classList.contains("dark") || el.classList.contains("dark-theme")) return "dark";
    if (el.classList.contains("light") || el.classList.contains("light-theme")) return "light";
  }
  return null;
}

/** The theme to draw in: the host's, else the OS preference. */
export function currentTheme(doc: Document): Theme {
  const host = hostTheme(doc);
  if (host) return host;
  const win = doc.defaultView;
  return win?.matchMedia?.("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

/** Keep `root.dataset.theme` in step with the host and the OS; returns a cleanup. */
export function followTheme(root: HTMLElement): () => void {
  const doc = root.ownerDocument;
  const apply = () => {
    const theme = currentTheme(doc);
    if (root.dataset.theme !== theme) root.dataset.theme = theme;
  };
  apply();
  const observer = new MutationObserver(apply);
  for (const el of [doc.documentElement, doc.body]) {
    if (el) observer.observe(el, { attributes: true, attributeFilter: ["class", "data-theme", "data-jp-theme-light", "data-color-mode"] });
  }
  const media = doc.defaultView?.matchMedia?.("(prefers-color-scheme: dark)");
  media?.addEventListener?.("change", apply);
  return () => {
    observer.disconnect();
    media?.removeEventListener?.("change", apply);
  };
}
