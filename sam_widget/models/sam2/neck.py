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

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """xs: one (B, C_i, H_i, W_i) map per trunk stage, finest first -> the same number of
        (B, d_model, H_i, W_i) maps, finest first."""
        n = len(xs) - 1
        out: list[torch.Tensor] = [xs[0]] * len(xs)
        previous = None
        for i in range(n, -1, -1):  # coarse to fine
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
