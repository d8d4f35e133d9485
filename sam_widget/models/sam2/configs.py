"""Configurations of the SAM 2.1 image models: the Hiera trunk, the FPN neck and the SAM heads.

Field values are the ones of the official ``configs/sam2.1/sam2.1_hiera_{t,s,b+,l}.yaml`` (and
of the defaults those files leave to ``Hiera``'s constructor), so a registered config builds a
model whose state dict has exactly the official checkpoint's image-side keys and shapes. Tests
make smaller models with ``Sam2Config.with_trunk(stages=..., global_att_blocks=...)``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class HieraConfig:
    """The hierarchical ViT trunk (Hiera as used by SAM 2): four stages, each halving the
    resolution (by pooling the queries of its first block) and doubling width and heads."""

    embed_dim: int = 96  # width of stage 1; stage i has embed_dim * dim_mul**i
    num_heads: int = 1  # heads of stage 1; stage i has num_heads * head_mul**i
    stages: tuple[int, ...] = (2, 3, 16, 3)  # blocks per stage
    global_att_blocks: tuple[int, ...] = (12, 16, 20)  # blocks attending over the whole map
    window_spec: tuple[int, ...] = (8, 4, 14, 7)  # attention window side per stage
    # side of the learned background position embedding, resized (bicubic) to the token map
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (14, 14)
    q_pool: int = 3  # number of stage transitions that pool the queries
    q_stride: tuple[int, int] = (2, 2)  # pooling stride at a stage transition
    dim_mul: float = 2.0  # width factor at a stage transition
    head_mul: float = 2.0  # heads factor at a stage transition
    mlp_ratio: float = 4.0  # hidden width of each block's MLP, as a multiple of its width
    patch_kernel: int = 7  # the patch embedding: a 7x7 convolution ...
    patch_stride: int = 4  # ... of stride 4 ...
    patch_padding: int = 3  # ... and padding 3: a 1024 image gives a 256x256 token map

    def __post_init__(self) -> None:
        if len(self.stages) != len(self.window_spec):
            raise ValueError("stages and window_spec need one entry per stage")
        if not 0 <= self.q_pool <= len(self.stages) - 1:
            raise ValueError(f"q_pool must lie in 0..{len(self.stages) - 1}, got {self.q_pool}")
        depth = sum(self.stages)
        bad = [i for i in self.global_att_blocks if not 0 <= i < depth]
        if bad:
            raise ValueError(f"global_att_blocks {bad} lie outside depth {depth}")
        pooled = set(self.q_pool_blocks)
        if pooled & set(self.global_att_blocks):
            raise ValueError(
                "a block that pools its queries (the first of a stage) cannot attend globally: "
                f"global_att_blocks {sorted(pooled & set(self.global_att_blocks))}"
            )

    @property
    def stage_ends(self) -> tuple[int, ...]:
        """Index of the last block of each stage."""
        ends, total = [], 0
        for n in self.stages:
            total += n
            ends.append(total - 1)
        return tuple(ends)

    @property
    def q_pool_blocks(self) -> tuple[int, ...]:
        """Blocks that pool their queries: the first block of stages 2 .. q_pool + 1."""
        return tuple(end + 1 for end in self.stage_ends[:-1])[: self.q_pool]

    @property
    def channel_list(self) -> tuple[int, ...]:
        """Width of each stage's output, last stage first (the neck's order)."""
        widths = [int(self.embed_dim * self.dim_mul**i) for i in range(len(self.stages))]
        return tuple(reversed(widths))


@dataclass(frozen=True)
class Sam2Config:
    """A SAM 2.1 image model: Hiera trunk + FPN neck, SAM prompt encoder and mask decoder."""

    variant: str  # registry name, kept on the model as ``Sam2.variant``
    trunk: HieraConfig
    d_model: int = 256  # width of the neck, the prompt tokens and the decoder
    fpn_top_down_levels: tuple[int, ...] = (2, 3)  # neck levels that add the coarser level
    scalp: int = 1  # coarsest neck levels dropped (the stride-32 map only feeds stride 16)
    image_size: int = 1024  # side of the square model input
    backbone_stride: int = 16  # the image embedding is image_size / backbone_stride wide
    mask_in_chans: int = 16  # hidden channels of the mask-prompt downscaler
    decoder_depth: int = 2  # two-way transformer blocks in the mask decoder
    decoder_num_heads: int = 8  # attention heads in the mask decoder
    decoder_mlp_dim: int = 2048  # MLP width inside the decoder's transformer
    num_multimask_outputs: int = 3  # candidate masks when multimask output is asked for
    iou_head_depth: int = 3  # layers of the IoU MLP
    iou_head_hidden_dim: int = 256  # hidden width of that MLP
    # single-mask output: fall back to the best multimask candidate when the single mask's
    # stability (IoU of its masks thresholded at +delta and -delta) is below thresh; the
    # official build_sam2 turns this on with these values
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98
    pixel_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # RGB, 0..1 scale
    pixel_std: tuple[float, float, float] = (0.229, 0.224, 0.225)  # RGB, 0..1 scale

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding map (64)."""
        return self.image_size // self.backbone_stride

    def with_trunk(self, **changes: object) -> Sam2Config:
        """A copy with some trunk fields replaced, e.g. fewer blocks for a fast test model."""
        return replace(self, trunk=replace(self.trunk, **changes))


CONFIGS: dict[str, Sam2Config] = {
    "sam2.1_hiera_tiny": Sam2Config(
        variant="sam2.1_hiera_tiny",
        trunk=HieraConfig(
            embed_dim=96,
            num_heads=1,
            stages=(1, 2, 7, 2),
            global_att_blocks=(5, 7, 9),
            window_pos_embed_bkg_spatial_size=(7, 7),
        ),
    ),
    "sam2.1_hiera_small": Sam2Config(
        variant="sam2.1_hiera_small",
        trunk=HieraConfig(
            embed_dim=96,
            num_heads=1,
            stages=(1, 2, 11, 2),
            global_att_blocks=(7, 10, 13),
            window_pos_embed_bkg_spatial_size=(7, 7),
        ),
    ),
    "sam2.1_hiera_base_plus": Sam2Config(
        variant="sam2.1_hiera_base_plus",
        trunk=HieraConfig(embed_dim=112, num_heads=2),
    ),
    "sam2.1_hiera_large": Sam2Config(
        variant="sam2.1_hiera_large",
        trunk=HieraConfig(
            embed_dim=144,
            num_heads=2,
            stages=(2, 6, 36, 4),
            global_att_blocks=(23, 33, 43),
            window_spec=(8, 4, 16, 8),
            window_pos_embed_bkg_spatial_size=(7, 7),
        ),
    ),
}
"""The official SAM 2.1 image models by name."""

VARIANTS: tuple[str, ...] = tuple(CONFIGS)
