"""SAM's prompt encoder: points, boxes and a low-res mask -> sparse tokens and a dense map.

Points and box corners become random-Fourier positional encodings plus a learned embedding of
their kind (background, foreground, top-left, bottom-right, padding). A mask prompt (B, 1,
256, 256) is downscaled by convolutions to (B, 256, 64, 64); without one a learned
"no mask" vector fills that map. Parameter names equal the official checkpoints'.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .layers import LayerNorm2d


class PositionEmbeddingRandom(nn.Module):
    """Fourier features of 2-D positions with random (fixed, checkpointed) frequencies.

    The buffer ``positional_encoding_gaussian_matrix`` (2, F) maps a position in [0, 1]^2
    to 2F features: sin and cos of ``2 pi (2p - 1) @ G``.
    """

    def __init__(self, *, num_pos_feats: int = 64, scale: float | None = None) -> None:
        super().__init__()
        if scale is None or scale <= 0.0:
            scale = 1.0
        self.register_buffer(
            "positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats))
        )

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) positions in [0, 1] as (x, y) -> (..., 2F)."""
        coords = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix  # (..., F)
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)  # (..., 2F)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding of the centres of an (h, w) grid: (2F, h, w)."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        y = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h  # (h,)
        x = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w  # (w,)
        grid = torch.stack(torch.broadcast_tensors(x[None, :], y[:, None]), dim=-1)  # (h, w, 2)
        return self._pe_encoding(grid).permute(2, 0, 1)  # (2F, h, w)

    def forward_with_coords(
        self, coords_input: torch.Tensor, image_size: tuple[int, int]
    ) -> torch.Tensor:
        """(B, N, 2) pixel coordinates (x, y) in an image of ``image_size`` (h, w) -> (B, N, 2F)."""
        size_xy = coords_input.new_tensor([image_size[1], image_size[0]])
        coords = coords_input / size_xy  # (B, N, 2) in [0, 1]
        return self._pe_encoding(coords.to(torch.float))


class PromptEncoder(nn.Module):
    """Encodes prompts for the mask decoder.

    Args:
        embed_dim: width of every prompt token and of the dense map (256).
        image_embedding_size: (h, w) of the image embedding (64, 64).
        input_image_size: (H, W) of the padded model input (1024, 1024); prompt coordinates
            are pixels of that frame.
        mask_in_chans: hidden channels of the mask downscaler (16).
        activation: the downscaler's activation.
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int,
        activation: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = tuple(input_image_size)
        self.image_embedding_size = tuple(image_embedding_size)
        self.pe_layer = PositionEmbeddingRandom(num_pos_feats=embed_dim // 2)

        # 0: background point, 1: foreground point, 2: box top-left, 3: box bottom-right
        self.num_point_embeddings = 4
        self.point_embeddings = nn.ModuleList(
            nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings)
        )
        self.not_a_point_embed = nn.Embedding(1, embed_dim)  # label -1: padding

        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            activation(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of every image-embedding cell: (1, embed_dim, h, w)."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """(B, N, 2) pixel coordinates and (B, N) labels -> (B, N (+1 if pad), embed_dim).

        Labels: -1 padding, 0 background, 1 foreground, 2 box top-left, 3 box bottom-right."""
        points = points + 0.5  # pixel centres
        if pad:  # without a box, a padding point (label -1) completes the prompt
            points = torch.cat([points, points.new_zeros(points.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, -labels.new_ones(labels.shape[0], 1)], dim=1)
        embedding = self.pe_layer.forward_with_coords(points, self.input_image_size)  # (B, N, C)
        labels = labels[..., None]  # (B, N, 1)
        embedding = torch.where(labels == -1, self.not_a_point_embed.weight, embedding)
        # labels 2 and 3 are box corners given as points (SAM 2's predictor does that)
        for kind in range(self.num_point_embeddings):
            embedding = torch.where(
                labels == kind, embedding + self.point_embeddings[kind].weight, embedding
            )
        return embedding

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """(B, 4) boxes (x0, y0, x1, y1) in pixels -> (B, 2, embed_dim) corner tokens."""
        corners = (boxes + 0.5).reshape(-1, 2, 2)  # (B, 2, 2)
        embedding = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        corner_kind = torch.cat(
            [self.point_embeddings[2].weight, self.point_embeddings[3].weight]
        )  # (2, C)
        return embedding + corner_kind

    def _embed_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """(B, 1, 4h, 4w) mask logits -> (B, embed_dim, h, w)."""
        return self.mask_downscaling(masks)

    def _get_batch_size(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> int:
        if points is not None:
            return points[0].shape[0]
        if boxes is not None:
            return boxes.shape[0]
        if masks is not None:
            return masks.shape[0]
        return 1

    def _get_device(self) -> torch.device:
        return self.point_embeddings[0].weight.device

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed prompts (coordinates in pixels of the padded model input).

        Args:
            points: (coords (B, N, 2) as (x, y), labels (B, N): 1 fg, 0 bg, -1 padding) or None.
            boxes: (B, 4) as (x0, y0, x1, y1), or None.
            masks: (B, 1, 4h, 4w) low-res mask logits, or None.

        Returns:
            sparse: (B, T, embed_dim), T = N (+1 padding point when there is no box) (+2 corners).
            dense: (B, embed_dim, h, w).
        """
        bs = self._get_batch_size(points, boxes, masks)
        tokens = [torch.empty((bs, 0, self.embed_dim), device=self._get_device())]
        if points is not None:
            coords, labels = points
            tokens.append(self._embed_points(coords, labels, pad=boxes is None))
        if boxes is not None:
            tokens.append(self._embed_boxes(boxes))
        sparse = torch.cat(tokens, dim=1)  # (B, T, C)

        if masks is not None:
            dense = self._embed_masks(masks)  # (B, C, h, w)
        else:
            h, w = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, h, w)
        return sparse, dense
