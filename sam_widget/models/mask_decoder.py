"""SAM's mask decoder: image embedding + prompt tokens -> mask logits and predicted IoUs.

Learned output tokens (one IoU token, 1 + num_multimask_outputs mask tokens) join the prompt
tokens in a :class:`TwoWayTransformer`; the image side is upscaled 4x by transposed convs,
and each mask token's MLP gives the weights of a per-pixel dot product: a (256, 256) mask per
token at 4x the embedding size. Parameter names equal the official checkpoints'.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import MLP, LayerNorm2d

__all__ = ["MLP", "MaskDecoder"]


class MaskDecoder(nn.Module):
    """Predicts masks from an image embedding and prompt embeddings.

    Args:
        transformer_dim: channels C of the transformer (256).
        transformer: the :class:`~.transformer.TwoWayTransformer`.
        num_multimask_outputs: candidate masks for ambiguous prompts (3).
        activation: activation of the upscaler.
        iou_head_depth: layers of the IoU-prediction MLP.
        iou_head_hidden_dim: its hidden width.
        iou_prediction_use_sigmoid: squash the predicted IoUs into (0, 1) (SAM 2).

    SAM 2's decoder (``sam_widget.models.sam2.Sam2MaskDecoder``) extends this one through
    ``num_leading_tokens``, ``output_tokens`` and ``upscale``.
    """

    num_leading_tokens: int = 0  # output tokens before the IoU token (SAM 2: object score)

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        activation: type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        iou_prediction_use_sigmoid: bool = False,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1  # + the single-mask token
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(
                input_dim=transformer_dim,
                hidden_dim=transformer_dim,
                output_dim=transformer_dim // 8,
                num_layers=3,
            )
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            input_dim=transformer_dim,
            hidden_dim=iou_head_hidden_dim,
            output_dim=self.num_mask_tokens,
            num_layers=iou_head_depth,
            sigmoid_output=iou_prediction_use_sigmoid,
        )

    def output_tokens(self) -> torch.Tensor:
        """The learned output tokens that precede the prompt tokens: (L + 1 + M, C)."""
        return torch.cat([self.iou_token.weight, self.mask_tokens.weight])

    def upscale(
        self, src: torch.Tensor, high_res_features: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """(B, C, h, w) transformer output -> (B, C/8, 4h, 4w) per-pixel mask features."""
        if high_res_features is not None:
            raise ValueError("this decoder takes no high-resolution features")
        return self.output_upscaling(src)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Args:
            image_embeddings: (1 or B, C, h, w) from the image encoder.
            image_pe: (1, C, h, w) from ``PromptEncoder.get_dense_pe()``.
            sparse_prompt_embeddings: (B, T, C) point and box tokens.
            dense_prompt_embeddings: (B, C, h, w) mask-prompt embedding.
            multimask_output: the ``num_multimask_outputs`` candidates, else the single mask.

        Returns:
            masks: (B, M, 4h, 4w) logits, M = 3 or 1.
            iou_pred: (B, M) predicted IoU of each mask.
        """
        masks, iou_pred = self.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse_prompt_embeddings,
            dense_prompt_embeddings=dense_prompt_embeddings,
        )
        sl = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, sl], iou_pred[:, sl]

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        high_res_features: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All ``num_mask_tokens`` masks (B, 4, 4h, 4w) and their IoUs (B, 4); see ``forward``."""
        masks, iou_pred, _ = self.run(
            image_embeddings,
            image_pe,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            high_res_features,
        )
        return masks, iou_pred

    def run(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        high_res_features: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``predict_masks`` plus the transformer's output tokens hs (B, Nt, C)."""
        B = sparse_prompt_embeddings.shape[0]
        output_tokens = self.output_tokens().unsqueeze(0).expand(B, -1, -1)  # (B, L+1+M, C)
        tokens = torch.cat([output_tokens, sparse_prompt_embeddings], dim=1)  # (B, Nt, C)

        # one image for all B prompt sets broadcasts (the official code repeats it B times)
        src = image_embeddings + dense_prompt_embeddings  # (B, C, h, w)
        src = src.expand(B, -1, -1, -1)
        pos_src = image_pe.expand(B, -1, -1, -1)  # (B, C, h, w)
        b, c, h, w = src.shape

        hs, src = self.transformer(src, pos_src, tokens)  # (B, Nt, C), (B, hw, C)
        s = self.num_leading_tokens
        iou_token_out = hs[:, s, :]  # (B, C)
        mask_tokens_out = hs[:, s + 1 : s + 1 + self.num_mask_tokens, :]  # (B, M, C)

        src = src.transpose(1, 2).reshape(b, c, h, w)  # (B, C, h, w)
        upscaled = self.upscale(src, high_res_features)  # (B, C/8, 4h, 4w)
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )  # (B, M, C/8)
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)  # (B, M, 4h, 4w)
        iou_pred = self.iou_prediction_head(iou_token_out)  # (B, M)
        return masks, iou_pred, hs
