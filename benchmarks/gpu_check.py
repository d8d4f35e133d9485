"""One GPU check: the CUDA path verified and measured in a single run, about five minutes on one
modern GPU, offline (random weights, nothing downloaded). Prints a table and writes it as JSON.

    python benchmarks/gpu_check.py                                # CUDA, full size
    python benchmarks/gpu_check.py --only 'encoder/vit_h/*,click/*'  # rerun some rows
    python benchmarks/gpu_check.py --list                         # the row ids; runs nothing
    python benchmarks/gpu_check.py --requirements                 # what to install beforehand
    python benchmarks/gpu_check.py --device cpu --smoke           # every path at tiny sizes (CI)

Ours is sam_widget; official is the reference implementation (segment-anything, MobileSAM,
SAM 2.1), run in the same process on the same random weights and the same device. Rows, for
the variants V of the table VARIANTS below (heaviest last, so a short time budget loses the
least; `--list` prints them):

  check/V/float32   masks of a few clicks (3 candidates each), float32 on the device vs float32
                    on the CPU (our Predictor): pass when >= 99.9% of pixels agree
  check/V/float16   the encoder under float16 (resp. bfloat16) autocast vs float32, both on the
  check/V/bfloat16  device (Predictor precision=...): pass when >= 99% of pixels agree
  click/V           one click -> three full-size masks, Predictor.predict vs the official
                    predictor's predict, float32; pass when the masks agree on >= 99.9%
  widget/V          the widget's kernel path: a prompt message -> mask bytes for the comm
                    (benchmarks/bench_widget.py), precision "auto" (a float16 encoder on CUDA),
                    vs the official predict of the same click
  everything/V      everything mode on a 32x32 grid, image encoding included, float32; agree is
                    the mean, over the official masks, of the best IoU with one of ours
  encoder/V/P       one image encoded (resize, normalise, image encoder: Predictor._encode vs
                    the official set_image) in precision P, the official one under autocast

Speed rows give the median wall time after a warm-up (CUDA synchronised around each call),
ours/official, and each implementation's peak GPU memory: its weights plus the most its call
allocated on top of what was already allocated (measured on the warm-up call). The JSON file
is rewritten after each row, so a run stopped early keeps what it measured.

`--smoke` shrinks the models (narrow, one block a stage), images and repeats and runs each
model family's and encoder type's rows once (each variant's `smoke` kinds): what CI runs.

Besides sam-widget and its dependencies (with a CUDA build of torch) it needs the official
packages (`--requirements` prints them); where one is missing, or sam_widget lacks a model
family, the row says "not available" and the rest still runs. Exit status: 0 when no row
failed its check or raised an error.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import fnmatch
import gc
import importlib.metadata
import json
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_encoder import synchronized  # noqa: E402
from bench_everything import RANDOM_WEIGHT_THRESHOLDS  # noqa: E402
from bench_widget import prompt_to_mask_bytes, scene  # noqa: E402

import sam_widget as sw  # noqa: E402

# pip requirements besides sam-widget's own (torch, numpy, pillow, anywidget, ...): the official
# implementations. segment-anything imports torchvision, mobilesam-lite timm, sam2 hydra-core,
# omegaconf and iopath (pip installs those with them).
REQUIREMENTS = ("segment-anything==1.0", "mobilesam-lite>=0.1.2", "sam2>=1.1")

PRECISIONS = ("float32", "float16", "bfloat16")
MASKS_EQUAL_FLOAT32 = 0.999  # float32 on the device vs float32 on the CPU, ours vs official
MASKS_EQUAL_LOW = 0.99  # float16 / bfloat16 autocast vs float32


ROW_KINDS = ("check", "click", "widget", "everything", "encoder")


@dataclass(frozen=True)
class Variant:
    """One model of the table: which kinds of rows it gets."""

    name: str  # sam_widget variant name
    family: str  # "sam" (segment-anything, MobileSAM) or "sam2" (SAM 2.1)
    rows: tuple[str, ...]  # kinds of rows (ROW_KINDS) measured on a GPU
    # kinds of rows the smoke run covers: each family's and each encoder type's code paths
    # once (a row's code is the same for every variant of a family; more only costs CPU time)
    smoke: tuple[str, ...] = ()


# cheapest first: rows run in this order within each kind of row, encoder rows last
VARIANTS = (
    Variant("mobile_sam", "sam", ("check", "click", "encoder"), smoke=("click",)),
    Variant("sam2.1_hiera_tiny", "sam2", ROW_KINDS, smoke=("click", "everything")),
    Variant("vit_b", "sam", ROW_KINDS, smoke=ROW_KINDS),
    Variant("sam2.1_hiera_large", "sam2", ("encoder",)),
    Variant("vit_h", "sam", ("encoder",)),
)
_VARIANT = {v.name: v for v in VARIANTS}


@dataclass(frozen=True)
class Sizes:
    """Image sizes, prompt counts and repeats: the real ones, or tiny ones for the smoke run."""

    check_image: tuple[int, int] = (768, 1024)
    check_clicks: int = 8
    click_image: tuple[int, int] = (1200, 1800)  # the README's click row
    click_repeats: int = 20
    widget_image: tuple[int, int] = (768, 1024)  # bench_widget's
    widget_prompts: int = 20
    everything_image: tuple[int, int] = (480, 640)  # the README's everything row
    points_per_side: int = 32
    everything_repeats: int = 1
    encoder_image: tuple[int, int] = (768, 1024)  # longest side 1024: no resize
    encoder_repeats: int = 5


SMOKE = Sizes(
    check_image=(96, 128),
    check_clicks=2,
    click_image=(96, 128),
    click_repeats=0,  # 0: the warm-up call is the only one (the figures mean nothing here)
    widget_image=(96, 128),
    widget_prompts=1,
    everything_image=(96, 128),
    points_per_side=4,
    everything_repeats=0,
    encoder_image=(96, 128),
    encoder_repeats=0,
)


class Unavailable(Exception):
    """A row that cannot run here (a package, a model family or a device feature is missing)."""


# --------------------------------------------------------------------------------------------
# Model pairs: ours and the official one with the same random weights
# --------------------------------------------------------------------------------------------


def _sam_pair(name: str, smoke: bool) -> tuple[torch.nn.Module, torch.nn.Module]:
    from sam_widget.models import TinyViTConfig, get_config
    from tests.test_predictor_support import sam_pair

    try:
        import segment_anything  # noqa: F401

        if name == "mobile_sam":
            import tests.reference

            tests.reference._mobile_sam_modeling()
    except ImportError as e:
        raise Unavailable(f"official package missing ({e}); see --requirements") from None
    config = get_config(name)
    if smoke:  # narrow encoders: one block (ViT, 256-pixel input), one a stage (TinyViT, whose
        # official code hard-codes the 1024-pixel input)
        if isinstance(config.encoder, TinyViTConfig):
            config = config.with_encoder(
                embed_dims=(16, 32, 64, 320),
                depths=(1, 1, 1, 1),
                num_heads=(1, 1, 2, 10),
                mlp_ratio=1.0,
                mbconv_expand_ratio=1.0,
            )
        else:
            config = config.with_encoder(
                img_size=256, embed_dim=192, depth=1, num_heads=3, global_attn_indexes=(0,)
            )
    return sam_pair(config, seed=0)


def _sam2_pair(name: str, smoke: bool) -> tuple[torch.nn.Module, torch.nn.Module]:
    from tests.test_predictor_support import sharpen_

    try:
        import sam2  # noqa: F401
    except ImportError as e:
        raise Unavailable(f"official package missing ({e}); see --requirements") from None
    try:
        from tests.reference_sam2 import reduced, sam2_pair
    except ImportError as e:
        raise Unavailable(f"sam_widget has no SAM 2.1 models here ({e})") from None
    # smoke: a narrow trunk of one block a stage plus one global-attention block (the official
    # predictor hard-codes the 1024-pixel input)
    config = reduced(name).with_trunk(embed_dim=24) if smoke else name
    official, ours = sam2_pair(config, seed=0)
    return sharpen_(ours), sharpen_(official)


def _sam_predictor(model):
    from segment_anything import SamPredictor

    return SamPredictor(model)


def _sam_generator(model, **settings):
    from segment_anything import SamAutomaticMaskGenerator

    return SamAutomaticMaskGenerator(model, **settings)


def _sam2_predictor(model):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    return SAM2ImagePredictor(model)


def _sam2_generator(model, **settings):
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    return SAM2AutomaticMaskGenerator(model, **settings)


@dataclass(frozen=True)
class Family:
    """How to build a pair (ours, official) of a model family, and the official predictor
    (``set_image(rgb)``, ``predict(point_coords=, point_labels=, multimask_output=)``) and
    automatic mask generator (``generate(rgb)``) to run against ours."""

    pair: Callable[[str, bool], tuple[torch.nn.Module, torch.nn.Module]]  # (name, smoke)
    predictor: Callable[[torch.nn.Module], Any]
    mask_generator: Callable[..., Any]  # (model, **settings)


FAMILIES = {
    "sam": Family(_sam_pair, _sam_predictor, _sam_generator),
    "sam2": Family(_sam2_pair, _sam2_predictor, _sam2_generator),
}


@dataclass
class Pair:
    ours: torch.nn.Module
    official: torch.nn.Module
    family: Family


class Models:
    """Model pairs built once on the CPU, moved to the device, dropped after their last row."""

    def __init__(self, device: torch.device, smoke: bool) -> None:
        self.device, self.smoke = device, smoke
        self._pairs: dict[str, Pair | Unavailable] = {}

    def get(self, name: str) -> Pair:
        if name not in self._pairs:
            family = FAMILIES[_VARIANT[name].family]
            try:
                ours, official = family.pair(name, self.smoke)
                self._pairs[name] = Pair(
                    ours.to(self.device), official.to(self.device).eval(), family
                )
            except Unavailable as e:
                self._pairs[name] = e
        pair = self._pairs[name]
        if isinstance(pair, Unavailable):
            raise pair
        return pair

    def drop(self, name: str) -> None:
        self._pairs.pop(name, None)
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def weights_mib(model: torch.nn.Module) -> float:
    tensors = chain(model.parameters(), model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def measure(
    fns: dict[str, Callable[[], Any]], repeats: int, device: torch.device
) -> tuple[dict[str, float], dict[str, float | None], dict[str, Any]]:
    """Per function: median milliseconds over ``repeats`` rounds after a warm-up (the functions
    take turns, so a slow spell hits all alike; with 0 repeats, the warm-up's time), the MiB
    its warm-up call allocated on top of what was allocated before (None off CUDA), and the
    warm-up call's result."""
    fns = {name: synchronized(fn, device) for name, fn in fns.items()}
    peaks: dict[str, float | None] = {}
    outputs: dict[str, Any] = {}
    warmup: dict[str, list[float]] = {}
    for name, fn in fns.items():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        outputs[name] = fn()
        warmup[name] = [time.perf_counter() - start]
        peaks[name] = (
            (torch.cuda.max_memory_allocated(device) - base) / 2**20
            if device.type == "cuda"
            else None
        )
    if repeats == 0:
        return {n: t[0] * 1e3 for n, t in warmup.items()}, peaks, outputs
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {n: statistics.median(t) * 1e3 for n, t in times.items()}, peaks, outputs


def speed_fields(ms, peaks, pair: Pair) -> dict[str, Any]:
    def mib(name: str, model: torch.nn.Module) -> float | None:
        return None if peaks[name] is None else weights_mib(model) + peaks[name]

    return {
        "ours_ms": ms["ours"],
        "official_ms": ms["official"],
        "ratio": ms["ours"] / ms["official"],
        "ours_mib": mib("ours", pair.ours),
        "official_mib": mib("official", pair.official),
    }


def clicks(shape: tuple[int, int], n: int, seed: int = 0) -> np.ndarray:
    """(n, 2) pixel (x, y) points inside an image of ``shape`` (h, w)."""
    h, w = shape
    return np.random.default_rng(seed).uniform([0, 0], [w - 1, h - 1], size=(n, 2))


def our_masks(predictor, image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bool (n, 3, H, W): three candidates per one-click prompt."""
    predictor.set_image(image)
    return np.stack([predictor.predict(points=[p], labels=[1]).masks for p in points])


def official_predict(predictor, point) -> np.ndarray:
    masks, _, _ = predictor.predict(
        point_coords=np.asarray([point], np.float32),
        point_labels=np.array([1]),
        multimask_output=True,
    )
    return np.asarray(masks).astype(bool)  # SAM 2.1 returns 0/1 floats


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean())


def check_fields(agree: float, threshold: float) -> dict[str, Any]:
    return {
        "agree": agree,
        "threshold": threshold,
        "status": "pass" if agree >= threshold else "FAIL",
    }


def best_iou(official_masks: list[np.ndarray], our_masks: list[np.ndarray], device) -> float:
    """Mean over the official masks of the best IoU with one of ours (1 when both are empty)."""
    if not official_masks or not our_masks:
        return float(len(official_masks) == len(our_masks))
    a = torch.as_tensor(np.stack(official_masks).reshape(len(official_masks), -1), device=device)
    b = torch.as_tensor(np.stack(our_masks).reshape(len(our_masks), -1), device=device)
    inter = a.float() @ b.float().T  # exact counts below 2^24 pixels
    union = a.sum(1, keepdim=True) + b.sum(1)[None] - inter
    return float((inter / union.clamp(min=1)).amax(1).mean())


# --------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------


@dataclass
class Context:
    device: torch.device
    sizes: Sizes
    models: Models
    images: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)

    def image(self, shape: tuple[int, int]) -> np.ndarray:
        if shape not in self.images:
            self.images[shape] = scene(*shape)
        return self.images[shape]

    def predictor(self, model, precision: str = "float32", device=None):
        if precision == "float16" and (device or self.device).type == "cpu":
            raise Unavailable("float16 autocast needs a GPU (the Predictor refuses it on a CPU)")
        return sw.Predictor(model, device=device or self.device, precision=precision)


def row_check_cpu(ctx: Context, name: str) -> dict[str, Any]:
    pair = ctx.models.get(name)
    image, s = ctx.image(ctx.sizes.check_image), ctx.sizes
    points = clicks(image.shape[:2], s.check_clicks)
    cpu = ctx.predictor(copy.deepcopy(pair.ours).cpu(), device=torch.device("cpu"))
    reference = our_masks(cpu, image, points)
    on_device = our_masks(ctx.predictor(pair.ours), image, points)
    return {
        "precision": "float32",
        **check_fields(agreement(on_device, reference), MASKS_EQUAL_FLOAT32),
    }


def row_check_low(ctx: Context, name: str, precision: str) -> dict[str, Any]:
    pair = ctx.models.get(name)
    low = ctx.predictor(pair.ours, precision)
    image = ctx.image(ctx.sizes.check_image)
    points = clicks(image.shape[:2], ctx.sizes.check_clicks)
    reference = our_masks(ctx.predictor(pair.ours), image, points)
    masks = our_masks(low, image, points)
    return {"precision": precision, **check_fields(agreement(masks, reference), MASKS_EQUAL_LOW)}


def row_click(ctx: Context, name: str) -> dict[str, Any]:
    pair = ctx.models.get(name)
    image = ctx.image(ctx.sizes.click_image)
    ours = ctx.predictor(pair.ours)
    official = pair.family.predictor(pair.official)
    ours.set_image(image)
    official.set_image(image)
    point = clicks(image.shape[:2], 1, seed=1)[0]
    ms, peaks, _ = measure(
        {
            "ours": lambda: ours.predict(points=[point], labels=[1]).masks,
            "official": lambda: official_predict(official, point),
        },
        ctx.sizes.click_repeats,
        ctx.device,
    )
    points = clicks(image.shape[:2], ctx.sizes.check_clicks)
    a = np.stack([ours.predict(points=[p], labels=[1]).masks for p in points])
    b = np.stack([official_predict(official, p) for p in points])
    return {
        "precision": "float32",
        **speed_fields(ms, peaks, pair),
        **check_fields(agreement(a, b), MASKS_EQUAL_FLOAT32),
        "note": f"image {image.shape[0]}x{image.shape[1]}",
    }


def row_widget(ctx: Context, name: str) -> dict[str, Any]:
    try:
        from sam_widget.widget import SamWidget
    except ImportError as e:
        raise Unavailable(f"widget dependencies missing ({e})") from None
    except FileNotFoundError:  # anywidget reads the bundle when the class is made
        raise Unavailable(
            "no frontend bundle sam_widget/static/widget.js: run `npm run build` first"
        ) from None
    pair = ctx.models.get(name)
    image = ctx.image(ctx.sizes.widget_image)
    w = SamWidget(image, model=ctx.predictor(pair.ours, "auto"), refine=False)
    try:
        w.wait()
        official = pair.family.predictor(pair.official)
        official.set_image(image)
        # a new click each call (the widget would answer a repeated one from its last decode);
        # the warm-up takes one more
        prompts = clicks(image.shape[:2], ctx.sizes.widget_prompts + 1, seed=2)
        ours_turn, official_turn, seq = iter(prompts), iter(prompts), iter(range(1, 10**6))
        sizes: list[int] = []

        def ours() -> None:
            sizes.append(prompt_to_mask_bytes(w, *next(ours_turn), seq=next(seq))[1])

        ms, peaks, _ = measure(
            {"ours": ours, "official": lambda: official_predict(official, next(official_turn))},
            ctx.sizes.widget_prompts,
            ctx.device,
        )
    finally:
        w.close()
    kib = statistics.median(sizes) / 1024
    return {
        "precision": "auto",
        **speed_fields(ms, peaks, pair),
        "status": "ok",
        "note": f"image {image.shape[0]}x{image.shape[1]}, {kib:.1f} KiB of mask bytes",
    }


def row_everything(ctx: Context, name: str) -> dict[str, Any]:
    from sam_widget.automatic import MaskGenerator

    pair = ctx.models.get(name)
    image = ctx.image(ctx.sizes.everything_image)
    settings = {"points_per_side": ctx.sizes.points_per_side, **RANDOM_WEIGHT_THRESHOLDS}
    ours = MaskGenerator(ctx.predictor(pair.ours), **settings)
    official = pair.family.mask_generator(pair.official, **settings)

    def run_ours():
        ours.predictor.clear_cache()  # encode every time, as the official generator does
        return ours.generate(image)

    ms, peaks, out = measure(
        {"ours": run_ours, "official": lambda: official.generate(image)},
        ctx.sizes.everything_repeats,
        ctx.device,
    )
    a = [r["segmentation"] for r in out["official"]]
    b = [r["segmentation"] for r in out["ours"]]
    n = ctx.sizes.points_per_side
    return {
        "precision": "float32",
        **speed_fields(ms, peaks, pair),
        "agree": best_iou(a, b, ctx.device),
        "status": "ok",
        "note": f"{n}x{n} grid, image {image.shape[0]}x{image.shape[1]}, "
        f"masks ours {len(b)} official {len(a)}",
    }


def row_encoder(ctx: Context, name: str, precision: str) -> dict[str, Any]:
    from sam_widget.images import to_rgb

    pair = ctx.models.get(name)
    ours = ctx.predictor(pair.ours, precision)
    official = pair.family.predictor(pair.official)
    rgb = to_rgb(ctx.image(ctx.sizes.encoder_image))
    dtype = getattr(torch, precision)

    def run_official():
        with torch.autocast(ctx.device.type, dtype=dtype, enabled=dtype != torch.float32):
            official.set_image(rgb)

    ms, peaks, _ = measure(
        {"ours": lambda: ours._encode(rgb), "official": run_official},
        ctx.sizes.encoder_repeats,
        ctx.device,
    )
    return {"precision": precision, **speed_fields(ms, peaks, pair), "status": "ok"}


@dataclass
class Row:
    id: str
    variant: str
    run: Callable[[], dict[str, Any]]


def plan(ctx: Context, smoke: bool = False) -> list[Row]:
    """The rows in running order: checks, clicks, widget, everything, then the encoders; with
    ``smoke``, only each variant's smoke kinds."""
    rows: list[Row] = []

    def add(kind: str, v: Variant, fn, *args, suffix: str = "") -> None:
        if kind in (v.smoke if smoke else v.rows):
            rows.append(Row(f"{kind}/{v.name}{suffix}", v.name, lambda: fn(ctx, v.name, *args)))

    for v in VARIANTS:
        add("check", v, row_check_cpu, suffix="/float32")
        for p in PRECISIONS[1:]:
            add("check", v, row_check_low, p, suffix=f"/{p}")
    for kind, fn in (("click", row_click), ("widget", row_widget), ("everything", row_everything)):
        for v in VARIANTS:
            add(kind, v, fn)
    for v in VARIANTS:
        for p in PRECISIONS:
            add("encoder", v, row_encoder, p, suffix=f"/{p}")
    return rows


# --------------------------------------------------------------------------------------------
# Running, printing, saving
# --------------------------------------------------------------------------------------------

COLUMNS = (  # (key, header, width, format)
    ("id", "row", 34, "{}"),
    ("status", "status", 8, "{}"),
    ("ours_ms", "ours ms", 9, "{:.1f}"),
    ("official_ms", "off. ms", 9, "{:.1f}"),
    ("ratio", "ours/off", 8, "{:.2f}"),
    ("ours_mib", "ours MiB", 9, "{:.0f}"),
    ("official_mib", "off. MiB", 9, "{:.0f}"),
    ("agree", "agree %", 8, "{:.3%}"),
)


def format_row(r: dict[str, Any]) -> str:
    cells = []
    for key, _, width, fmt in COLUMNS:
        value = r.get(key)
        text = "-" if value is None else fmt.format(value)
        if key == "agree" and value is not None:
            text = text.rstrip("%")
        cells.append(text.ljust(width) if key in ("id", "status") else text.rjust(width))
    line = " ".join(cells)
    note = r.get("note")
    return f"{line}  {note}" if note else line


def header() -> str:
    return " ".join(h.ljust(w) if k in ("id", "status") else h.rjust(w) for k, h, w, _ in COLUMNS)


def run_rows(
    rows: list[Row], ctx: Context, budget: float, save: Callable[[list[dict]], None]
) -> list[dict[str, Any]]:
    """Run the rows in order, printing each result as it comes and ``save``-ing all so far."""
    last_use = {row.variant: i for i, row in enumerate(rows)}
    start = time.perf_counter()
    results = []
    print(header(), flush=True)
    for i, row in enumerate(rows):
        result: dict[str, Any] = {"id": row.id, "variant": row.variant}
        elapsed = time.perf_counter() - start
        if elapsed > budget:
            result["status"] = "skipped"
            result["note"] = f"over the time budget ({budget:.0f} s; rerun it with --only)"
        else:
            t0 = time.perf_counter()
            try:
                with torch.no_grad():
                    result.update(row.run())
            except Unavailable as e:
                result["status"] = "n/a"
                result["note"] = f"not available: {e}"
            except Exception as e:  # keep going: one broken row must not cost the GPU window
                result["status"] = "error"
                result["note"] = f"{type(e).__name__}: {e}"
                traceback.print_exc()
            result["seconds"] = time.perf_counter() - t0
        results.append(result)
        print(format_row(result), flush=True)
        save(results)
        if last_use[row.variant] == i:
            ctx.models.drop(row.variant)
    return results


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in ("torch", "torchvision", "segment-anything", "mobilesam-lite", "sam2", "timm"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "python": platform.python_version(),
        "packages": package_versions(),
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu=props.name,
            gpu_memory_mib=props.total_memory // 2**20,
            capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
            matmul_tf32=torch.backends.cuda.matmul.allow_tf32,
            cudnn_tf32=torch.backends.cudnn.allow_tf32,
        )
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:1, cpu, ...")
    parser.add_argument("--smoke", action="store_true", help="tiny models and images (CI)")
    parser.add_argument(
        "--only", default="", help="comma-separated row id patterns, e.g. 'encoder/vit_h/*,click/*'"
    )
    parser.add_argument(
        "--budget", type=float, default=300.0, help="seconds; rows starting later are skipped"
    )
    parser.add_argument("--json", default="gpu_check.json", help="where to write the results")
    parser.add_argument("--list", action="store_true", help="print the row ids and exit")
    parser.add_argument(
        "--requirements", action="store_true", help="print the packages it needs and exit"
    )
    args = parser.parse_args(argv)
    if args.requirements:
        print("\n".join(REQUIREMENTS))
        return 0
    device = torch.device(args.device)
    ctx = Context(device, SMOKE if args.smoke else Sizes(), Models(device, args.smoke))
    rows = plan(ctx, args.smoke)
    if args.only:
        patterns = [p.strip() for p in args.only.split(",") if p.strip()]
        unmatched = [p for p in patterns if not any(fnmatch.fnmatch(r.id, p) for r in rows)]
        if unmatched:
            parser.error(
                f"--only: {', '.join(unmatched)} matches no row; rows: "
                + ", ".join(r.id for r in rows)
            )
        rows = [r for r in rows if any(fnmatch.fnmatch(r.id, p) for p in patterns)]
    if args.list:
        print("\n".join(r.id for r in rows))
        return 0
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(
            "--device cuda: torch sees no CUDA device here (torch "
            f"{torch.__version__}); use --device cpu --smoke to run the paths on the CPU"
        )

    env = environment(device)
    print(
        f"gpu_check on {env.get('gpu', device)}, torch {torch.__version__}"
        + (f", CUDA {env['cuda']}" if "cuda" in env else "")
        + (", smoke sizes" if args.smoke else "")
        + f"; budget {args.budget:.0f} s",
        flush=True,
    )
    missing = [n for n in ("segment-anything", "mobilesam-lite", "sam2") if not env["packages"][n]]
    if missing:
        print(f"(not installed: {', '.join(missing)}; their rows will say 'not available')")
    env["smoke"] = args.smoke
    env["command"] = " ".join(["python", "benchmarks/gpu_check.py", *(argv or sys.argv[1:])])
    start = time.perf_counter()

    def save(results: list[dict[str, Any]]) -> None:
        env["seconds"] = time.perf_counter() - start
        text = json.dumps({"environment": env, "rows": results}, indent=1) + "\n"
        Path(args.json).write_text(text)

    results = run_rows(rows, ctx, args.budget, save)
    save(results)
    bad = [r["id"] for r in results if r["status"] in ("FAIL", "error")]
    print(f"{len(results)} rows in {env['seconds']:.0f} s, written to {args.json}")
    if bad:
        print(f"failed or broken: {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
