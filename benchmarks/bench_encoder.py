"""Benchmark: our SAM image encoder against the official one, same process, same weights.

Prints wall times (best of ``--repeats``), the ratios ours / official, and how closely the
embeddings agree, for float32 and for bfloat16 autocast (the reduced-precision option), plus
whether this CPU has native bf16 matmuls (``avx512_bf16`` or AMX). Not a test: timings vary
with the machine and its load. Run from the repository root::

    python benchmarks/bench_encoder.py --variant vit_b
    python benchmarks/bench_encoder.py --variant mobile_sam --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sam_widget.models import CONFIGS, build_sam  # noqa: E402
from tests.reference import official_sam, randomize_  # noqa: E402


def cpu_bf16_support() -> str:
    """What the CPU offers for bf16 matmuls, from /proc/cpuinfo (Linux)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown (no /proc/cpuinfo)"
    found = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return ", ".join(found) if found else "none (bf16 is emulated: expect it to be slow)"


def best_times(fns, repeats: int, warmup: bool = True) -> tuple[list[float], list[torch.Tensor]]:
    """Best wall time of each function over ``repeats`` rounds after a warm-up, and outputs.

    The functions take turns within each round, so a burst of load from other processes on
    a shared machine hits all of them alike rather than one.
    """
    outs = [fn() for fn in fns] if warmup else [torch.empty(0)] * len(fns)
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            outs[i] = fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best, outs


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.float() - ref).abs().max() / ref.std())


def mask_agreement(sam, emb: torch.Tensor, ref_emb: torch.Tensor, n_points: int = 8) -> float:
    """Fraction of pixels (at 1024 x 1024) on which one-point masks from two embeddings agree."""
    gen = torch.Generator().manual_seed(0)
    points = torch.rand(n_points, 1, 2, generator=gen) * 1024  # one point per prompt
    labels = torch.ones(n_points, 1, dtype=torch.int64)
    masks = []
    for e in (emb.float(), ref_emb):
        sparse, dense = sam.prompt_encoder(points=(points, labels), boxes=None, masks=None)
        logits, _ = sam.mask_decoder(
            image_embeddings=e,
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )
        masks.append(sam.postprocess_masks(logits, (1024, 1024), (1024, 1024)) > 0)
    return float((masks[0] == masks[1]).float().mean())


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="vit_b", choices=sorted(CONFIGS))
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (after a warm-up)")
    parser.add_argument("--bf16-repeats", type=int, default=1, help="timed bf16 runs")
    parser.add_argument("--no-bf16", action="store_true", help="skip bfloat16 autocast")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    config = CONFIGS[args.variant]
    official = randomize_(official_sam(config), seed=0)
    ours = build_sam(config)
    ours.load_state_dict(official.state_dict(), strict=True)
    image = torch.randn(1, 3, config.image_size, config.image_size)

    print(f"variant {args.variant}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"CPU bf16 support: {cpu_bf16_support()}")

    (t_off, t_ours), (ref, out) = best_times(
        [lambda: official.image_encoder(image), lambda: ours.image_encoder(image)], args.repeats
    )
    print(
        f"float32  official {t_off:7.2f} s   ours {t_ours:7.2f} s   "
        f"ours/official {t_ours / t_off:.2f}  (speed-up {t_off / t_ours:.2f}x)"
    )
    print(f"         embedding max|diff|/std {rel_err(out, ref):.1e}")

    if not args.no_bf16:

        def bf16() -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return ours.image_encoder(image)

        # without native bf16 a run takes minutes: skip the warm-up there
        native = "none" not in cpu_bf16_support()
        (t_bf,), (low,) = best_times([bf16], args.bf16_repeats, warmup=native)
        print(
            f"bfloat16 ours {t_bf:7.2f} s   ours-bf16/official-fp32 {t_bf / t_off:.2f}  "
            f"(speed-up {t_off / t_bf:.2f}x)"
        )
        print(
            f"         embedding max|diff|/std {rel_err(low, ref):.1e}, one-point masks agree "
            f"on {100 * mask_agreement(ours, low, ref):.2f}% of pixels"
        )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
