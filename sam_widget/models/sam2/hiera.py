"""Hiera, SAM 2's image trunk: a hierarchical ViT of four stages with windowed attention.

A 7x7 stride-4 convolution turns the (B, 3, 1024, 1024) image into a (B, 256, 256, C) token
map (channel-last throughout). Stage transitions pool the queries of the stage's first block
(2x2 max pool), which halves the map and doubles the width; most blocks attend inside square
windows (zero-padded at the map's edge), a few over the whole map. The position embedding is
a learned background map resized (bicubic) to the token map plus a learned window-sized
pattern tiled over it. ``forward`` returns each stage's output, channels-first.

Parameter names equal the official checkpoints' (``image_encoder.trunk.*``), and the
arithmetic is the official one, arranged to do less work:

* the query/key/value projection runs on the token map before it is cut into windows: the
  official code pads the normalised tokens with zeros, whose projection is exactly the bias,
  so the projected map is padded with the bias instead and no matmul runs on padding (the
  64x64 map in 14-wide windows is 70x70 padded, 20% more tokens; 32 in 7-wide windows, 35);
* the output projection runs after the windows are put back and their padding cropped;
* query pooling is a max over a channel-last view, not a permute-pool-permute;
* the resized position embedding is computed once per input size, not on every forward;
* on the CPU, without gradients, each block goes by bands of window rows, every step of a band
  done while it is in the cache (`MultiScaleBlock._forward_bands`): the same arithmetic, about
  a tenth less time for hiera_tiny's trunk on an idle 2-core CPU (0.94x -> 0.83x the
  official time), more where memory bandwidth is contended; its products go through
  ``sam_widget.models.matmul`` (oneDNN), which brought it to 0.55x.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import MLP
from ..matmul import linear
from .configs import HieraConfig

BAND_TOKENS = 4096  # tokens per band in `MultiScaleBlock._forward_bands` (CPU inference)


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B * nW, window, window, C), zero-padding H and W up to multiples of
    ``window``; also returns the padded (Hp, Wp)."""
    b, h, w, c = x.shape
    pad_h, pad_w = -h % window, -w % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c).transpose(2, 3)
    return x.reshape(-1, window, window, c).contiguous(), (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window: int, padded: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """Inverse of `window_partition`: (B * nW, window, window, C) -> (B, H, W, C)."""
    hp, wp = padded
    h, w = size
    b = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.view(b, hp // window, wp // window, window, window, -1).transpose(2, 3)
    x = x.reshape(b, hp, wp, -1)
    return x[:, :h, :w] if (hp, wp) != (h, w) else x


def pool_2x2(x: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """Max pool of a channel-last (N, H, W, C) map with kernel = stride (no padding, rows and
    columns that do not fill a last window are dropped, like ``nn.MaxPool2d``): elementwise
    maxima of the strided sub-grids (exact, as a max is)."""
    n, h, w, c = x.shape
    sh, sw = stride
    x = x[:, : h - h % sh, : w - w % sw]
    out = None
    for i in range(sh):
        for j in range(sw):
            part = x[:, i::sh, j::sw]
            out = part if out is None else torch.maximum(out, part)
    return out


class PatchEmbed(nn.Module):
    """(B, 3, H, W) -> (B, H/4, W/4, C): one strided convolution, channel-last output."""

    def __init__(self, *, embed_dim: int, kernel: int = 7, stride: int = 4, padding: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=kernel, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    """Multi-head self-attention on (N, H, W, dim) -> (N, H', W', dim_out); with ``q_stride``
    the queries are max-pooled first, so the output is the pooled size. ``MultiScaleBlock``
    calls ``attend`` on already projected windows instead of ``forward``."""

    def __init__(
        self, *, dim: int, dim_out: int, num_heads: int, q_stride: tuple[int, int] | None
    ) -> None:
        super().__init__()
        self.dim_out = dim_out
        self.num_heads = num_heads
        self.q_stride = q_stride
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.attend(self.qkv(x)))

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """Projected (N, H, W, 3 * dim_out) -> attention output (N, H', W', dim_out), before
        the output projection."""
        n, h, w, _ = qkv.shape
        heads = self.num_heads
        qkv = qkv.view(n, h * w, 3, heads, -1)  # (N, HW, 3, heads, d)
        q, k, v = qkv.unbind(2)  # each (N, HW, heads, d)
        if self.q_stride is not None:
            q = pool_2x2(q.reshape(n, h, w, -1), self.q_stride)  # (N, H', W', heads * d)
            h, w = q.shape[1:3]
            q = q.view(n, h * w, heads, -1)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )  # (N, heads, H'W', d)
        return out.transpose(1, 2).reshape(n, h, w, self.dim_out)


def pad_to_windows(x: torch.Tensor, window: int, fill: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) -> (B, Hp, Wp, C), H and W rounded up to multiples of ``window``, the new
    tokens set to ``fill`` (C,)."""
    b, h, w, c = x.shape
    pad_h, pad_w = -h % window, -w % window
    if not (pad_h or pad_w):
        return x
    out = x.new_empty(b, h + pad_h, w + pad_w, c)
    out[:, :h, :w] = x
    out[:, h:] = fill
    out[:, :h, w:] = fill
    return out


class MultiScaleBlock(nn.Module):
    """One Hiera block: (B, H, W, dim) -> (B, H', W', dim_out).

    norm -> (windowed) attention -> residual -> norm -> MLP -> residual. At a stage
    transition (``q_stride``) the residual is the pooled linear projection of the normalised
    input, and the window shrinks with the pooled map.
    """

    def __init__(
        self,
        *,
        dim: int,
        dim_out: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        q_stride: tuple[int, int] | None = None,
        window_size: int = 0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.dim_out = dim_out
        self.window_size = window_size  # 0: global attention
        self.q_stride = q_stride
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiScaleAttention(
            dim=dim, dim_out=dim_out, num_heads=num_heads, q_stride=q_stride
        )
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(
            input_dim=dim_out,
            hidden_dim=int(dim_out * mlp_ratio),
            output_dim=dim_out,
            num_layers=2,
            activation=nn.GELU,
        )
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and not torch.is_grad_enabled():
            return self._forward_bands(x)
        return self._forward_whole(x)

    def _forward_bands(self, x: torch.Tensor) -> torch.Tensor:
        """`_forward_whole`'s arithmetic, one band of window rows at a time (CPU inference).

        Every step but global attention is local to a row of windows (or to a token), so a
        band of ~``BAND_TOKENS`` tokens goes through norm, attention, projection, residual and
        MLP while it is in the cache. On the whole 256x256 map the MLP's hidden activations
        alone are 100 MB, freshly allocated (and page-faulted) by each block; in bands the
        first stage's blocks took 0.57-0.70x their whole-map time (one thread, a busy machine).
        Global attention needs every token's
        keys: it runs on the whole map, and only what follows it goes by bands.
        """
        b, h, w, _ = x.shape
        attn, window = self.attn, self.window_size
        fc1, fc2 = self.mlp.layers

        def lin(t: torch.Tensor, layer: nn.Linear, gelu: bool = False) -> torch.Tensor:
            return linear(t, layer.weight, layer.bias, gelu)

        def mlp(t: torch.Tensor) -> torch.Tensor:  # the GELU fused into the first product
            return lin(lin(t, fc1, gelu=True), fc2)

        def shortcut_of(tokens: torch.Tensor, normed: torch.Tensor) -> torch.Tensor:
            if self.dim == self.dim_out:
                return tokens
            shortcut = lin(normed, self.proj)
            return shortcut if self.q_stride is None else pool_2x2(shortcut, self.q_stride)

        stride = self.q_stride[0] if self.q_stride is not None else 1
        out_h, out_w = h // stride, w // stride
        out = x.new_empty(b, out_h, out_w, self.dim_out)
        if window == 0:  # global attention: on the whole map, then residual and MLP by bands
            normed = self.norm1(x)
            shortcut = shortcut_of(x, normed)
            att = attn.attend(lin(normed, attn.qkv))
            rows = max(1, BAND_TOKENS // max(out_w, 1))
            for r0 in range(0, out_h, rows):
                band = shortcut[:, r0 : r0 + rows] + lin(att[:, r0 : r0 + rows], attn.proj)
                out[:, r0 : r0 + rows] = band + mlp(self.norm2(band))
            return out
        rows = window * max(1, BAND_TOKENS // (window * w))  # input rows per band
        for r0 in range(0, h, rows):
            band = x[:, r0 : r0 + rows]
            normed = self.norm1(band)
            shortcut = shortcut_of(band, normed)
            # zero-padded normalised tokens project to the bias (see `_forward_whole`)
            qkv = pad_to_windows(lin(normed, attn.qkv), window, attn.qkv.bias)
            qkv, padded = window_partition(qkv, window)
            att = attn.attend(qkv)  # (B * nW, window / stride, window / stride, dim_out)
            size = shortcut.shape[1:3]
            att = window_unpartition(
                att, window // stride, (padded[0] // stride, padded[1] // stride), size
            )
            band = shortcut + lin(att, attn.proj)
            o0 = r0 // stride
            out[:, o0 : o0 + size[0]] = band + mlp(self.norm2(band))
        return out

    def _forward_whole(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x  # (B, H, W, dim)
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = self.proj(x)
            if self.q_stride is not None:
                shortcut = pool_2x2(shortcut, self.q_stride)  # (B, H', W', dim_out)
        attn = self.attn
        window = self.window_size
        padding = window > 0 and (x.shape[1] % window or x.shape[2] % window)
        if padding:
            # zero-padded normalised tokens project to the bias: project the map, then pad it
            # with the bias, and no matmul runs on padding
            qkv = pad_to_windows(attn.qkv(x), window, attn.qkv.bias)
            qkv, _ = window_partition(qkv, window)  # (B * nW, window, window, 3 * dim_out)
        elif window > 0:  # whole windows: cut the narrower input, as the official code does
            qkv = attn.qkv(window_partition(x, window)[0])
        else:
            qkv = attn.qkv(x)
        x = attn.attend(qkv)
        if not padding:
            x = attn.proj(x)
        if window > 0:
            if self.q_stride is not None:
                window //= self.q_stride[0]
            h, w = shortcut.shape[1:3]
            padded = (h + -h % window, w + -w % window)
            x = window_unpartition(x, window, padded, (h, w))
        if padding:
            x = attn.proj(x)  # after cropping the padding
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class Hiera(nn.Module):
    """The trunk: (B, 3, S, S) -> one (B, C_i, S / (4 * 2^i), S / (4 * 2^i)) map per stage."""

    def __init__(self, config: HieraConfig) -> None:
        super().__init__()
        cfg = config
        self.config = cfg
        self.patch_embed = PatchEmbed(
            embed_dim=cfg.embed_dim,
            kernel=cfg.patch_kernel,
            stride=cfg.patch_stride,
            padding=cfg.patch_padding,
        )
        self.pos_embed = nn.Parameter(
            torch.zeros(1, cfg.embed_dim, *cfg.window_pos_embed_bkg_spatial_size)
        )
        w0 = cfg.window_spec[0]
        self.pos_embed_window = nn.Parameter(torch.zeros(1, cfg.embed_dim, w0, w0))
        self.stage_ends = cfg.stage_ends
        dim, heads, stage = cfg.embed_dim, cfg.num_heads, 0
        blocks = []
        for i in range(sum(cfg.stages)):
            # a stage's first block still uses the previous stage's window (on its input,
            # before pooling), so the window lags the width change by one block
            window = 0 if i in cfg.global_att_blocks else cfg.window_spec[stage]
            dim_out = dim
            if i - 1 in self.stage_ends:
                dim_out = int(dim * cfg.dim_mul)
                heads = int(heads * cfg.head_mul)
                stage += 1
            blocks.append(
                MultiScaleBlock(
                    dim=dim,
                    dim_out=dim_out,
                    num_heads=heads,
                    mlp_ratio=cfg.mlp_ratio,
                    q_stride=cfg.q_stride if i in cfg.q_pool_blocks else None,
                    window_size=window,
                )
            )
            dim = dim_out
        self.blocks = nn.ModuleList(blocks)
        self.channel_list = list(cfg.channel_list)
        self._pos_cache: tuple[tuple, torch.Tensor] | None = None

    def get_pos_embed(self, size: tuple[int, int]) -> torch.Tensor:
        """(1, h, w, C): the background embedding resized to (h, w) plus the tiled window one.

        Cached while the parameters are unchanged (their version counters) and no gradient
        is being recorded."""
        key = (
            tuple(size),
            self.pos_embed._version,
            self.pos_embed_window._version,
            self.pos_embed.data_ptr(),
            self.pos_embed_window.data_ptr(),
        )
        cached = self._pos_cache
        if cached is not None and cached[0] == key and not torch.is_grad_enabled():
            return cached[1]
        h, w = size
        pos = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
        wh, ww = self.pos_embed_window.shape[-2:]
        pos = pos + self.pos_embed_window.tile(1, 1, h // wh, w // ww)
        pos = pos.permute(0, 2, 3, 1)  # (1, h, w, C)
        if not torch.is_grad_enabled():
            self._pos_cache = (key, pos)
        return pos

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, S, S) -> [stage 1 (B, C, S/4, S/4), ..., stage 4 (B, 8C, S/32, S/32)]."""
        x = self.patch_embed(x)  # (B, S/4, S/4, C)
        x = (x + self.get_pos_embed(tuple(x.shape[1:3]))).contiguous()
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs
