"""Small building blocks shared by SAM's and SAM 2's encoders and decoders: a channels-first
LayerNorm, the two-layer MLP of SAM 1's transformer blocks (``lin1``/``lin2``) and the n-layer
MLP (``layers.i``) of the decoder heads, of SAM 2's Hiera blocks and of SAM 2's two-way
transformer. Parameter names follow the official checkpoints."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .matmul import linear


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
        lin1, lin2 = self.lin1, self.lin2
        if type(self.act) is nn.GELU and self.act.approximate == "none":  # fused where it can
            return linear(linear(x, lin1.weight, lin1.bias, gelu=True), lin2.weight, lin2.bias)
        return linear(self.act(linear(x, lin1.weight, lin1.bias)), lin2.weight, lin2.bias)


class MLP(nn.Module):
    """``num_layers`` Linear layers, an activation between: (..., input_dim) -> (..., output_dim).

    ``activation``: ReLU in the decoder heads and SAM 2's two-way transformer, GELU in SAM 2's
    Hiera blocks; ``sigmoid_output`` squashes the result (SAM 2's IoU head).
    """

    def __init__(
        self,
        *,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        activation: type[nn.Module] = nn.ReLU,
        sigmoid_output: bool = False,
    ) -> None:
        super().__init__()
        self.num_layers = num_layers
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(
            nn.Linear(n, k) for n, k in zip(dims[:-1], dims[1:], strict=True)
        )
        self.act = activation()
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = self.num_layers - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = self.act(x)
        return torch.sigmoid(x) if self.sigmoid_output else x
