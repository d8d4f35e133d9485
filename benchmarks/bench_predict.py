"""Benchmark: one click -> three full-size masks, ours vs the official SamPredictor.

Same process, same random vit_b weights, same image embedding (encoded once by our Predictor
and handed to the official predictor, so only ``predict`` is timed). Prints the median time of
each, their ratio (target: ours <= 0.5x official) and how well the masks agree.

    PYTHONPATH=. python benchmarks/bench_predict.py [--height 1200 --width 1800 --repeat 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from sam_widget.models import build_sam
from sam_widget.predictor import Predictor


def official_model(variant: str, state_dict: dict) -> torch.nn.Module:
    from segment_anything import sam_model_registry

    model = sam_model_registry[variant]().eval()
    model.load_state_dict(state_dict)
    return model


def interleaved(fns: dict, repeat: int) -> dict[str, float]:
    """Median seconds of each function, run in turn (A, B, A, B, ...) after one warm-up each,
    so that a shared machine's slow spells fall on both sides alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="vit_b")
    parser.add_argument("--height", type=int, default=1200)
    parser.add_argument("--width", type=int, default=1800)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()

    from segment_anything import SamPredictor

    torch.manual_seed(0)
    ours_model = build_sam(args.variant).eval()
    with torch.no_grad():  # exercise the zero-initialised tables too
        for name, p in ours_model.named_parameters():
            if "rel_pos" in name or "pos_embed" in name:
                p.normal_(0, 0.5)
    ref_model = official_model(args.variant, ours_model.state_dict())

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: args.height, : args.width]
    image = np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)
    image[args.height // 4 : args.height // 2, args.width // 4 : args.width // 2] = 200
    image = np.clip(image + rng.integers(0, 20, image.shape), 0, 255).astype(np.uint8)

    ours = Predictor(ours_model, device="cpu")
    start = time.perf_counter()
    ours.set_image(image)
    encoded = time.perf_counter() - start
    print(f"(image {args.height}x{args.width}, encoded once in {encoded:.1f} s)")
    ref = SamPredictor(ref_model)
    ref.original_size = ours.image_shape
    ref.input_size = ours.input_size
    ref.features = ours.embedding[None].float()
    ref.is_image_set = True

    point = np.array([[args.width * 0.4, args.height * 0.4]])
    label = np.array([1])
    medians = interleaved(
        {
            "official": lambda: ref.predict(point, label),
            "ours": lambda: ours.predict(point, label).masks,
        },
        args.repeat,
    )
    t_ref, t_ours = medians["official"], medians["ours"]
    masks_ref, scores_ref, _ = ref.predict(point, label)
    pred = ours.predict(point, label)
    agree = (pred.masks == masks_ref).mean()
    print(f"official SamPredictor.predict: {t_ref * 1e3:8.1f} ms")
    print(f"sam_widget Predictor.predict:  {t_ours * 1e3:8.1f} ms   (3 masks {pred.masks.shape})")
    print(f"ratio ours/official: {t_ours / t_ref:.2f}x   (target <= 0.5x)")
    print(
        f"masks agree on {agree * 100:.4f}% of pixels; "
        f"max score diff {np.abs(pred.scores - scores_ref).max():.1e}"
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads (a shared machine)")


if __name__ == "__main__":
    main()
