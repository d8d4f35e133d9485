"""Round trip of a widget message through real JupyterLab, with and without sam-widget's server
extension (TCP_NODELAY on kernel websockets, sam_widget/server.py).

A minimal anywidget answers at once, with no computation: a frontend `model.send(...)` is
answered by the kernel's `self.send(...)`, and a trait change saved with `save_changes()` is
answered by a trait change back. The frontend times each round trip with performance.now();
we print p50/p95 over N round trips (default 40) per kind, for a JupyterLab started with the
extension forced on and one with it forced off, in the same headless Chromium.

    PYTHONPATH=. python benchmarks/bench_roundtrip.py [--n 40] [--warmup 5] [--modes on,off]

Needs JupyterLab, Playwright and Chromium (SAM_WIDGET_CHROMIUM, default /usr/bin/chromium).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "browser"))

from harness import JupyterLabServer, Lab, launch_chromium  # noqa: E402

ECHO = '''
import anywidget, traitlets

class Echo(anywidget.AnyWidget):
    """Answers every frontend message and every `ping` change at once."""
    _esm = """
    export default {
      render({ model, el }) {
        el.textContent = "echo";
        el.classList.add("bench-echo");
        const once = (event, accept) => new Promise((resolve) => {
          const handler = (...args) => {
            if (!accept(...args)) return;
            model.off(event, handler);
            resolve();
          };
          model.on(event, handler);
        });
        window.__benchRoundTrips = async (kind, n) => {
          const times = [];
          for (let i = 0; i < n; i++) {
            const id = model.get("ping") + 1;
            const t0 = performance.now();
            if (kind === "send") {
              const answered = once("msg:custom", (msg) => msg && msg.pong === id);
              model.send({ ping: id });
              await answered;
              model.set("ping", id);  // keep ids unique across kinds (local only)
            } else {
              const answered = once("change:pong", () => model.get("pong") === id);
              model.set("ping", id);
              model.save_changes();
              await answered;
            }
            times.push(performance.now() - t0);
            await new Promise((r) => setTimeout(r, 20));  // let the link go quiet
          }
          return times;
        };
      }
    };
    """
    ping = traitlets.Int(0).tag(sync=True)
    pong = traitlets.Int(0).tag(sync=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.on_msg(lambda widget, content, buffers: self.send({"pong": content["ping"]}))

    @traitlets.observe("ping")
    def _answer(self, change):
        self.pong = change["new"]

w = Echo()
w
'''


def p95(values: list[float]) -> float:
    """The 95th percentile (inclusive method, interpolating between order statistics)."""
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def measure(browser, *, extension: bool, n: int, warmup: int) -> dict[str, list[float]]:
    """Round-trip times (ms) for each kind on a fresh JupyterLab with the extension on/off."""
    server = JupyterLabServer(server_extension=extension)
    with server, Lab(server, browser=browser) as lab:
        nb = lab.new_notebook()
        cell = nb.run_cell(ECHO)
        cell.output.locator(".bench-echo").wait_for()
        results = {}
        for kind in ("send", "save_changes"):
            nb.page.evaluate("([k, n]) => window.__benchRoundTrips(k, n)", [kind, warmup])
            results[kind] = nb.page.evaluate(
                "([k, n]) => window.__benchRoundTrips(k, n)", [kind, n]
            )
        log = server.log_text()
    loaded = "kernel websockets use TCP_NODELAY" in log
    if loaded != extension:
        raise SystemExit(f"extension expected {'on' if extension else 'off'}, log says otherwise")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=40, help="round trips per kind (default 40)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed round trips first")
    parser.add_argument("--modes", default="on,off", help="extension modes to run: on,off")
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright

    rows = []
    with sync_playwright() as p:
        browser = launch_chromium(p)
        for mode in args.modes.split(","):
            extension = {"on": True, "off": False}[mode.strip()]
            times = measure(browser, extension=extension, n=args.n, warmup=args.warmup)
            for kind, values in times.items():
                rows.append((mode, kind, values))
        browser.close()

    print(f"widget round trip, real JupyterLab + headless Chromium, {args.n} round trips each")
    print(f"{'TCP_NODELAY':<12} {'kind':<13} {'p50 ms':>8} {'p95 ms':>8} {'min ms':>8}")
    summary = {}
    for mode, kind, values in rows:
        p50, high = statistics.median(values), p95(values)
        summary[(mode, kind)] = p50
        print(f"{mode:<12} {kind:<13} {p50:8.1f} {high:8.1f} {min(values):8.1f}")
    for kind in ("send", "save_changes"):
        if ("on", kind) in summary and ("off", kind) in summary:
            ratio = summary[("off", kind)] / summary[("on", kind)]
            print(f"p50 off/on ({kind}): {ratio:.1f}x")


if __name__ == "__main__":
    main()
