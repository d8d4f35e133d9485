"""Benchmark: everything mode, ours vs the official SamAutomaticMaskGenerator.

Same process, same random vit_b weights, same image and settings; each generator encodes the
image itself (our embedding cache is cleared first). Random weights predict IoUs near 0 and
stability scores near 0.1, so the default thresholds would discard every mask after the
expensive part; the thresholds below keep some masks so the whole pipeline runs. Prints both
times, the ratio (target: ours <= 0.5x) and how the outputs match.

    PYTHONPATH=. python benchmarks/bench_everything.py [--points-per-side 32 --size 480 640]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from sam_widget.automatic import MaskGenerator

# Random weights predict IoUs near 0 and stability scores near 0.1: thresholds that keep some
# masks, so the whole pipeline runs (the official defaults are 0.88 and 0.95)
RANDOM_WEIGHT_THRESHOLDS = {"pred_iou_thresh": 0.05, "stability_score_thresh": 0.1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="vit_b")
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    for name, value in RANDOM_WEIGHT_THRESHOLDS.items():
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=value)
    args = parser.parse_args()

    from segment_anything import SamAutomaticMaskGenerator, sam_model_registry

    torch.manual_seed(0)
    try:
        from sam_widget.models import build_sam

        ours_model = build_sam(args.variant).eval()
    except ImportError:  # our models have not landed: the official architecture
        ours_model = sam_model_registry[args.variant]().eval()
    with torch.no_grad():
        for name, p in ours_model.named_parameters():
            if "rel_pos" in name or "pos_embed" in name:
                p.normal_(0, 0.5)
        for mlp in ours_model.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(30)  # logits with a trained model's spread
    ref_model = sam_model_registry[args.variant]().eval()
    ref_model.load_state_dict(ours_model.state_dict())

    h, w = args.size
    rng = np.random.default_rng(0)
    image = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    image[h // 4 : h * 3 // 4, w // 4 : w // 2] = (200, 30, 30)
    settings = dict(
        points_per_side=args.points_per_side,
        pred_iou_thresh=args.pred_iou_thresh,
        stability_score_thresh=args.stability_score_thresh,
    )

    ours = MaskGenerator(ours_model, **settings)
    ours.predictor.clear_cache()
    start = time.perf_counter()
    ours_records = ours.generate(image)
    t_ours = time.perf_counter() - start
    print(f"sam_widget MaskGenerator:        {t_ours:8.1f} s  ({len(ours_records)} masks)")

    start = time.perf_counter()
    ref_records = SamAutomaticMaskGenerator(ref_model, **settings).generate(image)
    t_ref = time.perf_counter() - start
    print(f"official SamAutomaticMaskGenerator: {t_ref:8.1f} s  ({len(ref_records)} masks)")
    print(
        f"ratio ours/official: {t_ours / t_ref:.2f}x   (target <= 0.5x; vit_b, "
        f"{args.points_per_side}x{args.points_per_side} grid, image {h}x{w})"
    )
    worst = 1.0
    for ref in ref_records:
        a = ref["segmentation"]
        best = max(
            ((a & r["segmentation"]).sum() / max((a | r["segmentation"]).sum(), 1))
            for r in ours_records
        )
        worst = min(worst, best)
    print(f"same number of masks: {len(ours_records) == len(ref_records)}; worst IoU {worst:.4f}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads (a shared machine)")


if __name__ == "__main__":
    main()
