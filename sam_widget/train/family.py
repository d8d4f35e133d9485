"""What fine-tuning needs from a model, for SAM (vit_b/l/h, mobile_sam) and SAM 2.1 alike.

The training loop, the simulated clicks and the evaluation talk only to a `TrainingFamily`:
which parts the model has, how an image becomes the decoder's input (with or without
gradients), and how prompts in the model's input frame become low-res logits and IoU
predictions through the model's own modules (autograd, unlike the predictor's no_grad fast
path). Everything that differs between SAM and SAM 2.1 comes from the inference family
(``sam_widget.families.family_of``): the image transforms, the encoder's outputs (SAM 2.1 adds
two high-resolution feature maps), how prompts are embedded (SAM 2.1 gives a box as two
labelled corner points), the reference decoder (SAM 2.1's object-score token, sigmoid IoU and
high-res upsampling path) and the logits-to-image resize. So training sees exactly what the
`Predictor` computes.

With the image encoder frozen, an image's encoder outputs come from a `Predictor` (its cache
and store). For SAM 2.1 these include the decoder's projections of the high-res features
(``conv_s0`` / ``conv_s1``, run when an image is encoded), so training the mask decoder leaves
those two convolutions as they are: cached and stored encodings stay valid. They train with
the image encoder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sam_widget.families import family_of
from sam_widget.masks import logits_to_masks
from sam_widget.predictor import Predictor

PARTS = ("image_encoder", "prompt_encoder", "mask_decoder")


@dataclass
class Encoded:
    """One image as the decoder sees it (also the ``state`` the family's decoder reads)."""

    embedding: torch.Tensor | None  # (1, C, h, w) float32; None when the encoder is trained
    input_size: tuple[int, int]  # (h, w) of the resized image inside the square input
    original_size: tuple[int, int]  # (H, W)
    high_res: tuple[torch.Tensor, ...] = ()  # SAM 2.1: (1, C/8, 4h, 4w), (1, C/4, 2h, 2w)


class TrainingFamily:
    """A SAM-like model as fine-tuning uses it: ``image_encoder``, ``prompt_encoder`` and
    ``mask_decoder`` (SAM 2.1's ``sam_prompt_encoder`` / ``sam_mask_decoder`` go by these
    names too), with the model's inference family for everything family-specific."""

    parts = PARTS

    @staticmethod
    def matches(model: Any) -> bool:
        return isinstance(model, nn.Module) and all(
            isinstance(getattr(model, p, None), nn.Module) for p in PARTS
        ) and hasattr(model.prompt_encoder, "mask_input_size")

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.inference = family_of(model)  # sam_widget.families: SamFamily or Sam2Family
        self.name = self.inference.name
        self.image_size = self.inference.image_size(model)  # square input side (1024)
        self.low_res = int(model.prompt_encoder.mask_input_size[0])  # logits side (256)
        self.threshold = float(getattr(model, "mask_threshold", 0.0))

    # ---- geometry -----------------------------------------------------------------------------

    def scale(self, enc: Encoded) -> np.ndarray:
        """(sx, sy): original pixels -> input-frame pixels (as ``Predictor.predict`` scales;
        SAM 2.1's input frame is the whole square, so it scales x and y differently)."""
        (old_h, old_w), (new_h, new_w) = enc.original_size, enc.input_size
        return np.array([new_w / old_w, new_h / old_h])

    def low_res_crop(self, enc: Encoded) -> tuple[int, int]:
        """Rows and columns of the low-res logits that cover the image (not the padding)."""
        f = self.image_size / self.low_res
        return math.ceil(enc.input_size[0] / f), math.ceil(enc.input_size[1] / f)

    def low_res_targets(self, enc: Encoded, masks: list[np.ndarray]) -> torch.Tensor:
        """Ground-truth masks in the low-res logits' frame: (N, low, low) float 0/1.

        Each mask is resized like the image (to ``input_size``), padded like the image (SAM
        2.1: no padding), and averaged over the input pixels of each low-res cell (inside
        when half is). An object smaller than that keeps its fullest cell, so it still has a
        prompt to draw."""
        h, w = enc.input_size
        f = self.image_size // self.low_res
        targets = torch.zeros(len(masks), self.low_res, self.low_res)
        for i, mask in enumerate(masks):  # one at a time: a full-size float each
            x = torch.from_numpy(mask).float()[None, None]  # (1, 1, H, W)
            x = F.interpolate(x, (h, w), mode="bilinear", antialias=True)
            x = F.pad(x, (0, self.image_size - w, 0, self.image_size - h))
            cover = F.avg_pool2d(x, f)[0, 0]  # (low, low): the fraction inside
            targets[i] = (cover > 0.5).float()
            if not targets[i].any():
                targets[i].view(-1)[cover.argmax()] = 1.0
        return targets

    def masks(self, low: torch.Tensor, enc: Encoded) -> np.ndarray:
        """Low-res logits (B, l, l) on the CPU -> bool masks (B, H, W), as the Predictor
        resizes them."""
        frame, crop = self.inference.mask_frame(self.image_size, enc.input_size,
                                                enc.original_size)
        return logits_to_masks(low, crop, enc.original_size, self.threshold, frame)

    # ---- images -------------------------------------------------------------------------------

    def encode_frozen(self, predictor: Predictor, rgb: np.ndarray) -> Encoded:
        """The encoder's outputs through a `Predictor` (its cache, and its store when it has
        one), leaving its current image (a widget's) alone."""
        handle = predictor.encode(rgb)
        return Encoded(
            embedding=handle.embedding.float().detach(),
            input_size=tuple(handle.input_size),
            original_size=tuple(rgb.shape[:2]),
            high_res=tuple(f.float().detach() for f in handle.high_res),
        )

    def geometry(self, rgb: np.ndarray) -> Encoded:
        """Sizes only, for a trained image encoder (which encodes at every step)."""
        _, input_size = self.inference.prepare(self.model, rgb, torch.device("cpu"))
        return Encoded(None, tuple(input_size), tuple(rgb.shape[:2]))

    def encode_with_grad(self, rgb: np.ndarray, enc: Encoded, device: torch.device) -> Encoded:
        """``enc`` with the encoder's outputs computed with autograd, for training the image
        encoder."""
        x, _ = self.inference.prepare(self.model, rgb, device)
        embedding, high_res = self.inference.encode(self.model, x)
        return Encoded(embedding, enc.input_size, enc.original_size, tuple(high_res))

    def on_device(self, enc: Encoded, device: torch.device) -> Encoded:
        return Encoded(enc.embedding.to(device), enc.input_size, enc.original_size,
                       tuple(f.to(device) for f in enc.high_res))

    # ---- prompts ------------------------------------------------------------------------------

    def decode(
        self,
        enc: Encoded,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts in the input frame for B objects of one image -> low-res logits (B, M, l, l)
        and predicted IoU (B, M); coords (B, N, 2), labels (B, N), boxes (B, 4), mask_input
        (B, 1, l, l), each or None; M = 3 with ``multimask`` else 1. ``enc`` holds the
        encoder's outputs (with gradients when the image encoder is trained)."""
        points = None if coords is None else (coords, labels)
        sparse, dense = self.inference.embed_prompts(self.model, points, boxes, mask_input)
        return self.inference.decode_reference(self.model, enc, sparse, dense, multimask)


def training_family(model: Any) -> TrainingFamily:
    """The `TrainingFamily` of a SAM or SAM 2.1 model; a clear error for anything else."""
    if TrainingFamily.matches(model):
        return TrainingFamily(model)
    raise TypeError(
        "finetune needs a SAM or SAM 2.1 model (image_encoder, prompt_encoder, mask_decoder), "
        "e.g. sw.load_model('sam2.1_hiera_tiny') or sw.build_sam('vit_b'); got "
        f"{type(model).__name__}"
    )
