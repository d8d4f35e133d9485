"""Benchmark: our SAM image encoder against the official one, same process, same weights.

Prints wall times (best of ``--repeats``), the ratios ours / official, and how closely the
embeddings agree, for float32 and for reduced-precision autocast (bfloat16 on the CPU, float16
on CUDA by default), plus whether this CPU has native bf16 matmuls (``avx512_bf16`` or AMX).
Not a test: timings vary with the machine and its load. Run from the repository root::

    python benchmarks/bench_encoder.py --variant vit_b
    python benchmarks/bench_encoder.py --variant mobile_sam --repeats 5
    python benchmarks/bench_encoder.py --device cuda --low bfloat16   # on a GPU machine
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


def synchronized(fn, device: torch.device):
    """``fn`` that returns only once the device has finished its work (CUDA runs async)."""
    if device.type != "cuda":
        return fn

    def run():
        out = fn()
        torch.cuda.synchronize(device)
        return out

    return run


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
    points = (torch.rand(n_points, 1, 2, generator=gen) * 1024).to(ref_emb.device)
    labels = torch.ones(n_points, 1, dtype=torch.int64, device=ref_emb.device)
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
    parser.add_argument("--no-bf16", action="store_true", help="skip the reduced precision run")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps, ...")
    parser.add_argument(
        "--low",
        choices=("bfloat16", "float16"),
        default=None,
        help="autocast dtype of the reduced-precision run (default: float16 on CUDA, "
        "like Predictor's precision='auto', else bfloat16)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    low_dtype = getattr(torch, args.low or ("float16" if device.type == "cuda" else "bfloat16"))

    config = CONFIGS[args.variant]
    official = randomize_(official_sam(config), seed=0)
    ours = build_sam(config)
    ours.load_state_dict(official.state_dict(), strict=True)
    official, ours = official.to(device), ours.to(device)
    image = torch.randn(1, 3, config.image_size, config.image_size).to(device)

    print(f"variant {args.variant}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    if device.type == "cpu":
        print(f"CPU bf16 support: {cpu_bf16_support()}")
    else:
        print(
            f"device {device}"
            + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        )

    (t_off, t_ours), (ref, out) = best_times(
        [
            synchronized(lambda: official.image_encoder(image), device),
            synchronized(lambda: ours.image_encoder(image), device),
        ],
        args.repeats,
    )
    print(
        f"float32  official {t_off:7.2f} s   ours {t_ours:7.2f} s   "
        f"ours/official {t_ours / t_off:.2f}  (speed-up {t_off / t_ours:.2f}x)"
    )
    print(f"         embedding max|diff|/std {rel_err(out, ref):.1e}")

    if not args.no_bf16:

        def reduced() -> torch.Tensor:
            with torch.autocast(device.type, dtype=low_dtype):
                return ours.image_encoder(image)

        # without native bf16 a CPU run takes minutes: skip the warm-up there
        native = device.type != "cpu" or "none" not in cpu_bf16_support()
        (t_bf,), (low,) = best_times(
            [synchronized(reduced, device)], args.bf16_repeats, warmup=native
        )
        name = str(low_dtype).removeprefix("torch.")
        print(
            f"{name:8s} ours {t_bf:7.2f} s   ours-{name}/official-fp32 {t_bf / t_off:.2f}  "
            f"(speed-up {t_off / t_bf:.2f}x)"
        )
        print(
            f"         embedding max|diff|/std {rel_err(low, ref):.1e}, one-point masks agree "
            f"on {100 * mask_agreement(ours, low, ref):.2f}% of pixels"
        )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
