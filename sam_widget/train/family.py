"""What fine-tuning needs from a model family, and SAM 1's answer.

The training loop, the simulated clicks and the evaluation talk only to a `Family`: which
parts the model has, how an image becomes an embedding (with or without gradients), and how
prompts in the model's input frame become low-res logits and IoU predictions through the
model's own modules (autograd, unlike the predictor's no_grad fast path). A second family
(SAM 2.1) plugs in by adding a `Family` to `FAMILIES`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sam_widget.predictor import Predictor, resize_longest_side


@dataclass
class Encoded:
    """One image as the decoder sees it."""

    embedding: torch.Tensor | None  # (1, C, h, w) float32; None when the encoder is trained
    input_size: tuple[int, int]  # (h, w) of the resized image inside the square input
    original_size: tuple[int, int]  # (H, W)


class Sam1:
    """SAM 1 (vit_b/l/h, mobile_sam): ``image_encoder``, ``prompt_encoder``, ``mask_decoder``."""

    parts = ("image_encoder", "prompt_encoder", "mask_decoder")

    @staticmethod
    def matches(model: nn.Module) -> bool:
        return all(hasattr(model, p) for p in Sam1.parts) and hasattr(
            model.prompt_encoder, "mask_input_size"
        )

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.image_size = int(model.image_encoder.img_size)  # square input side (1024)
        self.low_res = int(model.prompt_encoder.mask_input_size[0])  # logits side (256)
        self.threshold = float(getattr(model, "mask_threshold", 0.0))

    # ---- geometry -----------------------------------------------------------------------------

    def scale(self, enc: Encoded) -> np.ndarray:
        """(sx, sy): original pixels -> input-frame pixels (as ``Predictor.predict`` scales)."""
        (old_h, old_w), (new_h, new_w) = enc.original_size, enc.input_size
        return np.array([new_w / old_w, new_h / old_h])

    def low_res_crop(self, enc: Encoded) -> tuple[int, int]:
        """Rows and columns of the low-res logits that cover the image (not the padding)."""
        f = self.image_size / self.low_res
        return math.ceil(enc.input_size[0] / f), math.ceil(enc.input_size[1] / f)

    def low_res_targets(self, enc: Encoded, masks: list[np.ndarray]) -> torch.Tensor:
        """Ground-truth masks in the low-res logits' frame: (N, low, low) float 0/1.

        Each mask is resized like the image (to ``input_size``), padded like the image, and
        averaged over the 4x4 input pixels of each low-res cell (inside when half is). An
        object smaller than that keeps its fullest cell, so it still has a prompt to draw."""
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

    # ---- images -------------------------------------------------------------------------------

    def encode_frozen(self, predictor: Predictor, rgb: np.ndarray) -> Encoded:
        """The embedding through a `Predictor` (its cache, and its store when it has one),
        leaving its current image (a widget's) alone."""
        handle = predictor.encode(rgb)
        return Encoded(
            embedding=handle.embedding.float().detach(),
            input_size=tuple(handle.input_size),
            original_size=tuple(rgb.shape[:2]),
        )

    def geometry(self, rgb: np.ndarray) -> Encoded:
        """Sizes only, for a trained image encoder (which encodes at every step)."""
        h, w = resize_longest_side(rgb, self.image_size).shape[:2]
        return Encoded(None, (h, w), tuple(rgb.shape[:2]))

    def encode_with_grad(self, rgb: np.ndarray, device: torch.device) -> torch.Tensor:
        """(1, C, h, w) embedding with autograd, for training the image encoder."""
        resized = resize_longest_side(rgb, self.image_size)
        x = torch.from_numpy(np.array(resized)).to(device).permute(2, 0, 1)[None].float()
        return self.model.image_encoder(self.model.preprocess(x))

    # ---- prompts ------------------------------------------------------------------------------

    def decode(
        self,
        embedding: torch.Tensor,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts in the input frame for B objects of one image -> low-res logits (B, M, l, l)
        and predicted IoU (B, M); coords (B, N, 2), labels (B, N), boxes (B, 4), mask_input
        (B, 1, l, l), each or None; M = 3 with ``multimask`` else 1."""
        pe = self.model.prompt_encoder
        points = None if coords is None else (coords, labels)
        sparse, dense = pe(points=points, boxes=boxes, masks=mask_input)
        return self.model.mask_decoder(
            image_embeddings=embedding,
            image_pe=pe.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )


FAMILIES: list[type] = [Sam1]


def family_of(model: Any) -> Sam1:
    """The `Family` that can train ``model``; a clear error for anything else."""
    for family in FAMILIES:
        if family.matches(model):
            return family(model)
    raise TypeError(
        "finetune needs a SAM model (image_encoder, prompt_encoder, mask_decoder), e.g. "
        f"sw.load_model('vit_b') or sw.build_sam('vit_b'); got {type(model).__name__}"
    )
