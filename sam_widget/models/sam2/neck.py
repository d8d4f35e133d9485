"""SAM 2's image encoder: the Hiera trunk and a feature-pyramid neck.

The neck projects each trunk stage to ``d_model`` channels with a 1x1 convolution (lateral
features) and, on the levels listed in ``fpn_top_down_levels``, adds the next coarser level
upsampled 2x (nearest). SAM 2.1 adds top-down features on the two coarsest levels only and
drops the coarsest one (``scalp``), so the encoder gives three maps: stride 4 (256x256),
stride 8 (128x128) and stride 16 (64x64, the image embedding before ``no_mem_embed``). The
sine position encodings of the official neck have no parameters and serve the video memory
only, so they are not computed here.

Parameter names equal the official checkpoints' (``image_encoder.neck.convs.i.conv.*``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .configs import Sam2Config
from .hiera import Hiera


class FpnNeck(nn.Module):
    """Trunk maps (finest first) -> ``d_model``-channel maps of the same sizes."""

    def __init__(
        self, *, d_model: int, backbone_channel_list: list[int], top_down_levels: tuple[int, ...]
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.backbone_channel_list = list(backbone_channel_list)  # coarsest first
        self.convs = nn.ModuleList()
        for dim in backbone_channel_list:
            lateral = nn.Sequential()
            lateral.add_module("conv", nn.Conv2d(dim, d_model, kernel_size=1))
            self.convs.append(lateral)
        self.top_down_levels = tuple(top_down_levels)

    def lateral(self, i: int) -> nn.Conv2d:
        """Level ``i``'s (finest first) lateral 1x1 convolution."""
        return self.convs[len(self.convs) - 1 - i].conv

    def lateral_only(self, i: int) -> bool:
        """Whether level ``i``'s output is its lateral convolution alone, used by no other
        level: no top-down features are added to it or taken from it."""
        return i not in self.top_down_levels and i - 1 not in self.top_down_levels

    def forward(self, xs: list[torch.Tensor], skip: tuple[int, ...] = ()) -> list[torch.Tensor]:
        """xs: one (B, C_i, H_i, W_i) map per trunk stage, finest first -> the same number of
        (B, d_model, H_i, W_i) maps, finest first. Levels in ``skip`` (each `lateral_only`)
        are not computed: their place holds the trunk's map."""
        n = len(xs) - 1
        out: list[torch.Tensor] = [xs[0]] * len(xs)
        previous = None
        for i in range(n, -1, -1):  # coarse to fine
            if i in skip:
                if not self.lateral_only(i):
                    raise ValueError(f"neck level {i} takes part in the top-down path")
                out[i] = xs[i]
                continue
            lateral = self.convs[n - i](xs[i])
            if i in self.top_down_levels and previous is not None:
                top_down = F.interpolate(
                    previous.to(torch.float32), scale_factor=2.0, mode="nearest"
                )
                previous = lateral + top_down
            else:
                previous = lateral
            out[i] = previous
        return out


class Sam2ImageEncoder(nn.Module):
    """Trunk + neck: (B, 3, S, S) -> [stride 4, stride 8, stride 16] maps of d_model channels."""

    def __init__(self, config: Sam2Config) -> None:
        super().__init__()
        self.trunk = Hiera(config.trunk)
        self.neck = FpnNeck(
            d_model=config.d_model,
            backbone_channel_list=list(config.trunk.channel_list),
            top_down_levels=config.fpn_top_down_levels,
        )
        self.scalp = config.scalp
        self.img_size = config.image_size

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.neck(self.trunk(x))
        return features[: len(features) - self.scalp] if self.scalp else features

    def forward_projected(
        self, x: torch.Tensor, projections: list[nn.Conv2d]
    ) -> list[torch.Tensor]:
        """`forward`, with the finest levels' outputs i = 0, 1, ... followed by the 1x1
        convolution ``projections[i]`` (SAM 2's decoder maps them to its high-res features).

        A level that takes no part in the top-down path is only its lateral 1x1 convolution,
        and two 1x1 convolutions in a row are one: (Wp Wl) x + (Wp bl + bp). On the stride-4
        map that is a 96 -> 32 product per pixel (hiera_tiny) instead of 96 -> 256 -> 32,
        about a tenth of the work; the composed weights are exact up to float rounding."""
        stages = self.trunk(x)
        direct = tuple(
            i
            for i, proj in enumerate(projections)
            if self.neck.lateral_only(i) and proj.kernel_size == (1, 1) and proj.groups == 1
        )
        features = self.neck(stages, skip=direct)
        if self.scalp:
            features = features[: len(features) - self.scalp]
        out = list(features)
        for i, proj in enumerate(projections):
            if i not in direct:
                out[i] = proj(features[i])
                continue
            lateral = self.neck.lateral(i)
            wp = proj.weight.flatten(1)  # (out, d_model)
            weight = wp @ lateral.weight.flatten(1)  # (out, C_i)
            bias = wp @ lateral.bias + proj.bias
            # the trunk's maps are channel-last in memory: a product over the last axis
            y = F.linear(stages[i].permute(0, 2, 3, 1), weight, bias)
            out[i] = y.permute(0, 3, 1, 2)
        return out
