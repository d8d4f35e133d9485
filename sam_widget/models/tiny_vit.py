"""MobileSAM's image encoder: TinyViT-5M, distilled from SAM's ViT-H.

(B, 3, 1024, 1024) -> two stride-2 convs (256 x 256) -> stage 0: MBConv blocks -> patch
merging (128 x 128) -> stage 1: windowed-attention blocks -> merging (64 x 64) -> stage 2 ->
merging with stride 1 (64 x 64) -> stage 3 -> the SAM neck -> (B, 256, 64, 64).

Each attention block: ``x + attn(x)`` in 7x7 or 14x14 windows with a learned bias per head
and per |offset| between two tokens, then a depthwise 3x3 conv, then ``x + mlp(x)``.
Parameter names equal MobileSAM's ``mobile_sam.pt``, which also holds BatchNorm statistics
and an ImageNet head (``norm_head``, ``head``) that the encoder never uses: we keep both so
the checkpoint loads with ``strict=True``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import LayerNorm2d


class ConvBN(nn.Sequential):
    """Conv2d without bias (``c``) followed by BatchNorm2d (``bn``), on (B, C, H, W).

    In eval mode the BatchNorm is an affine map per channel, folded into the convolution's
    weight and bias on the fly: one pass over the activations instead of two.
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        *,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bn_weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.add_module(
            "c",
            nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, groups=groups, bias=False),
        )
        bn = nn.BatchNorm2d(out_chans)
        nn.init.constant_(bn.weight, bn_weight_init)
        nn.init.constant_(bn.bias, 0.0)
        self.add_module("bn", bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn = self.c, self.bn
        if self.training or not bn.track_running_stats or bn.running_var is None:
            return bn(conv(x))
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)  # (out,)
        weight = conv.weight * scale[:, None, None, None]  # (out, in / groups, k, k)
        bias = bn.bias - bn.running_mean * scale  # (out,)
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 ConvBNs with a GELU between: (B, 3, H, W) -> (B, embed_dim, H/4, W/4)."""

    def __init__(self, *, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            ConvBN(in_chans, embed_dim // 2, kernel_size=3, stride=2, padding=1),
            nn.GELU(),
            ConvBN(embed_dim // 2, embed_dim, kernel_size=3, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, + input, GELU; (B, C, H, W)."""

    def __init__(self, *, chans: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(chans * expand_ratio)
        self.conv1 = ConvBN(chans, hidden)
        self.act1 = nn.GELU()
        self.conv2 = ConvBN(hidden, hidden, kernel_size=3, padding=1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = ConvBN(hidden, chans, bn_weight_init=0.0)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.act3(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """1x1 ConvBN, GELU, 3x3 depthwise ConvBN (stride 1 or 2), GELU, 1x1 ConvBN:
    (B, dim, H, W) -> (B, out_dim, H / stride, W / stride)."""

    def __init__(self, *, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.act = nn.GELU()
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(
            out_dim, out_dim, kernel_size=3, stride=stride, padding=1, groups=out_dim
        )
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))


class ConvLayer(nn.Module):
    """Stage 0: MBConv ``blocks``, then an optional ``downsample``; (B, C, H, W) maps."""

    def __init__(
        self, *, dim: int, depth: int, expand_ratio: float, downsample: nn.Module | None
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            MBConv(chans=dim, expand_ratio=expand_ratio) for _ in range(depth)
        )
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class Mlp(nn.Module):
    """LayerNorm, Linear, GELU, Linear: (..., C) -> (..., C)."""

    def __init__(self, *, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


def window_attention_offsets(window_size: int) -> torch.Tensor:
    """(N, N) index, N = ws^2, of the learned bias column for each pair of window tokens.

    The pair ((y1, x1), (y2, x2)) uses column ``|y1 - y2| * ws + |x1 - x2|``: the order in
    which TinyViT first meets each offset, so ``attention_biases`` tables load unchanged.
    """
    coords = torch.arange(window_size)
    y = coords.repeat_interleave(window_size)  # (N,) row of each token
    x = coords.repeat(window_size)  # (N,) column of each token
    dy = (y[:, None] - y[None, :]).abs()  # (N, N)
    dx = (x[:, None] - x[None, :]).abs()  # (N, N)
    return dy * window_size + dx


class Attention(nn.Module):
    """Multi-head attention within windows, with a learned bias per head and token offset.

    ``qkv`` packs, per head, ``key_dim`` query, ``key_dim`` key and ``key_dim`` value
    channels (interleaved by head, unlike SAM's ViT); ``attention_biases`` is (nh, ws^2).
    """

    def __init__(self, *, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = dim // num_heads
        self.scale = self.key_dim**-0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window_size * window_size))
        self.register_buffer(
            "attention_bias_idxs", window_attention_offsets(window_size), persistent=False
        )

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised query/key/value projection: (..., C) -> (..., 3C)."""
        return self.qkv(self.norm(x))

    def padding_projection(self) -> torch.Tensor:
        """(3C,): what ``project`` gives for a zero token (LayerNorm(0) is its bias)."""
        return F.linear(self.norm.bias, self.qkv.weight, self.qkv.bias)

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """(Bw, N, 3C) projected window tokens -> (Bw, N, C) attention output."""
        Bw, N, _ = qkv.shape
        nh, kd = self.num_heads, self.key_dim
        q, k, v = qkv.view(Bw, N, nh, 3 * kd).transpose(1, 2).split(kd, dim=-1)  # (Bw, nh, N, kd)
        bias = self.attention_biases[:, self.attention_bias_idxs].to(q.dtype)  # (nh, N, N)
        # a 4-D mask (broadcast over windows) lets torch pick its fused CPU kernel; with a
        # 3-D one it falls back to the unfused path, several times slower
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[None])  # (Bw, nh, N, kd)
        return self.proj(out.transpose(1, 2).reshape(Bw, N, nh * kd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(Bw, N, C) window tokens -> (Bw, N, C)."""
        return self.attend(self.project(x))


class TinyViTBlock(nn.Module):
    """``x + window_attn(x)``, depthwise ConvBN, ``x + mlp(x)``, on (B, H, W, C) token maps."""

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float = 4.0,
        local_conv_size: int = 3,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be a multiple of num_heads {num_heads}")
        self.window_size = window_size
        self.attn = Attention(dim=dim, num_heads=num_heads, window_size=window_size)
        self.mlp = Mlp(dim=dim, hidden_dim=int(dim * mlp_ratio))
        self.local_conv = ConvBN(
            dim, dim, kernel_size=local_conv_size, padding=local_conv_size // 2, groups=dim
        )

    def window_attention(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C): attention within ws x ws windows.

        TinyViT pads the map with zero tokens to whole windows before normalising and
        projecting; we project first and pad with the projection of a zero token (the same
        numbers), which skips the matmuls on padding.
        """
        B, H, W, C = x.shape
        ws = self.window_size
        qkv = self.attn.project(x)  # (B, H, W, 3C)
        Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws
        if (Hp, Wp) != (H, W):
            padded = self.attn.padding_projection().to(qkv.dtype).expand(B, Hp, Wp, 3 * C).clone()
            padded[:, :H, :W] = qkv
            qkv = padded  # (B, Hp, Wp, 3C)
        nY, nX = Hp // ws, Wp // ws
        windows = qkv.view(B, nY, ws, nX, ws, 3 * C).transpose(2, 3)  # (B, nY, nX, ws, ws, 3C)
        out = self.attn.attend(windows.reshape(B * nY * nX, ws * ws, 3 * C))  # (Bw, ws*ws, C)
        out = out.view(B, nY, nX, ws, ws, C).transpose(2, 3).reshape(B, Hp, Wp, C)
        return out[:, :H, :W]  # (B, H, W, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        x = x + self.window_attention(x)
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # depthwise, channels last
        return x + self.mlp(x)


class BasicLayer(nn.Module):
    """Stages 1-3: TinyViT blocks on (B, H, W, C), then an optional ``downsample`` to
    (B, H', W', C')."""

    def __init__(
        self,
        *,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        local_conv_size: int,
        downsample: nn.Module | None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(
                dim=dim,
                num_heads=num_heads,
                window_size=window_size,
                mlp_ratio=mlp_ratio,
                local_conv_size=local_conv_size,
            )
            for _ in range(depth)
        )
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        if self.downsample is not None:
            x = self.downsample(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x


class TinyViT(nn.Module):
    """MobileSAM's encoder: (B, 3, img_size, img_size) -> (B, out_chans, img_size/16, img_size/16).

    Args:
        img_size: side of the square input.
        embed_dims, depths, num_heads, window_sizes: per stage (stage 0 is convolutional).
        merge_strides: stride of the patch merging after each stage but the last.
        mlp_ratio, mbconv_expand_ratio, local_conv_size: block shapes.
        num_classes: size of the unused ImageNet head kept for checkpoint compatibility.
        out_chans: channels of the embedding.
    """

    def __init__(
        self,
        *,
        img_size: int = 1024,
        in_chans: int = 3,
        embed_dims: tuple[int, ...] = (64, 128, 160, 320),
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (2, 4, 5, 10),
        window_sizes: tuple[int, ...] = (7, 7, 14, 7),
        merge_strides: tuple[int, ...] = (2, 2, 1),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        num_classes: int = 1000,
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_embed = PatchEmbed(in_chans=in_chans, embed_dim=embed_dims[0])
        self.layers = nn.ModuleList()
        for i, dim in enumerate(embed_dims):
            downsample = None
            if i < len(embed_dims) - 1:
                downsample = PatchMerging(
                    dim=dim, out_dim=embed_dims[i + 1], stride=merge_strides[i]
                )
            if i == 0:
                layer: nn.Module = ConvLayer(
                    dim=dim,
                    depth=depths[0],
                    expand_ratio=mbconv_expand_ratio,
                    downsample=downsample,
                )
            else:
                layer = BasicLayer(
                    dim=dim,
                    depth=depths[i],
                    num_heads=num_heads[i],
                    window_size=window_sizes[i],
                    mlp_ratio=mlp_ratio,
                    local_conv_size=local_conv_size,
                    downsample=downsample,
                )
            self.layers.append(layer)
        # ImageNet classifier of the TinyViT backbone: in the checkpoint, never used by SAM
        self.norm_head = nn.LayerNorm(embed_dims[-1])
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_weights)
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, out_chans, S/16, S/16)."""
        x = self.patch_embed(x)  # (B, C0, S/4, S/4)
        x = self.layers[0](x)  # (B, C1, S/8, S/8)
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C1): attention stages work channels last
        for layer in self.layers[1:]:
            x = layer(x)
        return self.neck(x.permute(0, 3, 1, 2))  # (B, out_chans, S/16, S/16)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
