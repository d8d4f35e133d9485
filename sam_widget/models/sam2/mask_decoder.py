"""SAM 2's mask decoder: SAM's decoder (``sam_widget.models.MaskDecoder``) plus what SAM 2
changed.

* An object-score token joins the output tokens (first, before the IoU token); its output goes
  through a 3-layer MLP to a logit that says whether the prompt hits an object at all.
* The predicted IoUs pass through a sigmoid.
* The upscaler adds two high-resolution feature maps from the image encoder (stride 8 after
  the first transposed convolution, stride 4 after the second), each projected by a 1x1
  convolution of the decoder (``conv_s1``, ``conv_s0``) when the image is encoded.
* Single-mask output falls back to the best multimask candidate when the single mask is
  unstable (``dynamic_multimask_via_stability``).

Everything else (tokens, two-way transformer, hypernetworks, IoU head) is SAM's code.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import MLP
from ..mask_decoder import MaskDecoder


def stability_scores(logits: torch.Tensor, delta: float) -> torch.Tensor:
    """IoU of the masks thresholded at +delta and -delta: (..., h, w) -> (...); 1 where both
    are empty."""
    flat = logits.flatten(-2)
    inter = (flat > delta).sum(-1).float()
    union = (flat > -delta).sum(-1).float()
    return torch.where(union > 0, inter / union, 1.0)


def select_single_masks(
    masks: torch.Tensor, iou: torch.Tensor, delta: float, thresh: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The single-mask output with SAM 2's stability fallback.

    masks (B, 1 + M, h, w), iou (B, 1 + M) for every mask token -> (B, 1, h, w), (B, 1): token
    0's mask where its stability is >= ``thresh``, else the multimask candidate with the
    highest predicted IoU."""
    best = iou[:, 1:].argmax(dim=-1) + 1  # (B,)
    rows = torch.arange(len(iou), device=iou.device)
    stable = stability_scores(masks[:, 0], delta) >= thresh  # (B,)
    index = torch.where(stable, torch.zeros_like(best), best)
    return masks[rows, index].unsqueeze(1), iou[rows, index].unsqueeze(1)


class Sam2MaskDecoder(MaskDecoder):
    """SAM's mask decoder with SAM 2's additions (see the module docstring).

    ``forward`` takes ``high_res_features``: [(B, C/8, 4h, 4w), (B, C/4, 2h, 2w)], already
    projected by ``conv_s0`` / ``conv_s1``.
    """

    num_leading_tokens = 1  # the object-score token

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        dynamic_multimask_via_stability: bool = True,
        dynamic_multimask_stability_delta: float = 0.05,
        dynamic_multimask_stability_thresh: float = 0.98,
    ) -> None:
        super().__init__(
            transformer_dim=transformer_dim,
            transformer=transformer,
            num_multimask_outputs=num_multimask_outputs,
            iou_head_depth=iou_head_depth,
            iou_head_hidden_dim=iou_head_hidden_dim,
            iou_prediction_use_sigmoid=True,
        )
        self.obj_score_token = nn.Embedding(1, transformer_dim)
        self.conv_s0 = nn.Conv2d(transformer_dim, transformer_dim // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(transformer_dim, transformer_dim // 4, kernel_size=1)
        self.pred_obj_score_head = MLP(
            input_dim=transformer_dim, hidden_dim=transformer_dim, output_dim=1, num_layers=3
        )
        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.dynamic_multimask_stability_delta = dynamic_multimask_stability_delta
        self.dynamic_multimask_stability_thresh = dynamic_multimask_stability_thresh

    def output_tokens(self) -> torch.Tensor:
        return torch.cat([self.obj_score_token.weight, super().output_tokens()])

    def upscale(
        self, src: torch.Tensor, high_res_features: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        if high_res_features is None:
            raise ValueError("SAM 2's decoder needs the two high-resolution feature maps")
        conv1, norm, act1, conv2, act2 = self.output_upscaling
        feat_s0, feat_s1 = high_res_features
        x = act1(norm(conv1(src) + feat_s1))
        return act2(conv2(x) + feat_s0)

    def object_score_logits(self, hs: torch.Tensor) -> torch.Tensor:
        """(B, Nt, C) transformer output tokens -> (B, 1) logit that an object is present."""
        return self.pred_obj_score_head(hs[:, 0, :])

    def select(
        self, masks: torch.Tensor, iou: torch.Tensor, multimask_output: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All mask tokens' outputs -> the returned ones (see ``select_single_masks``)."""
        if multimask_output:
            return masks[:, 1:], iou[:, 1:]
        if self.dynamic_multimask_via_stability and not self.training:
            return select_single_masks(
                masks,
                iou,
                self.dynamic_multimask_stability_delta,
                self.dynamic_multimask_stability_thresh,
            )
        return masks[:, :1], iou[:, :1]

    def forward(  # type: ignore[override]
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        high_res_features: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As ``MaskDecoder.forward``, with the high-res features and the single-mask
        fallback: masks (B, M, 4h, 4w) logits and IoUs (B, M), M = 3 or 1."""
        masks, iou_pred = self.predict_masks(
            image_embeddings,
            image_pe,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            high_res_features,
        )
        return self.select(masks, iou_pred, multimask_output)
