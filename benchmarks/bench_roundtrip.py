"""Round trip of a widget message through real JupyterLab, with and without sam-widget's server
extension (TCP_NODELAY on kernel websockets, sam_widget/server.py).

A minimal anywidget answers at once, with no computation: a frontend `model.send(...)` is
answered by the kernel's `self.send(...)`, and a trait change saved with `save_changes()` is
answered by a trait change back. The frontend times each round trip with performance.now();
we print p50/p95 over N round trips (default 40) per kind, for a JupyterLab started with the
extension forced on and one with it forced off, in the same headless Chromium.

    PYTHONPATH=. python benchmarks/bench_roundtrip.py [--n 40] [--warmup 5] [--modes on,off]
    PYTHONPATH=. python benchmarks/bench_roundtrip.py --widget [--engine "sw.ClassicPredictor()"]

With --widget it also times SamWidget's click-to-overlay (left clicks on the image, each adding
a point, until the overlay for that click is painted: the widget's own performance measure
"sam:click-to-overlay"), by default with a random-weight SAM vit_b.

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


WIDGET = """
import numpy as np, sam_widget as sw
yy, xx = np.mgrid[0:480, 0:640]
img = np.zeros((480, 640, 3), np.uint8)
img[..., 0] = 40 + xx * 60 // 640
img[..., 2] = 90 + yy * 60 // 480
img[(xx - 220) ** 2 + (yy - 220) ** 2 < 90 ** 2] = (220, 200, 40)
w = sw.SamWidget(img, model=eval({engine!r}, {{"sw": sw}}))
w
"""

_JS_CLICK_MEASURES = "() => performance.getEntriesByName('sam:click-to-overlay').length"


def measure_widget(browser, *, extension: bool, n: int, warmup: int, engine: str) -> list[float]:
    """SamWidget click-to-overlay times (ms), each click a new foreground point."""
    server = JupyterLabServer(server_extension=extension)
    with server, Lab(server, browser=browser) as lab:
        nb = lab.new_notebook()
        cell = nb.run_cell(WIDGET.format(engine=engine))
        nb.execute("w._wait()")  # the image is encoded
        canvas = cell.output.locator("canvas.sam-markers")
        canvas.wait_for()
        box = canvas.bounding_box()
        times = []
        total = warmup + n
        for i in range(total):
            # a grid of distinct positions, so no click lands on an earlier point (removal)
            fx = 0.08 + 0.84 * (i % 8) / 7
            fy = 0.1 + 0.8 * (i // 8) / max(1, (total - 1) // 8)
            before = nb.page.evaluate(_JS_CLICK_MEASURES)
            canvas.click(position={"x": fx * box["width"], "y": fy * box["height"]})
            nb.page.wait_for_function(f"() => ({_JS_CLICK_MEASURES})() > {before}")
            took = nb.page.evaluate(
                "() => performance.getEntriesByName('sam:click-to-overlay').at(-1).duration"
            )
            if i >= warmup:
                times.append(took)
            nb.execute("w._wait()")
        if nb.value("len(w.points)") != total:
            raise SystemExit("a click did not add a point; the timings would be wrong")
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=40, help="round trips per kind (default 40)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed round trips first")
    parser.add_argument("--modes", default="on,off", help="extension modes to run: on,off")
    parser.add_argument("--widget", action="store_true", help="also time SamWidget clicks")
    parser.add_argument("--clicks", type=int, default=20, help="timed widget clicks per mode")
    parser.add_argument(
        "--engine", default="sw.Predictor(sw.build_sam('vit_b'))", help="widget engine (Python)"
    )
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
            if args.widget:
                clicks = measure_widget(
                    browser, extension=extension, n=args.clicks, warmup=2, engine=args.engine
                )
                rows.append((mode, "widget click", clicks))
        browser.close()

    print(f"round trips, real JupyterLab + headless Chromium ({args.n} each; widget clicks:")
    print(f"{args.clicks} each, engine {args.engine})" if args.widget else "not run)")
    print(f"{'TCP_NODELAY':<12} {'kind':<13} {'p50 ms':>8} {'p95 ms':>8} {'min ms':>8}")
    summary = {}
    for mode, kind, values in rows:
        p50, high = statistics.median(values), p95(values)
        summary[(mode, kind)] = p50
        print(f"{mode:<12} {kind:<13} {p50:8.1f} {high:8.1f} {min(values):8.1f}")
    for kind in ("send", "save_changes", "widget click"):
        if ("on", kind) in summary and ("off", kind) in summary:
            ratio = summary[("off", kind)] / summary[("on", kind)]
            print(f"p50 off/on ({kind}): {ratio:.1f}x")


if __name__ == "__main__":
    main()
