"""The official implementations our models are tested against, built from our configs.

* SAM: Meta's ``segment_anything`` 1.0 from PyPI (``segment-anything``, a test-only
  dependency). Its package ``__init__`` imports the predictor, whose resize transform imports
  torchvision; the test environment installs torch 2.14.1 with the matching real torchvision
  0.29.1 (see the Makefile's ``TORCH_TEST``), so the official package imports normally and we
  use its modeling classes unmodified. No stand-ins, no patching.
* MobileSAM: the ``mobilesam-lite`` PyPI package, which vendors MobileSAM's code unchanged as
  ``mobilesam_lite.mobile_sam`` (TinyViT in ``modeling/tiny_vit_sam.py``, plus its own copies of
  SAM's prompt encoder and mask decoder). It imports timm (a dependency of that package) at
  import time; timm warns that MobileSAM re-registers TinyViT names, which we silence.

``official_sam(config)`` builds the official model with the same shapes as
``sam_widget.models.build_sam(config)``, so reduced-depth test configs work for both, and
``randomize_(model, seed)`` draws weights in which every tensor matters (see its docstring).
"""

from __future__ import annotations

import warnings
from functools import partial

import torch
from torch import nn

from sam_widget.models import SamConfig, TinyViTConfig, ViTConfig, get_config


def _mobile_sam_modeling():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Overwriting tiny_vit", category=UserWarning)
        warnings.filterwarnings("ignore", message="Importing from timm", category=FutureWarning)
        from mobilesam_lite.mobile_sam import modeling
    return modeling


def official_image_encoder(config: SamConfig) -> nn.Module:
    """The official image encoder for ``config`` (segment_anything's ViT or MobileSAM's TinyViT)."""
    enc = config.encoder
    if isinstance(enc, TinyViTConfig):
        if enc.merge_strides != (2, 2, 1) or enc.embed_dims[-1] not in (320, 448, 576):
            raise ValueError("MobileSAM's TinyViT hard-codes the stride-1 last merge (width 320)")
        return _mobile_sam_modeling().TinyViT(
            img_size=enc.img_size,
            in_chans=3,
            num_classes=enc.num_classes,
            embed_dims=list(enc.embed_dims),
            depths=list(enc.depths),
            num_heads=list(enc.num_heads),
            window_sizes=list(enc.window_sizes),
            mlp_ratio=enc.mlp_ratio,
            drop_rate=0.0,
            drop_path_rate=0.0,
            use_checkpoint=False,
            mbconv_expand_ratio=enc.mbconv_expand_ratio,
            local_conv_size=enc.local_conv_size,
            layer_lr_decay=0.8,
        )
    assert isinstance(enc, ViTConfig)
    from segment_anything.modeling import ImageEncoderViT

    return ImageEncoderViT(
        depth=enc.depth,
        embed_dim=enc.embed_dim,
        img_size=enc.img_size,
        mlp_ratio=enc.mlp_ratio,
        norm_layer=partial(nn.LayerNorm, eps=enc.norm_eps),
        num_heads=enc.num_heads,
        patch_size=enc.patch_size,
        qkv_bias=enc.qkv_bias,
        use_abs_pos=enc.use_abs_pos,
        use_rel_pos=enc.use_rel_pos,
        global_attn_indexes=list(enc.global_attn_indexes),
        window_size=enc.window_size,
        out_chans=enc.out_chans,
    )


def official_sam(variant_or_config: str | SamConfig) -> nn.Module:
    """The official ``Sam`` (MobileSAM's own copy for TinyViT configs), eval mode, random init."""
    config = get_config(variant_or_config)
    if isinstance(config.encoder, TinyViTConfig):
        modeling = _mobile_sam_modeling()
    else:
        from segment_anything import modeling
    e = config.embedding_size
    sam = modeling.Sam(
        image_encoder=official_image_encoder(config),
        prompt_encoder=modeling.PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(e, e),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=modeling.MaskDecoder(
            num_multimask_outputs=config.num_multimask_outputs,
            transformer=modeling.TwoWayTransformer(
                depth=config.decoder_depth,
                embedding_dim=config.prompt_embed_dim,
                mlp_dim=config.decoder_mlp_dim,
                num_heads=config.decoder_num_heads,
            ),
            transformer_dim=config.prompt_embed_dim,
            iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
        ),
        pixel_mean=list(config.pixel_mean),
        pixel_std=list(config.pixel_std),
    )
    return sam.eval()


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Redraw the tensors that initialise to constants, so every one of them is exercised.

    The default init leaves relative-position tables, the absolute position embedding,
    TinyViT's attention biases, biases, BatchNorm statistics and norm weights at 0 or 1; with
    those, a wrong index or a missing term would go unnoticed. Zeros become N(0, s) (s = 0.5
    for position tables and attention biases, so they move the attention noticeably; 0.05
    elsewhere), ones become 1 + N(0, 0.1), BatchNorm variances U(0.5, 1.5). Random weights
    from the default init stay. Returns ``model``.
    """
    gen = torch.Generator().manual_seed(seed)
    for name, t in model.state_dict().items():
        if not t.is_floating_point():
            continue
        if name.endswith("running_var"):
            t.copy_(0.5 + torch.rand(t.shape, generator=gen))
        elif bool((t == 0).all()):
            big = any(k in name for k in ("rel_pos", "pos_embed", "attention_biases"))
            t.copy_(torch.randn(t.shape, generator=gen) * (0.5 if big else 0.05))
        elif bool((t == 1).all()):
            t.copy_(1 + 0.1 * torch.randn(t.shape, generator=gen))
    # MobileSAM's TinyViT caches its attention biases in a non-persistent buffer ``ab`` when
    # ``eval()`` is called: re-enter the current mode so the cache sees the new values.
    model.train(model.training)
    return model
