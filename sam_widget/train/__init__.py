"""Fine-tuning SAM and SAM 2.1 on annotated masks: the data engine's model in the loop.

``report = sw.train.finetune(sam, images, masks)`` trains the chosen parts (the mask decoder
by default) the way SAM was trained, with simulated interactive prompts, and measures held-out
mIoU by clicks before and after; ``sw.train.save(sam, path)`` writes only the trained parts,
``sw.load_model(variant, finetuned=path)`` (or ``sw.train.load(sam, path)``) applies them.

Modules: `data` (what is trained on: images + masks, a widget, a COCO folder), `family` (what
the loop needs from a model family), `simulation` (simulated prompts and clicks), `losses`,
`loop` (training and measuring), `checkpoint` (save / load).
"""

from __future__ import annotations

from .checkpoint import load, save, weights_digest
from .loop import Report, finetune


def evaluate(sam, images, masks=None, *, clicks: int = 5, predictor=None) -> dict[int, float]:
    """mIoU of ``sam`` by number of simulated clicks (1..``clicks``, each at the centre of the
    largest error region) over every object of ``images`` (same inputs as `finetune`)."""
    from . import data
    from .family import training_family
    from .loop import _predictor_for, _prepare, measure, sam_device

    family = training_family(sam)
    examples = data.collect(images, masks)
    pred = _predictor_for(sam, images, predictor, None)
    prepared = _prepare(family, pred, examples, False, False, "encoding")
    return measure(family, prepared, clicks, sam_device(sam))


__all__ = ["Report", "evaluate", "finetune", "load", "save", "weights_digest"]
