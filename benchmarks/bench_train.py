"""Benchmark: fine-tuning the mask decoder on a CPU, and what it buys on held-out clicks.

Two measurements, both printed:

1. ``step`` (default): seconds per training step of the mask decoder with precomputed
   embeddings at the real size (vit_b's decoder, 64x64 embeddings, 256x256 logits), for
   ``--objects`` objects and ``--rounds`` simulated prompts per step, and the memory it takes
   (peak resident set growth over the embeddings). Next to it, one forward + backward round of
   the official segment_anything decoder on the same weights and inputs, and ours, as a ratio.
2. ``--seeds N``: the run of tests/test_train.py at its sizes (a random vit_b-width SAM with a
   one-block encoder at a 128-pixel input, 12 generated images, 4 held out, 60 steps; ``--steps``
   for longer runs) over N seeds: held-out mIoU after 1 and 3 clicks before and after, and the
   training loss's end against its start. ``--learn``: the test's gain run instead
   (tests/test_train.py ``learn``: a narrow decoder that learns within the budget).

    PYTHONPATH=. python benchmarks/bench_train.py [--objects 8 --rounds 4 --steps 5]
    PYTHONPATH=. python benchmarks/bench_train.py --seeds 5 [--steps 600 | --learn] [--threads 1]

Measured on the shared 2-core development machine (heavily loaded, one thread), 2026-12-01:
a real-size decoder step of 4 objects x 2 rounds took 4.9 s (0.61 s per object-round), 0.9 GB
over the model; one multimask round forward+backward 3.3 s, the official decoder 3.8 s (0.86x).
--seeds 5 (60 steps): loss 0.63x-0.67x, one-click held-out mIoU 0.05-0.07 before and 0.00-0.06
after (no gain: a random decoder first collapses to empty masks). --seeds 2 --steps 600: loss
0.12x-0.18x, one-click mIoU +0.04 and +0.06; with 48 images instead of 12, no gain at 600 steps.
--seeds 5 --learn --threads 1 (the test's gain run: 64-channel decoder, 256-pixel input, 60
images of which 20 held out, 1500 steps, ~30 s each), one-click held-out mIoU per seed 0-4:
0.080 -> 0.228, 0.049 -> 0.268, 0.062 -> 0.191, 0.066 -> 0.322, 0.003 -> 0.277 (gain +0.13 to
+0.27, mean +0.21), loss 0.29x-0.35x; without the lr decay for the last fifth: +0.21, +0.22,
+0.05, +0.30, +0.26. At 1200 steps (no decay) +0.13 to +0.15 over seeds 0-2; at 2000 steps
+0.13 to +0.25. With two threads on the busy 2-core machine one run took 274 s, not 30 s.
"""

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import sys
import time

import numpy as np
import torch

import sam_widget as sw
from sam_widget.train.family import Encoded, training_family
from sam_widget.train.loop import _simulate, trainable
from sam_widget.train.losses import sam_loss


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def bench_step(args) -> None:
    from tests.reference import official_sam

    torch.manual_seed(0)
    sam = sw.build_sam("vit_b" if args.full else _narrow_encoder())
    family = training_family(sam)
    rng = np.random.default_rng(0)
    size = family.image_size
    enc = Encoded(torch.randn(1, 256, size // 16, size // 16), (768, 1024), (768, 1024))
    # objects: random ellipses in the low-res frame
    yy, xx = np.mgrid[: family.low_res, : family.low_res]
    targets = []
    for _ in range(args.objects):
        cy, cx = rng.uniform(40, 150), rng.uniform(40, 210)
        r = rng.uniform(10, 40)
        targets.append(((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.float32))
    t = torch.from_numpy(np.stack(targets))
    base_rss = peak_rss_mb()
    times = []
    with trainable(sam, ("mask_decoder",)) as trained:
        optimizer = torch.optim.AdamW(trained, lr=1e-4)
        for i in range(args.steps + 1):
            start = time.perf_counter()
            _simulate(family, enc, None, t, rounds=args.rounds, box=bool(i % 2),
                      cell=family.image_size / family.low_res, rng=rng,
                      device=torch.device("cpu"))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if i:  # the first step warms up
                times.append(time.perf_counter() - start)
    step = statistics.median(times)
    print(f"decoder training step ({args.objects} objects x {args.rounds} rounds, "
          f"{torch.get_num_threads()} threads): median {step:.2f} s over {len(times)} steps "
          f"({step / args.rounds / args.objects * 1000:.0f} ms per object-round)")
    print(f"memory: peak RSS {peak_rss_mb():.0f} MB, {peak_rss_mb() - base_rss:.0f} MB over "
          "the model and the embedding")

    # one round, ours vs the official decoder on the same weights
    official = official_sam(sam_config(sam))
    official.load_state_dict(sam.state_dict())
    coords = torch.tensor(rng.uniform(0, 700, (args.objects, 1, 2)), dtype=torch.float32)
    labels = torch.ones(args.objects, 1, dtype=torch.int64)

    def round_of(model):
        def run():
            model.zero_grad(set_to_none=True)
            pe = model.prompt_encoder
            sparse, dense = pe(points=(coords, labels), boxes=None, masks=None)
            # the official decoder repeats the image per prompt itself
            logits, iou = model.mask_decoder(
                image_embeddings=enc.embedding, image_pe=pe.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                multimask_output=True)
            sam_loss(logits, iou, t)[0].backward()
        return run

    med = {name: [] for name in ("ours", "official")}
    fns = {"ours": round_of(sam), "official": round_of(official)}
    for fn in fns.values():
        fn()
    for _ in range(args.repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            med[name].append(time.perf_counter() - start)
    ours, theirs = (statistics.median(med[k]) for k in ("ours", "official"))
    print(f"one multimask round forward+backward: ours {ours:.3f} s, official {theirs:.3f} s, "
          f"ratio {ours / theirs:.2f}x")


def _narrow_encoder():
    # the encoder is not run (embeddings are given): a one-block one keeps the build cheap
    return sw.models.get_config("vit_b").with_encoder(
        embed_dim=192, depth=1, num_heads=3, global_attn_indexes=(0,))


def sam_config(sam):
    return _narrow_encoder() if sam.image_encoder.blocks.__len__() == 1 else "vit_b"


def bench_seeds(args) -> None:
    from sam_widget.train.synthetic import shapes_dataset
    from tests.test_train import STEPS, learn, small_sam

    images, masks = shapes_dataset(12, size=(96, 128), seed=0)
    gains = []
    steps = args.steps if args.steps != 5 else STEPS
    for seed in range(args.seeds):
        start = time.perf_counter()
        if args.learn:  # the gain's run of tests/test_train.py (narrow decoder, 1 click)
            report = learn(seed)
        else:
            sam = copy.deepcopy(small_sam(seed))
            report = sw.train.finetune(sam, images, masks, steps=steps, lr=1e-3, rounds=2,
                                       objects_per_step=4, validation=0.34, progress=False,
                                       seed=seed)
        gains.append(report.after[1] - report.before[1])
        k = max(10, len(report.losses) // 15)
        first, last = np.mean(report.losses[:k]), np.mean(report.losses[-k:])
        more = ("" if 3 not in report.after else
                f"3 clicks {report.before[3]:.3f} -> {report.after[3]:.3f}, ")
        print(f"seed {seed}: mIoU 1 click {report.before[1]:.3f} -> {report.after[1]:.3f} "
              f"({gains[-1]:+.3f}), {more}"
              f"loss {first:.3f} -> {last:.3f} ({last / first:.2f}x), "
              f"{time.perf_counter() - start:.0f} s")
    print(f"one-click gain over {args.seeds} seeds: min {min(gains):.3f}, "
          f"mean {np.mean(gains):.3f}, max {max(gains):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (--seeds: steps)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--full", action="store_true", help="build the whole vit_b")
    parser.add_argument("--seeds", type=int, default=0, help="run the before/after sweep")
    parser.add_argument("--learn", action="store_true",
                        help="--seeds: the test's gain run (narrow decoder, 1500 steps)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.seeds:
        bench_seeds(args)
    else:
        bench_step(args)


if __name__ == "__main__":
    main()
