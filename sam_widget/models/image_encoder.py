"""SAM's ViT image encoder (ViTDet style), one configurable module for vit_b, vit_l and vit_h.

Image (B, 3, 1024, 1024) -> 16x16 patches -> ``depth`` transformer blocks on a (B, 64, 64, C)
token map, most attending within 14x14 windows and a few (``global_attn_indexes``) over the
whole map, each with a decomposed relative-position bias -> a conv neck to (B, 256, 64, 64).

Parameter names equal the official checkpoints' (``sam_vit_b_01ec64.pth`` and siblings), and
the arithmetic is the official one, arranged to run faster:

* attention goes through ``F.scaled_dot_product_attention`` with the relative-position bias
  as an additive mask, instead of materialising, adding to and soft-maxing the score matrix
  step by step (the global blocks' scores are 12 x 4096 x 4096 floats);
* the query/key/value projection runs before the map is padded to whole windows: the
  official code pads the normalised tokens with zeros, whose projection is exactly the bias,
  so we pad the projected tokens with the bias and skip the widest matmul on padding
  (64 = 4 x 14 + 8 leaves 18% padding);
* the relative-position mask is built contiguous, so the large global-attention mask is
  written once and never copied, into memory the blocks of one pass share (faulting in
  805 MB of fresh pages for every global block costs more than the attention itself);
* in CPU inference the linear layers run in oneDNN (``sam_widget.models.matmul``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import LayerNorm2d, MLPBlock
from .matmul import linear


class PatchEmbed(nn.Module):
    """Non-overlapping patches to tokens: (B, in_chans, H, W) -> (B, H/p, W/p, embed_dim)."""

    def __init__(self, *, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)  # (B, H/p, W/p, C), channels last


def rel_pos_table(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative-position embeddings for every (query, key) pair along one axis.

    Args:
        q_size: query positions along the axis.
        k_size: key positions along the axis.
        rel_pos: (L, hd) learned table, L = 2 * max(q_size, k_size) - 1 for checkpoints trained
            at this size; other lengths are linearly resampled (as in the official code).

    Returns:
        (q_size, k_size, hd): ``out[i, j]`` embeds the offset of key j from query i.
    """
    max_rel_dist = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != max_rel_dist:
        table = rel_pos.T.unsqueeze(0)  # (1, hd, L)
        table = F.interpolate(table, size=max_rel_dist, mode="linear")  # (1, hd, max_rel_dist)
        rel_pos = table[0].T  # (max_rel_dist, hd)
    q_scale = max(k_size / q_size, 1.0)
    k_scale = max(q_size / k_size, 1.0)
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * q_scale  # (q, 1)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * k_scale  # (1, k)
    offsets = (q_coords - k_coords) + (k_size - 1) * k_scale  # (q, k), in [0, max_rel_dist)
    return rel_pos[offsets.long()]  # (q, k, hd)


def rel_pos_bias(
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    size: tuple[int, int],
    scratch: MaskScratch | None = None,
) -> torch.Tensor:
    """Decomposed relative-position bias of MViTv2, as an additive attention mask.

    Args:
        q: (B, nh, h * w, hd) queries, unscaled.
        rel_pos_h, rel_pos_w: (2h - 1, hd) and (2w - 1, hd) learned tables.
        size: (h, w), the query and key grid (SAM's attention is square: keys = queries).
        scratch: memory to write the mask into (inference only), else a new tensor.

    Returns:
        (B, nh, h * w, h * w): ``bias[b, n, (qy, qx), (ky, kx)] = q . Rh[qy, ky] + q . Rw[qx, kx]``.
    """
    h, w = size
    B, nh, N, hd = q.shape
    r_q = q.reshape(B * nh, h, w, hd)  # (B*nh, h, w, hd)
    Rh = rel_pos_table(h, h, rel_pos_h).to(q.dtype)  # (h, kh, hd)
    Rw = rel_pos_table(w, w, rel_pos_w).to(q.dtype)  # (w, kw, hd)
    # einsum may hand back permuted strides; the sum below inherits them, and the big
    # (N x N) mask would then need a second copy to be flattened, so make the small terms
    # contiguous first
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, Rh).contiguous()  # (B*nh, h, w, kh)
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, Rw).contiguous()  # (B*nh, h, w, kw)
    shape = (B * nh, h, w, h, w)
    if scratch is not None and not (torch.is_grad_enabled() and q.requires_grad):
        out = scratch.take(shape, q)
        torch.add(rel_h.unsqueeze(-1), rel_w.unsqueeze(-2), out=out)  # (B*nh, h, w, kh, kw)
    else:
        out = rel_h.unsqueeze(-1) + rel_w.unsqueeze(-2)  # (B*nh, h, w, kh, kw)
    return out.view(B, nh, N, h * w)


class MaskScratch:
    """One piece of memory reused for the attention masks of one encoder pass.

    A global block's mask is 12 x 4096 x 4096 floats (805 MB for vit_b). Freshly allocated,
    the OS has to fault in and zero every page first, which costs more than filling it; the
    encoder passes one scratch through its blocks, so that happens once per image. Used only
    without autograd, and each mask is consumed by its block before the next one is written.
    """

    def __init__(self) -> None:
        self._memory: torch.Tensor | None = None

    def take(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """An uninitialised tensor of ``shape`` with ``like``'s dtype and device."""
        n = math.prod(shape)
        mem = self._memory
        if mem is None or mem.numel() < n or mem.dtype != like.dtype or mem.device != like.device:
            mem = self._memory = torch.empty(n, dtype=like.dtype, device=like.device)
        return mem[:n].view(shape)


class Attention(nn.Module):
    """Multi-head self-attention over a (B, H, W, C) map, in windows or globally.

    ``window_size > 0``: the map is padded to whole windows and each window attends within
    itself; 0: every token attends to all. Parameters: ``qkv`` (C -> 3C), ``proj`` (C -> C),
    and with ``use_rel_pos`` the tables ``rel_pos_h`` (2 * grid_h - 1, hd) and ``rel_pos_w``,
    where the grid is the window (windowed) or ``input_size`` (global).
    """

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        use_rel_pos: bool = True,
        window_size: int = 0,
        input_size: tuple[int, int] = (64, 64),
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.window_size = window_size
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            grid = (window_size, window_size) if window_size > 0 else input_size
            # zero-initialised like the official code; checkpoints fill them
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * grid[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * grid[1] - 1, head_dim))

    def forward(self, x: torch.Tensor, scratch: MaskScratch | None = None) -> torch.Tensor:
        """(B, H, W, C) normalised tokens -> (B, H, W, C) attention output (before the residual).

        ``scratch``: reusable memory for the relative-position mask (see :class:`MaskScratch`).
        """
        B, H, W, C = x.shape
        nh = self.num_heads
        hd = C // nh
        qkv = linear(x, self.qkv.weight, self.qkv.bias)  # (B, H, W, 3C): (3, nh, hd) last
        ws = self.window_size
        if ws > 0:
            Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws  # padded to whole windows
            if (Hp, Wp) != (H, W):
                # The official code pads the normalised tokens with zeros before ``qkv``, so a
                # padding token projects to the bias alone (zero without a bias).
                qkv = F.pad(qkv, (0, 0, 0, Wp - W, 0, Hp - H))  # (B, Hp, Wp, 3C)
                if self.qkv.bias is not None:
                    fill = self.qkv.bias.to(qkv.dtype)
                    qkv[:, H:] = fill
                    qkv[:, :H, W:] = fill
            nY, nX = Hp // ws, Wp // ws
            qkv = qkv.view(B, nY, ws, nX, ws, 3, nh, hd)
            qkv = qkv.permute(5, 0, 1, 3, 6, 2, 4, 7)  # (3, B, nY, nX, nh, ws, ws, hd)
            q, k, v = qkv.reshape(3, B * nY * nX, nh, ws * ws, hd)  # each (Bw, nh, ws*ws, hd)
            grid = (ws, ws)
        else:
            qkv = qkv.view(B, H * W, 3, nh, hd).permute(2, 0, 3, 1, 4)  # (3, B, nh, HW, hd)
            q, k, v = qkv.unbind(0)  # each (B, nh, HW, hd)
            grid = (H, W)

        mask = None
        if self.use_rel_pos:
            mask = rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, grid, scratch)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (Bw, nh, N, hd)

        if ws > 0:
            out = out.view(B, nY, nX, nh, ws, ws, hd).permute(0, 1, 4, 2, 5, 3, 6)
            out = out.reshape(B, Hp, Wp, C)  # (B, Hp, Wp, C), one copy
            # projecting the padding too is cheaper than copying the cropped map for the matmul
            return linear(out, self.proj.weight, self.proj.bias)[:, :H, :W]  # a view
        out = out.transpose(1, 2).reshape(B, H, W, C)  # (B, H, W, C)
        return linear(out, self.proj.weight, self.proj.bias)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        use_rel_pos: bool = True,
        window_size: int = 0,
        input_size: tuple[int, int] = (64, 64),
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(
            dim=dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            use_rel_pos=use_rel_pos,
            window_size=window_size,
            input_size=input_size,
        )
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLPBlock(embedding_dim=dim, mlp_dim=int(dim * mlp_ratio))
        self.window_size = window_size

    def forward(self, x: torch.Tensor, scratch: MaskScratch | None = None) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        x = x + self.attn(self.norm1(x), scratch)
        return x + self.mlp(self.norm2(x))


class ImageEncoderViT(nn.Module):
    """SAM's image encoder: (B, 3, img_size, img_size) normalised image -> (B, out_chans, g, g)
    embedding, g = img_size // patch_size (64 for the official variants)."""

    def __init__(
        self,
        *,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        use_abs_pos: bool = True,
        use_rel_pos: bool = True,
        window_size: int = 14,
        global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11),
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim)
        self.pos_embed: nn.Parameter | None = None
        if use_abs_pos:  # zero-initialised like the official code; checkpoints fill it
            self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                use_rel_pos=use_rel_pos,
                window_size=0 if i in global_attn_indexes else window_size,
                input_size=(grid, grid),
                norm_eps=norm_eps,
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, img_size, img_size) -> (B, out_chans, g, g)."""
        x = self.patch_embed(x)  # (B, g, g, C)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        scratch = MaskScratch()  # freed when this pass ends
        for block in self.blocks:
            x = block(x, scratch)  # (B, g, g, C)
        return self.neck(x.permute(0, 3, 1, 2))  # (B, out_chans, g, g)
