"""Widget latency and bandwidth, printed as figures (not timed tests).

1. Kernel time from a prompt message arriving to the mask bytes being handed to the comm, vs
   the official ``SamPredictor.predict`` for the same prompt on the same random vit_b weights
   (side by side in one run; target ratio <= 0.5).
2. Bytes per update: three candidates at 1024 px (target <= 64 KiB).
3. Click-to-overlay in real JupyterLab + headless Chromium (performance marks), p50/p95 over
   30 clicks (skip with --no-browser).

    PYTHONPATH=. python benchmarks/bench_widget.py [--repeats 20] [--no-browser | --browser-only]
        [--without-nodelay]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))


def scene(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = 40 + xx * 60 // w
    img[..., 1] = 60
    img[..., 2] = 90 + yy * 60 // h
    img[(xx - w * 0.35) ** 2 + (yy - h * 0.45) ** 2 < (min(h, w) * 0.2) ** 2] = (220, 200, 40)
    img[int(h * .6):int(h * .85), int(w * .6):int(w * .9)] = (30, 160, 220)
    return img


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def prompt_to_mask_bytes(w, x: float, y: float, seq: int) -> tuple[float, int]:
    """Seconds from a one-click prompt message reaching the widget's kernel side to its mask
    bytes being set for the comm, and the size of those bytes. ``seq`` must grow per call."""
    t0 = time.perf_counter()
    w._msg_callbacks(w, {"type": "prompt", "client": "bench", "seq": seq, "rev": w.prompt_rev,
                         "points": [[int(x), int(y), 1]], "box": None}, [])
    w.wait()
    if w.points != [[int(x), int(y), 1]]:  # the view protocol refused it: say so, not 0 ms
        raise RuntimeError(f"the prompt message was not applied: {w.message}")
    return time.perf_counter() - t0, len(w._masks)


def kernel_vs_official(repeats: int) -> None:
    from segment_anything import SamPredictor, sam_model_registry

    import sam_widget as sw
    from sam_widget.widget import SamWidget

    torch.manual_seed(0)
    ours = sw.build_sam("vit_b").eval()
    official = sam_model_registry["vit_b"]()
    official.load_state_dict(ours.state_dict())
    official.eval()
    image = scene(768, 1024)

    ref = SamPredictor(official)
    ref.set_image(image)
    w = SamWidget(image, model=sw.Predictor(ours), refine=False)
    w.wait()
    rng = np.random.default_rng(0)
    prompts = rng.integers([0, 0], [1024, 768], size=(repeats, 2))

    ours_s, ref_s, sizes = [], [], []
    for i, (x, y) in enumerate(prompts):
        seconds, size = prompt_to_mask_bytes(w, x, y, seq=i + 1)
        ours_s.append(seconds)
        sizes.append(size)
        t0 = time.perf_counter()
        ref.predict(point_coords=np.array([[x, y]], np.float32), point_labels=np.array([1]),
                    multimask_output=True)
        ref_s.append(time.perf_counter() - t0)
    ours_med, ref_med = statistics.median(ours_s), statistics.median(ref_s)
    print(f"image 1024x768, vit_b random weights, {repeats} prompts, torch threads "
          f"{torch.get_num_threads()}")
    print(f"  widget kernel, message -> mask bytes : median {ours_med * 1e3:7.1f} ms  "
          f"p95 {pct(ours_s, 95) * 1e3:7.1f} ms")
    print(f"  official SamPredictor.predict       : median {ref_med * 1e3:7.1f} ms  "
          f"p95 {pct(ref_s, 95) * 1e3:7.1f} ms")
    print(f"  ratio (target <= 0.5)               : {ours_med / ref_med:.2f}x")
    kib = statistics.median(sizes) / 1024
    print(f"  mask bytes per update (3 x 1024x768): median {kib:.1f} KiB")
    w.close()


def bytes_per_update() -> None:
    """Three candidates at 1024x1024 on both engines (random-weight SAM masks are noisier)."""
    import sam_widget as sw
    from sam_widget.widget import SamWidget

    image = scene(1024, 1024)
    engines = [("vit_b (random weights)", sw.Predictor(sw.build_sam("vit_b")))]
    try:
        engines.append(("classic", sw.ClassicPredictor()))
    except Exception as exc:  # the classic engine is optional here
        print(f"  classic engine unavailable: {exc}")
    for name, engine in engines:
        w = SamWidget(image, model=engine)
        sizes = []
        for x, y in [(358, 460), (800, 750), (100, 100), (512, 512), (700, 300)]:
            w.set_prompts(points=[[x, y, 1]])
            sizes.append(len(w._masks))
        raw = 3 * 1024 * 1024 / 8
        print(f"  {name:24s}: {statistics.median(sizes) / 1024:6.1f} KiB per update (max "
              f"{max(sizes) / 1024:.1f}; packed bits alone would be {raw / 1024:.0f} KiB; "
              "target <= 64 KiB)")
        w.close()


def browser_click_to_overlay(clicks: int, nodelay: bool = True) -> None:
    import sam_widget

    sys.path.insert(0, str(ROOT / "tests" / "browser"))
    from harness import JupyterLabServer, Lab

    # the kernel imports the same sam_widget this script runs
    checkout = Path(sam_widget.__file__).resolve().parents[1]
    # the server extension on (as installed) or off, explicitly, whatever the environment says
    server = JupyterLabServer(pythonpath=[checkout], server_extension=nodelay)
    print(f"  (sam-widget's TCP_NODELAY server extension {'on' if nodelay else 'off'})")
    with server, Lab(server) as lab:
        lab.context.add_init_script(_FRAME_SPY)
        nb = lab.new_notebook()
        nb.run_cell(
            "import numpy as np, sam_widget as sw\n"
            f"exec({_SCENE_SRC!r})\n"
            "w = sw.SamWidget(scene(768, 1024), model=sw.Predictor(sw.build_sam('vit_b')))\nw"
        )
        nb.execute("w.wait()")
        view = nb.page.locator(".sam-widget").first
        canvas = view.locator("canvas.sam-markers")
        canvas.scroll_into_view_if_needed()
        bb = canvas.bounding_box()
        rng = np.random.default_rng(1)
        for rested in (False, True):
            before = nb.page.evaluate(
                "() => performance.getEntriesByName('sam:click-to-overlay').length"
            )
            for i in range(clicks):
                if i % 6 == 5:
                    nb.page.keyboard.press("Escape")  # keep prompts short, like a real session
                fx, fy = rng.uniform(0.1, 0.9, 2)
                x, y = bb["x"] + fx * bb["width"], bb["y"] + fy * bb["height"]
                if rested:  # the pointer rests until the hover preview is drawn, then clicks
                    drawn = nb.page.evaluate(
                        "() => performance.getEntriesByName('sam:hover-drawn').length"
                    )
                    nb.page.mouse.move(x, y)
                    nb.page.wait_for_function(
                        "n => performance.getEntriesByName('sam:hover-drawn').length > n",
                        arg=drawn,
                    )
                    nb.page.mouse.down()
                    nb.page.mouse.up()
                else:  # moves and clicks at once: the click waits for the hover decode
                    nb.page.mouse.click(x, y)
                nb.page.wait_for_function(
                    "n => performance.getEntriesByName('sam:click-to-overlay').length >= n",
                    arg=before + i + 1,
                )
            ms = nb.page.evaluate(
                "() => performance.getEntriesByName('sam:click-to-overlay').map(e => e.duration)"
            )[before:]
            how = "after the hover preview was drawn" if rested else "moving and clicking at once"
            print(f"  click -> overlay painted, {len(ms)} clicks {how}: p50 {pct(ms, 50):.0f} ms, "
                  f"p95 {pct(ms, 95):.0f} ms (JupyterLab + headless Chromium, loopback)")
            breakdown(nb, len(ms))
        stats = nb.value(
            "{k: v for k, v in w.stats.items() if k in ('decodes', 'hover_requests', "
            "'hover_reused')}"
        )
        print(f"  kernel: {stats}")
        log = server.log_text()
        print(f"  'IOPub message rate exceeded' in the server log: "
              f"{'yes' if 'IOPub message rate exceeded' in log else 'no'}")


# Stamps every kernel websocket frame that carries a mask update (its mask_rev) with the wall
# clock time it reached the page, before JupyterLab and ipywidgets handle it.
_FRAME_SPY = """
window.__samFrames = [];
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  constructor(...args) {
    super(...args);
    this.addEventListener("message", (ev) => {
      const at = performance.timeOrigin + performance.now();
      const data = ev.data;
      const bytes = typeof data === "string" ? null : new Uint8Array(data, 0,
        Math.min(data.byteLength, 4096));
      const text = bytes ? new TextDecoder().decode(bytes) : data.slice(0, 4096);
      const m = /"mask_rev":\\s*(\\d+)/.exec(text);
      if (m && text.includes('"_masks"')) window.__samFrames.push([Number(m[1]), at]);
    });
  }
};
"""


def breakdown(nb, clicks: int) -> None:
    """Where a click's time goes: browser marks and the kernel's timeline share the machine's
    wall clock (performance.timeOrigin + startTime vs time.time()), so each click splits into
    browser -> kernel (message through the server), waiting in the kernel (a hover decode
    already running), decode + encode, kernel -> browser, and decoding + painting."""
    marks = nb.page.evaluate(
        """() => ({
            prompts: performance.getEntriesByName('sam:prompt')
                .map(e => performance.timeOrigin + e.startTime),
            received: performance.getEntriesByName('sam:masks-received')
                .map(e => [e.detail.rev, performance.timeOrigin + e.startTime]),
            decoded: performance.getEntriesByName('sam:masks-decoded')
                .map(e => [e.detail.rev, performance.timeOrigin + e.startTime]),
            painted: performance.getEntriesByName('sam:click-to-overlay')
                .map(e => performance.timeOrigin + e.startTime + e.duration),
            frames: window.__samFrames || [],
        })"""
    )
    timeline = nb.value("list(w.stats['timeline'])")
    kernel = [t for t in timeline if "received" in t and "sent" in t]
    clicks = min(clicks, len(kernel), len(marks["prompts"]), len(marks["painted"]))
    arrived, framed, decoded = {}, {}, {}
    for rev, at in marks["received"]:
        arrived.setdefault(rev, at)
    for rev, at in marks.get("decoded", []):
        decoded.setdefault(rev, at)
    for rev, at in marks["frames"]:
        framed.setdefault(rev, at)
    parts: dict[str, list[float]] = {
        "browser -> kernel (server, websocket, ZMQ)": [],
        "waiting for the running hover decode": [],
        "decode (or reuse the hover's) + encode": [],
        "kernel -> page's websocket (ZMQ, server)": [],
        "websocket -> widget model (JupyterLab, ipywidgets)": [],
        "browser: decode masks + paint": [],
        "  of which: inflate + unpack (decode)": [],
        "  of which: wait for the frame + paint": [],
    }
    # the last `clicks` entries of each list belong to the same clicks, in order
    for t, start, painted in zip(kernel[-clicks:], marks["prompts"][-clicks:],
                                 marks["painted"][-clicks:], strict=True):
        got, frame = arrived.get(t["rev"]), framed.get(t["rev"])
        if got is None or frame is None:
            continue
        parts["browser -> kernel (server, websocket, ZMQ)"].append(t["received"] * 1e3 - start)
        parts["waiting for the running hover decode"].append(
            (t["decode_start"] - t["received"]) * 1e3)
        parts["decode (or reuse the hover's) + encode"].append(
            (t["sent"] - t["decode_start"]) * 1e3)
        parts["kernel -> page's websocket (ZMQ, server)"].append(frame - t["sent"] * 1e3)
        parts["websocket -> widget model (JupyterLab, ipywidgets)"].append(got - frame)
        parts["browser: decode masks + paint"].append(painted - got)
        if t["rev"] in decoded:
            parts["  of which: inflate + unpack (decode)"].append(decoded[t["rev"]] - got)
            parts["  of which: wait for the frame + paint"].append(painted - decoded[t["rev"]])
    print(f"  where the time goes ({len(parts['browser: decode masks + paint'])} clicks, "
          "one wall clock):")
    for name, values in parts.items():
        if values:
            print(f"    {name:50s}: p50 {pct(values, 50):6.1f} ms  p95 {pct(values, 95):6.1f} ms")


_SCENE_SRC = (
    "def scene(h, w):\n"
    "    yy, xx = np.mgrid[0:h, 0:w]\n"
    "    img = np.zeros((h, w, 3), np.uint8)\n"
    "    img[..., 0] = 40 + xx * 60 // w\n"
    "    img[..., 2] = 90 + yy * 60 // h\n"
    "    disc = (xx - w * 0.35) ** 2 + (yy - h * 0.45) ** 2 < (min(h, w) * 0.2) ** 2\n"
    "    img[disc] = (220, 200, 40)\n"
    "    return img\n"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--clicks", type=int, default=30)
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--browser-only", action="store_true")
    parser.add_argument("--without-nodelay", action="store_true",
                        help="also measure the browser with the TCP_NODELAY extension off")
    args = parser.parse_args()
    if not args.browser_only:
        print("== kernel: prompt -> mask bytes, vs official SamPredictor.predict")
        kernel_vs_official(args.repeats)
        print("== bytes per update, 3 candidates at 1024x1024")
        bytes_per_update()
    if not args.no_browser:
        print("== browser: click -> overlay")
        browser_click_to_overlay(args.clicks)
        if args.without_nodelay:
            browser_click_to_overlay(args.clicks, nodelay=False)


if __name__ == "__main__":
    main()
