"""The official SAM 2.1 (``sam2==1.1.0`` from PyPI, a test-only dependency) built from its own
hydra configs, with the same shapes as ``sam_widget.models.build_sam(config)``.

``official_sam2(config)`` composes the official ``configs/sam2.1/sam2.1_hiera_*.yaml`` of the
config's size, overriding the trunk's stages / global-attention blocks when a test config has
fewer blocks, with the same post-processing switches as the official ``build_sam2``
(``dynamic_multimask_via_stability``, delta 0.05, threshold 0.98), and without weights.
``sam2_pair(config, seed)`` gives (official, ours) sharing random weights in which every
tensor that initialises to a constant is redrawn (``tests.reference.randomize_``).

The official package imports torchvision (its transforms), hydra and omegaconf; sam-widget
itself imports none of them. Its CUDA extension is not built (``SAM2_BUILD_CUDA=0``), so the
official predictor skips hole/sprinkle filling on this machine with a warning.
"""

from __future__ import annotations

import torch
from torch import nn

from sam_widget.models import build_sam
from sam_widget.models.sam2 import CONFIGS, Sam2Config
from tests.reference import randomize_

OFFICIAL_CONFIG_FILES = {
    "sam2.1_hiera_tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}


def _size(config: Sam2Config) -> str:
    """The official yaml to start from: the config's own variant when it is registered (a
    reduced copy of it), else the registered variant whose width this config has."""
    if config.variant in CONFIGS:
        return config.variant
    for name, registered in CONFIGS.items():
        t, r = config.trunk, registered.trunk
        if (t.embed_dim, t.num_heads, t.window_spec) == (r.embed_dim, r.num_heads, r.window_spec):
            if name == config.variant or config.variant not in CONFIGS:
                return name
    raise ValueError(f"no official config has the width of {config.variant}")


def official_sam2(config: str | Sam2Config) -> nn.Module:
    """The official ``SAM2Base`` for ``config`` (eval mode, random init, on the CPU)."""
    import warnings

    from sam2.build_sam import build_sam2

    config = CONFIGS[config] if isinstance(config, str) else config
    base = _size(config)
    overrides = []
    trunk, registered = config.trunk, CONFIGS[base].trunk
    if trunk != registered:
        stages = ",".join(map(str, trunk.stages))
        blocks = ",".join(map(str, trunk.global_att_blocks))
        overrides += [
            f"++model.image_encoder.trunk.stages=[{stages}]",
            f"++model.image_encoder.trunk.global_att_blocks=[{blocks}]",
        ]
    if (trunk.embed_dim, trunk.num_heads) != (registered.embed_dim, registered.num_heads):
        channels = ",".join(map(str, trunk.channel_list))  # a narrower trunk, and its neck
        overrides += [
            f"++model.image_encoder.trunk.embed_dim={trunk.embed_dim}",
            f"++model.image_encoder.trunk.num_heads={trunk.num_heads}",
            f"++model.image_encoder.neck.backbone_channel_list=[{channels}]",
        ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_sam2(
            OFFICIAL_CONFIG_FILES[base],
            ckpt_path=None,
            device="cpu",
            hydra_overrides_extra=overrides,
        )
    return model.eval()


def sam2_pair(config: str | Sam2Config, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(official, ours) with identical random weights, both in eval mode. The default init
    draws from the global RNG: seeded here (and the caller's RNG state left as it was), so the
    weights are the same whatever ran before in the process (they were not: a test whose
    premise depends on the weights, the stability fallback's, failed in some test orders)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        official = randomize_(official_sam2(config), seed)
    ours = build_sam(config)
    ours.load_state_dict(official.state_dict(), strict=True)
    return official, ours


def reduced(name: str) -> Sam2Config:
    """``name`` at full width with one block per stage, plus one global-attention block in the
    third stage (where every official size has its global blocks): the trunk's code paths
    (windowed attention with padding, query pooling, global attention) at each width."""
    return CONFIGS[name].with_trunk(stages=(1, 1, 2, 1), global_att_blocks=(3,))
