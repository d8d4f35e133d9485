"""Memory over a widget's lifetime (issue 11), printed: resident memory after 20 create/close
cycles, after 20 widgets made by a cell run again without close(), and after 600 clicks.

Uses SAM vit_b with random weights (the size is what matters, not the values), passed as a
loaded model the way a notebook does (``SamWidget(img, model=sam)``): widgets share one engine.

    python benchmarks/bench_lifetime.py [--model vit_b] [--clicks 600]
"""

from __future__ import annotations

import argparse
import gc
import threading
import time
import warnings

import numpy as np
import psutil
import torch

import sam_widget as sw
from sam_widget import background


def rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_b")
    parser.add_argument("--clicks", type=int, default=600)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    sam = sw.build_sam(args.model)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)

    w = sw.SamWidget(img, model=sam)
    w.add_point(100, 100)
    w.close()
    base, threads = rss_mb(), threading.active_count()
    for _ in range(20):
        w = sw.SamWidget(img, model=sam)
        w.add_point(100, 100)
        w.close()
    del w
    print(f"20 create/close cycles ({args.model}): RSS {base:.0f} -> {rss_mb():.0f} MB, "
          f"threads {threads} -> {threading.active_count()}")

    background.IDLE_EXIT_S = 1.0
    before = rss_mb()
    cells = [sw.SamWidget(img, model=sam) for _ in range(20)]  # a cell run 20 times
    for c in cells:
        c.wait()
    time.sleep(3)
    print(f"20 widgets never closed: RSS {before:.0f} -> {rss_mb():.0f} MB, threads "
          f"{threads} -> {threading.active_count()} once idle; one engine: "
          f"{len({id(c.predictor) for c in cells}) == 1}")
    for c in cells:
        c.close()
    del cells

    w = sw.SamWidget(img, model=sam)
    w.wait()
    before = rss_mb()
    t0 = time.perf_counter()
    for i in range(args.clicks):
        if i % 200 == 199:
            w.clear()  # a prompt holds at most 256 points
        else:
            w.add_point(5 + (i * 7) % 630, 5 + (i * 13) % 470, label=int(i % 3 == 0))
    took = time.perf_counter() - t0
    print(f"{args.clicks} clicks: RSS {before:.0f} -> {rss_mb():.0f} MB "
          f"(undo history holds {w.session.current.nbytes / 2**20:.1f} MB), "
          f"{took / args.clicks * 1e3:.0f} ms per click")
    w.close()


if __name__ == "__main__":
    main()
