"""Prefetch: how soon the first click on the next image answers, and what a prefetch costs a
click decode running beside it (issue 12). Printed, not asserted.

For each model (random weights: the timing does not depend on the values):
1. one encode of a fresh image (the reference);
2. ``w.next()`` to the first click's masks on an image the widget prefetched, as a ratio to (1)
   (target <= 0.05: no encode on the way);
3. the extra delay of a click decode while the prefetch thread encodes another image, against
   the same decode with the machine otherwise idle (p50 and worst; target <= 100 ms at p50).

    python benchmarks/bench_prefetch.py [--models mobile_sam vit_b] [--clicks 20] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import warnings

import numpy as np
import torch

import sam_widget as sw
from sam_widget import background


def image(seed: int, h: int = 480, w: int = 640) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    img[h // 4: h // 2, w // 4: w // 2] = (220, 200, 40)
    return img


def prefetch(p: sw.Predictor, img: np.ndarray) -> None:
    """An encode the way the widget's prefetch thread runs it (at lower priority)."""
    background.lower_priority()
    p.encode(img)


def clicks(p: sw.Predictor, handle, n: int) -> list[float]:
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        p.predict(points=[(100 + i, 120)], labels=[1], image=handle)
        times.append(time.perf_counter() - t0)
    return times


def bench(name: str, n_clicks: int, rounds: int) -> None:
    torch.manual_seed(0)
    p = sw.Predictor(sw.build_sam(name), device="cpu", disk_cache=False)  # time real encodes

    # 2. next() to first masks on a prefetched image (the widget's encodes warm the model up)
    w = sw.SamWidget([image(1), image(2), image(3)], model=p)
    w.wait()
    deadline = time.monotonic() + 900
    while w.session.image(1).handle is None and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.perf_counter()
    w.next()
    w.add_point(200, 150)
    first_s = time.perf_counter() - t0
    w.close()

    # 1. one encode of a fresh image, the reference
    t0 = time.perf_counter()
    p.encode(image(100))
    encode_s = time.perf_counter() - t0

    # 3. click decodes beside a prefetch encode (the widget's two threads on one engine), and
    # right after it with nothing else running, in alternating rounds so both see the same load
    handle = p.encode(image(1))
    clicks(p, handle, 1)  # its decoder context is built once, on the first click
    busy: list[float] = []
    idle: list[float] = []
    per_round = max(1, n_clicks // rounds)
    for r in range(rounds):
        encoding = threading.Thread(target=prefetch, args=(p, image(200 + r)))
        encoding.start()
        time.sleep(0.05)  # the encode is under way
        done = 0
        while encoding.is_alive() and done < per_round:
            busy.extend(clicks(p, handle, 1))
            done += 1
        encoding.join()
        idle.extend(clicks(p, handle, done))
    extra = [b - statistics.median(idle) for b in busy]
    print(f"{name:11s} encode {encode_s:6.2f} s | next()->first masks {first_s * 1e3:7.1f} ms "
          f"= {first_s / encode_s:.3f} x encode | click decode idle p50 "
          f"{statistics.median(idle) * 1e3:6.1f} ms, beside a prefetch p50 "
          f"{statistics.median(busy) * 1e3:6.1f} ms: extra p50 "
          f"{statistics.median(extra) * 1e3:6.1f} ms, worst {max(extra) * 1e3:6.1f} ms "
          f"({len(busy)} clicks, {torch.get_num_threads()} torch threads)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobile_sam", "vit_b"])
    parser.add_argument("--clicks", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2, help="prefetch encodes to click beside")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (0: torch's default); on a machine whose "
                             "cores are busy with other work, 1 avoids waits at OpenMP barriers")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.models:
        bench(name, args.clicks, args.rounds)


if __name__ == "__main__":
    main()
