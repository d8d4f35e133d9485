"""The fine-tuning loop: SAM's interactive training simulation, and the before/after measure.

Each step takes one training image and up to ``objects_per_step`` of its objects, and runs
``rounds`` rounds of the simulated annotator (`simulation`): a first prompt (a point, with
three candidates of which only the best is penalised, or a noisy box), then a corrective point
per round with the previous round's logits fed back as mask input (detached, as an annotator's
view of the last mask). Each round's loss (`losses.sam_loss`) is backpropagated as it comes,
so memory holds one round; the optimizer steps once per training step. Only the chosen parts
require gradients for the duration, so nothing reaches a frozen part; with the image encoder
frozen every image is encoded once, up front, through a `Predictor` (and its embedding store).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sam_widget.images import to_rgb
from sam_widget.predictor import Predictor

from . import data as data_mod
from .family import Encoded, training_family
from .losses import sam_loss
from .simulation import corrective_points, first_points, iou, next_click, noisy_boxes

DECAY_AT = 0.8  # fraction of the steps after which the learning rate is ...
DECAY = 0.1  # ... multiplied by this


@dataclass
class Report:
    """What a fine-tuning run did. ``before`` / ``after``: held-out mIoU by number of
    simulated clicks, {1: ..., 2: ..., ...} (empty without a held-out split)."""

    before: dict[int, float]
    after: dict[int, float]
    losses: list[float]  # training loss of every step (mean over its rounds)
    parts: tuple[str, ...]
    steps: int
    train_images: int
    train_objects: int
    validation_images: int
    validation_objects: int
    seconds: float

    def __repr__(self) -> str:
        def curve(d: dict[int, float]) -> str:
            return ", ".join(f"{k}: {v:.3f}" for k, v in d.items()) or "-"

        return (
            f"Report(parts={self.parts}, steps={self.steps}, "
            f"train={self.train_objects} objects on {self.train_images} images, "
            f"held out={self.validation_objects} objects on {self.validation_images} images, "
            f"loss {self._first_last()}, mIoU by clicks before {{{curve(self.before)}}} "
            f"after {{{curve(self.after)}}}, {self.seconds:.1f} s)"
        )

    def _first_last(self) -> str:
        if not self.losses:
            return "-"
        k = max(1, len(self.losses) // 10)
        return f"{np.mean(self.losses[:k]):.4f} -> {np.mean(self.losses[-k:]):.4f}"


@contextmanager
def trainable(sam: Any, parts: Sequence[str]) -> Iterator[list[torch.nn.Parameter]]:
    """Within: only the parameters of ``parts`` require gradients (and those parts are in
    train mode), so autograd never reaches a frozen part; yields them. The previous
    ``requires_grad`` flags and eval mode come back afterwards, also on an error."""
    flags = {p: p.requires_grad for p in sam.parameters()}
    trained = [p for name in parts for p in getattr(sam, name).parameters()]
    try:
        for p in sam.parameters():
            p.requires_grad_(False)
        for p in trained:
            p.requires_grad_(True)
        for name in parts:
            getattr(sam, name).train()
        yield trained
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
        sam.eval()


def _parts(family: Any, parts: str | Sequence[str]) -> tuple[str, ...]:
    parts = (parts,) if isinstance(parts, str) else tuple(parts)
    unknown = [p for p in parts if p not in family.parts]
    if unknown or not parts:
        raise ValueError(
            f"parts must name some of {family.parts}, got {parts!r}"
            + (f" ({', '.join(unknown)} unknown)" if unknown else "")
        )
    return tuple(p for p in family.parts if p in parts)


def _predictor_for(sam: Any, images: Any, predictor: Any, store: Any) -> Predictor:
    """The Predictor that encodes frozen-encoder embeddings: one given, the widget's own (its
    cache already holds the images it showed), one over ``store``, or a new one."""
    if predictor is None:
        engine = getattr(images, "predictor", None)
        if isinstance(engine, Predictor) and engine.model is sam:
            predictor = engine
    if predictor is not None:
        if predictor.model is not sam:
            raise ValueError("predictor= must be a Predictor of the model being fine-tuned")
        return predictor
    if store is None:
        return Predictor(sam, device=sam_device(sam))
    try:
        return Predictor(sam, device=sam_device(sam), store=store)
    except TypeError as e:
        if "store" not in str(e):
            raise
        raise TypeError(
            "store= needs a sam-widget whose Predictor takes an embedding store "
            "(sw.Predictor(sam, store=...)); without it, leave store out"
        ) from None


def sam_device(sam: Any) -> torch.device:
    return next(sam.parameters()).device


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=True)


def _prepare(family, predictor, examples, encoder_trained, progress, desc):
    """(Encoded, rgb or None, low-res targets) per example."""
    prepared = []
    with _progress(len(examples), desc, progress and not encoder_trained) as bar:
        for ex in examples:
            rgb = to_rgb(ex.image)
            for j, m in enumerate(ex.masks):
                if m.shape != rgb.shape[:2]:
                    raise ValueError(
                        f"{ex.name}: mask {j} is {m.shape[0]}x{m.shape[1]}, the image is "
                        f"{rgb.shape[0]}x{rgb.shape[1]}"
                    )
            if encoder_trained:
                enc = family.geometry(rgb)
            else:
                enc = family.encode_frozen(predictor, rgb)
            targets = family.low_res_targets(enc, ex.masks)
            prepared.append((enc, rgb if encoder_trained else None, targets, ex.masks))
            bar.update()
    return prepared


@torch.no_grad()
def measure(family, prepared, clicks: int, device, chunk: int = 16) -> dict[int, float]:
    """Held-out mIoU after 1..``clicks`` protocol clicks (`simulation.next_click`): the first
    with three candidates of which the highest predicted IoU is kept, then one mask each,
    the previous logits fed back. Masks are compared at full image resolution."""
    per_object: list[list[float]] = []
    for enc, rgb, _, masks in prepared:
        features = enc
        if enc.embedding is None:
            features = family.encode_with_grad(rgb, enc, device)
        scale = family.scale(enc)
        for start in range(0, len(masks), chunk):
            truth = masks[start : start + chunk]
            b = len(truth)
            preds = [np.zeros_like(t) for t in truth]
            scores = [[] for _ in truth]
            points: list[list[tuple[float, float]]] = [[] for _ in truth]
            labels: list[list[int]] = [[] for _ in truth]
            done = [False] * b
            mask_input = None
            for k in range(clicks):
                for i in range(b):
                    click = None if done[i] else next_click(truth[i], preds[i])
                    if click is None:  # nothing left to correct: repeat the last click
                        done[i] = True
                        click = (*points[i][-1], labels[i][-1]) if points[i] else None
                    if click is None:
                        raise AssertionError("an empty mask cannot be measured")
                    points[i].append((click[0] * scale[0], click[1] * scale[1]))
                    labels[i].append(click[2])
                coords = torch.tensor(points, dtype=torch.float32, device=device)
                lab = torch.tensor(labels, dtype=torch.int64, device=device)
                logits, iou_pred = family.decode(
                    features, coords, lab, None, mask_input, multimask=k == 0
                )
                sel = iou_pred.argmax(dim=1)
                low = logits[torch.arange(b, device=device), sel]  # (b, l, l)
                mask_input = low[:, None]
                full = family.masks(low.float().cpu(), enc)
                for i in range(b):
                    if not (done[i] and k > 0):
                        preds[i] = full[i]
                    scores[i].append(iou(truth[i], preds[i]))
            per_object.extend(scores)
    if not per_object:
        return {}
    table = np.array(per_object)  # (objects, clicks)
    return {k + 1: float(table[:, k].mean()) for k in range(clicks)}


def finetune(
    sam: Any,
    images: Any,
    masks: Any = None,
    *,
    parts: str | Sequence[str] = ("mask_decoder",),
    steps: int | None = None,
    validation: float = 0.2,
    rounds: int = 4,
    objects_per_step: int = 8,
    lr: float = 1e-4,
    weight_decay: float = 0.01,
    warmup: int | None = None,
    box_probability: float = 0.5,
    clicks: int = 5,
    seed: int = 0,
    progress: bool = True,
    predictor: Predictor | None = None,
    store: Any = None,
) -> Report:
    """Fine-tune ``parts`` of ``sam`` in place on annotated masks; returns a `Report`.

    Args:
        sam: a SAM or SAM 2.1 model (``sw.load_model``, ``sw.build_sam``), trained in place.
        images: a sequence of images (arrays, PIL images, paths, an ``sw.Dataset``) with
            ``masks``; or, without masks, an annotation widget (every committed object) or a
            folder saved as COCO (``w.save(folder)``).
        masks: per image, a list of bool (H, W) masks (or an (N, H, W) array).
        parts: what is trained, any of "mask_decoder", "prompt_encoder", "image_encoder";
            the rest stays frozen (bit-identical, no gradient reaches it). SAM 2.1's are its
            ``sam_mask_decoder`` and ``sam_prompt_encoder``; with its image encoder frozen, the
            decoder's two high-res projections (``conv_s0``, ``conv_s1``, applied when an
            image is encoded) stay as they are (see ``sam_widget.train.family``).
        steps: optimizer steps (default: 10 per training image, at least 20).
        validation: fraction of the images held out to measure before and after (0: none;
            with a single image, a fraction of its objects).
        rounds: simulated prompts per object and step (1 first prompt + corrective points).
        objects_per_step: objects of the step's image trained together.
        lr, weight_decay: AdamW's; ``warmup`` steps of linear warm-up (default a tenth), and
            a tenth of ``lr`` for the last fifth of the steps (SAM's step decay). The decay
            steadies where a run ends: on the test's narrow-decoder run
            (benchmarks/bench_train.py --seeds 5 --learn) the one-click held-out gain was
            +0.05 to +0.30 (mean +0.21) without it, +0.13 to +0.27 (mean +0.21) with it.
        box_probability: how often the first prompt is a noisy box instead of a point.
        clicks: the measurement's clicks per object (``report.before[1..clicks]``).
        seed: the random draws (split, prompts, order); the same seed repeats a run on a CPU.
        progress: progress bars (tqdm.auto), training with its running loss.
        predictor: the `Predictor` whose cache (and store) gives embeddings; default: the
            widget's when ``images`` is one over this model, else a new one.
        store: an embedding store for a new Predictor (``sw.Predictor(sam, store=...)``).
    """
    start = time.perf_counter()
    family = training_family(sam)
    parts = _parts(family, parts)
    if rounds < 1 or objects_per_step < 1 or clicks < 1:
        raise ValueError("rounds, objects_per_step and clicks must be at least 1")
    rng = np.random.default_rng(seed)
    examples = data_mod.collect(images, masks)
    train, held = data_mod.split(examples, validation, rng)
    if steps is None:
        steps = max(20, 10 * len(train))
    device = sam_device(sam)
    encoder_trained = "image_encoder" in parts
    if encoder_trained:
        pred = None
    else:
        pred = _predictor_for(sam, images, predictor, store)
    sam.eval()
    train_set = _prepare(family, pred, train, encoder_trained, progress, "encoding (train)")
    held_set = _prepare(family, pred, held, encoder_trained, progress, "encoding (held out)")
    before = measure(family, held_set, clicks, device) if held_set else {}

    with trainable(sam, parts) as trained:
        optimizer = torch.optim.AdamW(trained, lr=lr, weight_decay=weight_decay)
        if warmup is None:
            warmup = steps // 10
        # linear warm-up, then a tenth of the rate for the last fifth (SAM's step decay)
        decay_at = int(DECAY_AT * steps)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda k: min(1.0, (k + 1) / (warmup + 1)) * (DECAY if k >= decay_at else 1.0),
        )
        losses = _train(
            family, train_set, optimizer, schedule, trained, steps=steps, rounds=rounds,
            objects_per_step=objects_per_step, box_probability=box_probability, rng=rng,
            device=device, progress=progress,
        )
    sam.finetuned_parts = tuple(
        p for p in family.parts if p in parts or p in getattr(sam, "finetuned_parts", ())
    )
    if pred is not None:
        pred.refresh()  # decoder-derived caches of the old weights
    if encoder_trained:
        engine = getattr(images, "predictor", None)
        if isinstance(engine, Predictor) and engine.model is sam:
            engine.clear_cache()  # its embeddings came from the old encoder
    after = measure(family, held_set, clicks, device) if held_set else {}
    return Report(
        before=before,
        after=after,
        losses=losses,
        parts=parts,
        steps=steps,
        train_images=len(train),
        train_objects=sum(len(ex.masks) for ex in train),
        validation_images=len(held),
        validation_objects=sum(len(ex.masks) for ex in held),
        seconds=time.perf_counter() - start,
    )


def _train(family, train_set, optimizer, schedule, trained, *, steps, rounds, objects_per_step,
           box_probability, rng, device, progress) -> list[float]:
    cell = family.image_size / family.low_res  # input pixels per low-res cell
    losses: list[float] = []
    order: list[int] = []
    running = None
    with _progress(steps, "fine-tuning", progress) as bar:
        for _ in range(steps):
            if not order:
                order = rng.permutation(len(train_set)).tolist()
            enc, rgb, targets, _ = train_set[order.pop()]
            pick = rng.permutation(len(targets))[:objects_per_step]
            t = targets[torch.from_numpy(pick)].to(device)  # (B, l, l)
            loss_value = _simulate(
                family, enc, rgb, t, rounds=rounds, box=rng.random() < box_probability,
                cell=cell, rng=rng, device=device,
            )
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            schedule.step()
            losses.append(loss_value)
            running = loss_value if running is None else 0.9 * running + 0.1 * loss_value
            bar.set_postfix(loss=f"{running:.4f}", refresh=False)
            bar.update()
    return losses


def _simulate(family, enc: Encoded, rgb, t, *, rounds, box, cell, rng, device) -> float:
    """One step's interactive rounds on B objects of one image; backpropagates each round's
    loss (accumulating gradients) and returns the mean loss over the rounds."""
    crop_h, crop_w = family.low_res_crop(enc)
    if enc.embedding is None:  # the image encoder is trained: encode with autograd, once a step
        features = family.encode_with_grad(rgb, enc, device)
    else:
        features = family.on_device(enc, device)
    coords = labels = boxes = None
    if box:
        boxes = noisy_boxes(t, cell, rng).to(device)
    else:
        coords, labels = (x.to(device) for x in first_points(t, cell, rng))
    multimask = not box  # a single point is ambiguous: three candidates, best one penalised
    mask_input = None
    total = 0.0
    for r in range(rounds):
        logits, iou_pred = family.decode(features, coords, labels, boxes, mask_input, multimask)
        loss, best = sam_loss(
            logits[..., :crop_h, :crop_w], iou_pred, t[:, :crop_h, :crop_w], family.threshold
        )
        (loss / rounds).backward(retain_graph=enc.embedding is None and r < rounds - 1)
        total += float(loss.detach())
        if r == rounds - 1:
            break
        prev = logits.detach()[torch.arange(len(t), device=device), best]  # (B, l, l)
        mask_input = prev[:, None]
        new_coords, new_labels = corrective_points(
            prev, t, (crop_h, crop_w), cell, rng, family.threshold
        )
        new_coords, new_labels = new_coords.to(device), new_labels.to(device)
        coords = new_coords if coords is None else torch.cat([coords, new_coords], dim=1)
        labels = new_labels if labels is None else torch.cat([labels, new_labels], dim=1)
        multimask = False
    return total / rounds
