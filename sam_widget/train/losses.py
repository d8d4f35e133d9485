"""SAM's training loss: focal + dice on the mask at 20:1, plus the IoU head's squared error.

For an ambiguous prompt (a single point, three candidates) only the candidate with the lowest
mask loss is penalised, so each candidate is free to become one of the plausible objects; the
IoU head learns every candidate's actual IoU (the widget ranks candidates by it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FOCAL_WEIGHT = 20.0  # focal : dice = 20 : 1 (the SAM paper)
FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0


def focal(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sigmoid focal loss averaged over pixels: (..., H, W) -> (...)."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = FOCAL_ALPHA * targets + (1 - FOCAL_ALPHA) * (1 - targets)
    return (alpha_t * ce * (1 - p_t) ** FOCAL_GAMMA).mean(dim=(-2, -1))


def dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Soft dice loss per mask: (..., H, W) -> (...)."""
    p = torch.sigmoid(logits).flatten(-2)
    t = targets.flatten(-2)
    return 1 - (2 * (p * t).sum(-1) + 1) / (p.sum(-1) + t.sum(-1) + 1)


def actual_iou(logits: torch.Tensor, targets: torch.Tensor, threshold: float = 0.0):
    """IoU of the thresholded masks with the targets, no gradient: (..., H, W) -> (...)."""
    with torch.no_grad():
        pred = logits > threshold
        truth = targets > 0.5
        inter = (pred & truth).flatten(-2).sum(-1).float()
        union = (pred | truth).flatten(-2).sum(-1).float()
        return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def sam_loss(
    logits: torch.Tensor, iou_pred: torch.Tensor, targets: torch.Tensor, threshold: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss of B objects' candidates: logits (B, M, H, W), iou_pred (B, M), targets (B, H, W).

    Returns the mean loss (scalar) and the index (B,) of each object's penalised candidate
    (the lowest mask loss; 0 when M is 1)."""
    t = targets[:, None].expand_as(logits)
    mask_loss = FOCAL_WEIGHT * focal(logits, t) + dice(logits, t)  # (B, M)
    best = mask_loss.detach().argmin(dim=1)  # (B,)
    chosen = mask_loss.gather(1, best[:, None])[:, 0]  # (B,)
    iou_loss = F.mse_loss(iou_pred, actual_iou(logits, t, threshold), reduction="none")
    return (chosen + iou_loss.mean(dim=1)).mean(), best
