"""The two-way transformer of SAM's mask decoder: prompt tokens and image tokens attend to
each other (token self-attention, token->image, MLP, image->token), then a last token->image
attention. Parameter names equal the official checkpoints'; SAM 2's copy differs only in the
names of the token MLP's layers (``mlp.layers.0/1`` instead of ``mlp.lin1/lin2``), chosen with
``mlp_layers=True``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import MLP, MLPBlock


class Attention(nn.Module):
    """Multi-head attention whose projections may shrink the width by ``downsample_rate``.

    ``forward(q (B, Nq, C), k (B, Nk, C), v (B, Nk, C)) -> (B, Nq, C)``; inside, the heads work
    on ``C // downsample_rate`` channels.
    """

    def __init__(self, *, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError(
                f"num_heads {num_heads} must divide the internal width {self.internal_dim}"
            )
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _separate_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)  # (B, nh, N, hd)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q = self._separate_heads(self.q_proj(q))  # (B, nh, Nq, hd)
        k = self._separate_heads(self.k_proj(k))  # (B, nh, Nk, hd)
        v = self._separate_heads(self.v_proj(v))  # (B, nh, Nk, hd)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, nh, Nq, hd), scale 1/sqrt(hd)
        b, _, n, _ = out.shape
        out = out.transpose(1, 2).reshape(b, n, self.internal_dim)  # (B, Nq, C_internal)
        return self.out_proj(out)


class TwoWayAttentionBlock(nn.Module):
    """Self-attention of the tokens, token->image cross-attention, token MLP, image->token
    cross-attention; each followed by a residual and a LayerNorm. The first block of the
    transformer skips the positional encoding in its self-attention (``skip_first_layer_pe``)."""

    def __init__(
        self,
        *,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
        mlp_layers: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim=embedding_dim, num_heads=num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(
            embedding_dim=embedding_dim,
            num_heads=num_heads,
            downsample_rate=attention_downsample_rate,
        )
        self.norm2 = nn.LayerNorm(embedding_dim)
        if mlp_layers:  # SAM 2's parameter names; the same two layers
            self.mlp: nn.Module = MLP(
                input_dim=embedding_dim,
                hidden_dim=mlp_dim,
                output_dim=embedding_dim,
                num_layers=2,
                activation=activation,
            )
        else:
            self.mlp = MLPBlock(embedding_dim=embedding_dim, mlp_dim=mlp_dim, act=activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(
            embedding_dim=embedding_dim,
            num_heads=num_heads,
            downsample_rate=attention_downsample_rate,
        )
        self.skip_first_layer_pe = skip_first_layer_pe

    def token_self_attention(self, queries: torch.Tensor, query_pe: torch.Tensor) -> torch.Tensor:
        """The block's first step, on the prompt tokens alone (B, Nt, C): self-attention (with
        no positional term and no residual in the first block), then ``norm1``."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q=q, k=q, v=queries)
        return self.norm1(queries)

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """queries/query_pe (B, Nt, C) prompt tokens, keys/key_pe (B, HW, C) image tokens."""
        queries = self.token_self_attention(queries, query_pe)

        k = keys + key_pe  # (B, HW, C)
        q = queries + query_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q=q, k=k, v=keys))

        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(q=k, k=q, v=queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """A transformer decoder whose prompt tokens and image tokens update each other.

    Args:
        depth: number of :class:`TwoWayAttentionBlock`.
        embedding_dim: channels C of tokens and image embedding.
        num_heads: attention heads (must divide C // attention_downsample_rate).
        mlp_dim: hidden width of the token MLPs.
        activation: the MLP activation.
        attention_downsample_rate: width reduction inside the cross-attentions.
        mlp_layers: name the token MLPs' layers ``layers.0/1`` (SAM 2) instead of ``lin1/2``.
    """

    def __init__(
        self,
        *,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        mlp_layers: bool = False,
    ) -> None:
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim=embedding_dim,
                num_heads=num_heads,
                mlp_dim=mlp_dim,
                activation=activation,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=(i == 0),
                mlp_layers=mlp_layers,
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(
            embedding_dim=embedding_dim,
            num_heads=num_heads,
            downsample_rate=attention_downsample_rate,
        )
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(
        self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Args:
            image_embedding: (B, C, h, w).
            image_pe: (B, C, h, w) positional encoding of the image.
            point_embedding: (B, Nt, C) prompt and output tokens (also their positional term).

        Returns:
            queries (B, Nt, C) and keys (B, h * w, C): the processed tokens and image.
        """
        keys = image_embedding.flatten(2).transpose(1, 2)  # (B, hw, C)
        key_pe = image_pe.flatten(2).transpose(1, 2)  # (B, hw, C)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(
                queries=queries, keys=keys, query_pe=point_embedding, key_pe=key_pe
            )
        q = queries + point_embedding
        k = keys + key_pe
        queries = queries + self.final_attn_token_to_image(q=q, k=k, v=keys)
        return self.norm_final_attn(queries), keys
