"""Small building blocks shared by SAM's encoders and decoder: a channels-first LayerNorm and
the two-layer MLP of the transformer blocks. Parameter names follow the official checkpoints."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) map (SAM's necks and upscalers).

    Parameters ``weight`` and ``bias`` have shape (C,). The official code computes mean and
    variance by hand; we move channels last and call the fused ``F.layer_norm`` (same maths).
    """

    def __init__(self, num_channels: int, *, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W), each pixel's C values normalised."""
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C), a view
        x = F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)  # (B, C, H, W)


class MLPBlock(nn.Module):
    """``lin2(act(lin1(x)))``: a transformer block's feed-forward layer, (..., C) -> (..., C)."""

    def __init__(self, *, embedding_dim: int, mlp_dim: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))
