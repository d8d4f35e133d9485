"""Benchmark: sw.precompute into an embedding store, against the official predictor's loop.

Prints, on this machine: images per second for the official ``SamPredictor`` loop (set_image,
then save the embedding with ``np.save``: what one writes by hand today), our local engine and
Ray with 1 and 2 workers (the ratio to the official loop beside each); the store's bytes per
image (float32 and float16) and the time to read one embedding back (store and Predictor
hit); how well float16 storage keeps the masks (IoU with the float32 store's masks over a grid
of point prompts); and a simulated scaling table: Ray with N workers whose "encoder" sleeps
``--sleep`` seconds per image (like N GPUs that each take that long), N = 1, 2, 4, 8.
Not a test: timings vary with the machine and its load. Run from the repository root::

    python benchmarks/bench_precompute.py                      # vit_b, random weights, CPU
    python benchmarks/bench_precompute.py --model tiny --images 8   # seconds, for a smoke run
    python benchmarks/bench_precompute.py --weights sam_vit_b_01ec64.pth --device cuda

On a multi-GPU machine or a Ray cluster, see the README ("Precompute a dataset").
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sam_widget as sw  # noqa: E402
from sam_widget.store import EmbeddingStore  # noqa: E402
from tests.reference import official_sam, randomize_  # noqa: E402
from tests.test_predictor_support import small_config, small_sam, synthetic_image  # noqa: E402


def folder_bytes(path: str) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def make_model(args):
    """(our model, its config)."""
    if args.model == "tiny":
        return small_sam(0), small_config()
    if args.weights:
        return sw.load_model(args.model, checkpoint=args.weights, device="cpu"), args.model
    torch.manual_seed(0)
    return randomize_(sw.build_sam(args.model).eval(), 0), args.model


def official_loop(model: nn.Module, config, images, out: str) -> float:
    """The hand-written baseline: official SamPredictor, one np.save per embedding."""
    from segment_anything import SamPredictor

    official = official_sam(config)
    official.load_state_dict(model.state_dict())
    predictor = SamPredictor(official.eval())
    os.makedirs(out, exist_ok=True)
    start = time.perf_counter()
    for i, image in enumerate(images):
        predictor.set_image(image)
        np.save(os.path.join(out, f"{i}.npy"), predictor.get_image_embedding().numpy())
    return time.perf_counter() - start


def timed_precompute(images, url, model, **kwargs) -> float:
    start = time.perf_counter()
    sw.precompute(images, url, model=model, progress=False, **kwargs)
    return time.perf_counter() - start


class SleepEncoder(nn.Module):
    """A stand-in for a GPU encoder: sleeps, then returns a constant embedding."""

    def __init__(self, seconds: float, img_size: int, channels: int, side: int) -> None:
        super().__init__()
        self.seconds, self.img_size, self.shape = seconds, img_size, (1, channels, side, side)
        self.anchor = nn.Parameter(torch.zeros(1))  # something for the weights digest

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return torch.zeros(self.shape)


def mask_agreement(model, images, url32, url16, grid: int = 4) -> float:
    """Mean IoU of masks from float16-stored embeddings vs float32, over a grid of points."""
    p32 = sw.Predictor(model, store=url32, disk_cache=False, precision="float32")
    p16 = sw.Predictor(model, store=url16, disk_cache=False, precision="float32")
    ious = []
    for image in images:
        h, w = image.shape[:2]
        p32.set_image(image)
        p16.set_image(image)
        for y in np.linspace(0, h, grid + 2)[1:-1]:
            for x in np.linspace(0, w, grid + 2)[1:-1]:
                a = p32.predict(points=[(x, y)], labels=[1]).masks
                b = p16.predict(points=[(x, y)], labels=[1]).masks
                for m32, m16 in zip(a, b, strict=True):
                    union = (m32 | m16).sum()
                    ious.append(1.0 if union == 0 else (m32 & m16).sum() / union)
    return float(np.mean(ious)), float(np.min(ious))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="vit_b", help="vit_b, vit_l, vit_h or tiny")
    parser.add_argument("--weights", default=None, help="a checkpoint (else random weights)")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", default="480x640", help="HxW of the synthetic images")
    parser.add_argument("--sleep", type=float, default=0.5, help="simulated encoder seconds")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray rows and table")
    parser.add_argument("--no-sim", action="store_true", help="skip the simulated scaling")
    args = parser.parse_args()

    h, w = (int(v) for v in args.size.split("x"))
    images = [synthetic_image(h, w, seed=i) for i in range(args.images)]
    model, config = make_model(args)
    threads = torch.get_num_threads()
    work = tempfile.mkdtemp(prefix="bench-precompute-")
    n = len(images)
    print(f"{args.model} ({'weights' if args.weights else 'random weights'}), {n} images "
          f"{h}x{w}, device {args.device}, {threads} torch threads, {os.cpu_count()} CPUs")
    try:
        t_official = official_loop(model, config, images, os.path.join(work, "official"))
        url32 = os.path.join(work, "local.zarr")
        t_local = timed_precompute(images, url32, model, device=args.device)
        rows = [("official SamPredictor loop + np.save", t_official),
                ("sw.precompute, engine='local'", t_local)]
        if not args.no_ray:
            import ray

            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
            for workers in (1, 2):
                url = os.path.join(work, f"ray{workers}.zarr")
                each = {"num_cpus": max(1, os.cpu_count() // workers)}
                if args.device.startswith("cuda"):
                    each = {"num_gpus": 1}
                t = timed_precompute(images, url, model, engine="ray", workers=workers,
                                     worker_options=each, threads=max(1, threads // workers),
                                     device=args.device)
                rows.append((f"sw.precompute, engine='ray', {workers} worker(s)", t))
        print(f"\n{'engine':48s} {'images/s':>9s} {'x official':>10s}")
        for name, t in rows:
            print(f"{name:48s} {n / t:9.3f} {t_official / t:10.2f}")

        url16 = os.path.join(work, "half.zarr")
        timed_precompute(images, url16, model, dtype="float16", device=args.device)
        probe = sw.Predictor(model, disk_cache=False)
        probe.set_image(images[0])
        raw = 4 * int(np.prod(probe.embedding.shape))
        for name, url in (("float32", url32), ("float16", url16)):
            store = EmbeddingStore(url)
            feats = sum(folder_bytes(os.path.join(url, "images", e["key"], "embedding"))
                        for e in store.entries())
            print(f"store {name}: {folder_bytes(url) / n / 1e6:.2f} MB/image in all, "
                  f"embedding {feats / n / 1e6:.2f} MB (raw float32 {raw / 1e6:.2f} MB)")
        store = EmbeddingStore(url32)
        keys = [e["key"] for e in store.entries()]
        start = time.perf_counter()
        for key in keys:
            store.read(key)
        read = (time.perf_counter() - start) / len(keys)
        hit = sw.Predictor(model, store=url32, disk_cache=False)
        start = time.perf_counter()
        for image in images:
            hit.set_image(image)
        from_store = (time.perf_counter() - start) / n
        print(f"read one embedding: {read * 1e3:.1f} ms; Predictor.set_image from the store "
              f"{from_store * 1e3:.1f} ms vs encoding {t_local / n * 1e3:.0f} ms")
        mean_iou, min_iou = mask_agreement(model, images, url32, url16)
        print(f"float16 storage: mask IoU with float32 storage {mean_iou:.5f} mean, "
              f"{min_iou:.4f} worst (single-point prompts, {args.model})")

        if not args.no_ray and not args.no_sim:
            base = small_sam(0)
            sleeper = SleepEncoder(args.sleep, base.image_encoder.img_size, 256,
                                   base.image_encoder.img_size // 16)
            base.image_encoder = sleeper
            tasks = [synthetic_image(64, 64, seed=i) for i in range(32)]
            print(f"\nsimulated: an encoder that takes {args.sleep} s per image, {len(tasks)} "
                  "images; steady state = first to last commit (actor start-up excluded)")
            print(f"{'workers':>7s} {'images/s':>9s} {'x 1 worker':>10s} {'with start-up':>14s}")
            first = None
            for workers in (1, 2, 4, 8):
                url = os.path.join(work, f"sim{workers}.zarr")
                commits: list[float] = []

                def committed(done: int, commits: list[float] = commits) -> None:
                    commits.append(time.perf_counter())

                t = timed_precompute(tasks, url, base, engine="ray", workers=workers,
                                     worker_options={"num_cpus": 0.1}, threads=1,
                                     commit_every=1, on_commit=committed)
                rate = (len(commits) - 1) / (commits[-1] - commits[0])
                first = first or rate
                print(f"{workers:7d} {rate:9.2f} {rate / first:10.2f} {len(tasks) / t:14.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
