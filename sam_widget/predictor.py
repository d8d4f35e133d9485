"""Prompt -> masks. `Prediction` is the one result type every engine returns.

Engines (SAM's `Predictor`, the weights-free `ClassicPredictor`) share the duck-typed interface
described by `Engine`: the widget and the exporters only ever talk to that interface.

`Predictor` runs SAM: the image is resized (longest side 1024, PIL bilinear like the official
code), encoded once, and its embedding cached by content; each prompt then costs one pass of
the prompt encoder and mask decoder, computed by a decoder path arranged for repeated prompts
on one image (`_decode`), equal to the official `SamPredictor` within float rounding.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from sam_widget.images import to_rgb
from sam_widget.models.transformer import TwoWayAttentionBlock

Shape = tuple[int, int]


@dataclass(eq=False)
class Prediction:
    """The answer to one prompt state.

    ``scores`` is (C,) (or (B, C) for B boxes at once), ``logits`` (C, 256, 256) low-resolution
    mask logits that can be fed back as ``mask_input``. Masks are made from the logits on demand:
    ``masks`` at the original image size (computed once, then cached), ``masks_at(h, w)`` at any
    other size, e.g. the widget's display resolution, without paying for the full-size masks.
    """

    scores: np.ndarray
    logits: np.ndarray
    image_shape: Shape
    # (height, width) -> bool masks of shape (..., C, height, width)
    to_masks: Callable[[Shape], np.ndarray] = field(repr=False)

    @cached_property
    def masks(self) -> np.ndarray:
        """Bool (C, H, W) masks at the original image size."""
        return self.masks_at(*self.image_shape)

    def masks_at(self, height: int, width: int) -> np.ndarray:
        """Bool (C, height, width) masks resized to any output size."""
        if (height, width) == tuple(self.image_shape) and "masks" in self.__dict__:
            return self.__dict__["masks"]
        return self.to_masks((int(height), int(width)))

    @property
    def best(self) -> int:
        """Index of the candidate with the highest predicted IoU."""
        return int(np.argmax(self.scores))


@runtime_checkable
class Engine(Protocol):
    """What the widget needs from a segmentation engine (SAM Predictor, classic, ...)."""

    name: str  # "vit_b", "mobile_sam", "classic", ...

    @property
    def device(self) -> str: ...

    @property
    def image_shape(self) -> Shape | None: ...

    def encode(self, image: Any) -> Any:
        """Encode ``image`` (or take it from a cache) without making it the current image;
        returns a handle for ``predict(..., image=handle)``."""
        ...

    def set_image(self, image: Any) -> Any:
        """``encode`` and make it the current image; an interrupted call leaves none set."""
        ...

    def predict(
        self,
        points: Sequence[Sequence[float]] | np.ndarray | None = None,
        labels: Sequence[int] | np.ndarray | None = None,
        box: Sequence[float] | np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask: bool = True,
        image: Any = None,
    ) -> Prediction:
        """Masks for the prompts on ``image`` (a handle from ``encode``/``set_image``), by
        default the current image."""
        ...


# --------------------------------------------------------------------------------------------
# Devices and precision
# --------------------------------------------------------------------------------------------

PRECISIONS = ("auto", "float32", "bfloat16", "float16")


def select_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on: the one asked for, else CUDA, then Apple MPS, then the CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def select_precision(precision: str, device: torch.device) -> torch.dtype:
    """The dtype the image encoder computes in (the prompt decoder always runs in float32).

    ``"auto"`` is float16 on CUDA and float32 elsewhere; ``"bfloat16"`` and ``"float16"`` turn on
    autocast for the encoder; ``"float32"`` turns it off.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if precision == "float16" and device.type == "cpu":
        raise ValueError(
            'precision="float16" is not supported on the CPU: use "bfloat16" (or "float32")'
        )
    return getattr(torch, precision)


def _variant_name(model: nn.Module) -> str:
    """Our models carry ``variant``; recognise the official ones by their encoder's shape."""
    variant = getattr(model, "variant", None)
    if isinstance(variant, str) and variant:
        return variant
    encoder = getattr(model, "image_encoder", None)
    blocks = getattr(encoder, "blocks", None)
    if blocks is not None and hasattr(encoder, "patch_embed"):
        width = encoder.patch_embed.proj.out_channels
        shape = {(768, 12): "vit_b", (1024, 24): "vit_l", (1280, 32): "vit_h"}
        return shape.get((width, len(blocks)), "sam")
    if encoder is not None and type(encoder).__name__ == "TinyViT":
        return "mobile_sam"
    return "sam"


# --------------------------------------------------------------------------------------------
# Images in, masks out: the geometry of SAM's 1024x1024 input frame
# --------------------------------------------------------------------------------------------


def preprocess_shape(height: int, width: int, long_side: int) -> Shape:
    """(h, w) after scaling the longest side to ``long_side``, rounded as SAM rounds it."""
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_longest_side(image: np.ndarray, long_side: int) -> np.ndarray:
    """Resize an RGB uint8 (H, W, 3) image so its longest side is ``long_side``.

    PIL's bilinear filter, exactly the path the official ``ResizeLongestSide.apply_image`` takes
    through torchvision for numpy images (so embeddings match the official predictor's).
    """
    new_h, new_w = preprocess_shape(image.shape[0], image.shape[1], long_side)
    if (new_h, new_w) == image.shape[:2]:
        return image
    return np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))


def upscale_logits(
    logits: torch.Tensor, input_size: Shape, output_size: Shape, image_size: int = 1024
) -> torch.Tensor:
    """Low-res mask logits (..., 256, 256) -> logits (..., H, W) at ``output_size``.

    The same two bilinear steps as the official ``Sam.postprocess_masks`` (to the padded
    ``image_size`` square, crop the ``input_size`` image region, then to the output size), but
    the first step only upsamples the low-res rows and columns the crop needs.
    """
    lead = logits.shape[:-2]
    low_h, low_w = logits.shape[-2:]
    x = logits.reshape(-1, 1, low_h, low_w)
    fh, fw = image_size // low_h, image_size // low_w
    # rows/columns of the low-res grid that reach the cropped region, plus one for the
    # bilinear neighbour; upsampling them by the same factor samples the same positions
    rows = min(low_h, -(-input_size[0] // fh) + 1)
    cols = min(low_w, -(-input_size[1] // fw) + 1)
    x = x[..., :rows, :cols]
    x = F.interpolate(x, (rows * fh, cols * fw), mode="bilinear", align_corners=False)
    x = x[..., : input_size[0], : input_size[1]]
    if tuple(output_size) != tuple(input_size):
        x = F.interpolate(x, tuple(output_size), mode="bilinear", align_corners=False)
    return x.reshape(*lead, *x.shape[-2:])


# Masks straight from the low-res logits (CPU). The official postprocessing is two bilinear
# resizes (to the padded square, crop, to the output size) and a threshold; each step is
# linear along each axis, so the whole chain is one (out, low) matrix per axis, and
# masks = (A @ logits @ B^T) > threshold. Each output pixel depends on at most 3x3 low-res
# logits, so both products run in bands over the few low-res rows/columns each block of
# output needs, and each block is thresholded while it is still in cache: the full-size float
# logits (26 MB for 3 masks at 1200x1800) are never written out. Logits agree with
# `upscale_logits` within float rounding (composed weights), so masks can differ only where
# |logit - threshold| is about 1e-5 of the logits' scale.

_MASK_ROWS = 64  # output rows per block of the vertical pass
_MASK_COLS = 256  # output columns per block of the horizontal pass
_MASK_GROUP = 3  # masks resized together: bounds the intermediate (group, rows, W) floats


def _bilinear_taps(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``F.interpolate(mode="bilinear", align_corners=False)`` along one axis: output i is
    (1 - frac) * x[lo] + frac * x[hi], from source position (i + 0.5) * in / out - 0.5
    clamped at 0."""
    src = np.maximum((np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5, 0.0)
    lo = np.minimum(src.astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    return lo, hi, src - lo


def _resize_matrix(low: int, image_size: int, crop: int, out: int) -> np.ndarray:
    """(out, low) float64 weights, along one axis, of the official postprocessing: low-res
    -> the padded ``image_size`` square, keep the first ``crop``, -> ``out``."""
    lo, hi, frac = (a[:crop] for a in _bilinear_taps(image_size, low))
    taps = [(lo, 1.0 - frac), (hi, frac)]  # per cropped index: low-res index, weight
    if out != crop:  # each output mixes two cropped indices, so four low-res taps
        lo2, hi2, frac2 = _bilinear_taps(out, crop)
        taps = [(i[lo2], w[lo2] * (1.0 - frac2)) for i, w in taps] + [
            (i[hi2], w[hi2] * frac2) for i, w in taps
        ]
    m = np.zeros((out, low))
    rows = np.arange(out)
    for index, weight in taps:
        np.add.at(m, (rows, index), weight)  # add: taps can coincide (clamped at the edge)
    return m


def _bands(matrix: np.ndarray, step: int) -> list[tuple[int, int, int, int, torch.Tensor]]:
    """Split an (out, in) resize matrix into blocks of ``step`` output indices:
    (out0, out1, in0, in1, float32 weights (out1 - out0, in1 - in0)) over the inputs used."""
    bands = []
    for start in range(0, matrix.shape[0], step):
        block = matrix[start : start + step]
        used = np.flatnonzero(block.any(axis=0))
        lo, hi = int(used[0]), int(used[-1]) + 1
        weights = torch.from_numpy(np.ascontiguousarray(block[:, lo:hi], dtype=np.float32))
        bands.append((start, start + len(block), lo, hi, weights))
    return bands


@lru_cache(maxsize=16)
def _mask_plan(low: Shape, input_size: Shape, output_size: Shape, image_size: int):
    """Per axis: the composed (output, low-res) resize, split into bands."""
    axes = []
    for low_n, crop, out in zip(low, input_size, output_size, strict=True):
        m = _resize_matrix(low_n, image_size, crop, out)
        axes.append(m[:, : int(np.flatnonzero(m.any(axis=0))[-1]) + 1])  # low-res used
    rows, cols = axes
    vertical = _bands(rows, _MASK_ROWS)
    horizontal = [
        (a, b, lo, hi, w.t().contiguous()) for a, b, lo, hi, w in _bands(cols, _MASK_COLS)
    ]
    return rows.shape[1], cols.shape[1], vertical, horizontal


@torch.no_grad()
def logits_to_masks(
    logits: torch.Tensor,
    input_size: Shape,
    output_size: Shape,
    threshold: float = 0.0,
    image_size: int = 1024,
) -> np.ndarray:
    """Bool masks (..., H, W) from CPU low-res logits (..., 256, 256): the official
    postprocessing and threshold, without the full-size float logits (see above)."""
    lead = logits.shape[:-2]
    low = tuple(logits.shape[-2:])
    height, width = (int(n) for n in output_size)
    if height < 1 or width < 1:
        raise ValueError(f"masks need a positive size, got {height}x{width}")
    n_rows, n_cols, vertical, horizontal = _mask_plan(
        low, tuple(input_size), (height, width), image_size
    )
    x = logits.reshape(-1, *low).float()[:, :n_rows, :n_cols]
    masks = np.empty((x.shape[0], height, width), dtype=bool)
    for g in range(0, x.shape[0], _MASK_GROUP):
        part = x[g : g + _MASK_GROUP]
        across = part.new_empty(part.shape[0], n_rows, width)  # horizontal pass done
        for c0, c1, lo, hi, weights in horizontal:
            across[:, :, c0:c1] = part[:, :, lo:hi] @ weights
        for r0, r1, lo, hi, weights in vertical:
            block = weights @ across[:, lo:hi]  # (group, r1 - r0, W)
            np.greater(block.numpy(), threshold, out=masks[g : g + _MASK_GROUP, r0:r1])
    return masks.reshape(*lead, height, width)


# --------------------------------------------------------------------------------------------
# The prompt decoder, arranged for many prompts on one image
# --------------------------------------------------------------------------------------------
# The official MaskDecoder copies the image embedding once per prompt, recomputes the same
# projections of it for every prompt, and moves tensors between (B, C, H, W) and (B, HW, C)
# several times. The functions below compute the same function from the same submodules and
# weights (the model's own ``mask_decoder`` and ``prompt_encoder``), but:
# - the first layer's projections of the image side (identical for every prompt when no
#   mask_input is given) are computed once per image and kept in an `_ImageContext`;
# - attention goes through ``scaled_dot_product_attention``;
# - the upscaling convolutions (kernel 2, stride 2: no overlap) are matrix products in the
#   channel-last layout, with the pixel shuffle left to one permute of the final masks;
# - only the mask tokens that will be returned go through the hypernetwork.
# The parity tests compare the result with the official ``SamPredictor``.


def _linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    return F.linear(x, layer.weight, layer.bias)


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, D) -> (B, heads, N, D / heads)."""
    b, n, d = x.shape
    return x.view(b, n, num_heads, d // num_heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, d) -> (B, N, heads * d)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


@dataclass
class _ImageContext:
    """Decoder inputs that depend on the image only (float32, channel-last, HW = 64 * 64)."""

    embedding: torch.Tensor  # (1, C, h, w) image embedding, float32
    src: torch.Tensor  # (1, HW, C) embedding + the "no mask" dense embedding
    pe: torch.Tensor  # (1, HW, C) dense positional encoding
    # first decoder layer, image side: token->image keys/values, image->token queries
    keys0: torch.Tensor  # (1, heads, HW, d)
    values0: torch.Tensor  # (1, heads, HW, d)
    queries0: torch.Tensor  # (1, heads, d, HW): transposed, the image axis last


def _fast_path_ok(model: nn.Module) -> bool:
    """Whether the model's decoder has the official structure the fast path reads."""
    try:
        dec = model.mask_decoder
        up = dec.output_upscaling
        conv1, conv2 = up[0], up[3]
        layer0 = dec.transformer.layers[0]
        ok = (
            isinstance(conv1, nn.ConvTranspose2d)
            and isinstance(conv2, nn.ConvTranspose2d)
            and len(up) == 5
            and all(c.kernel_size == (2, 2) and c.stride == (2, 2) for c in (conv1, conv2))
            and all(c.padding == (0, 0) and c.groups == 1 for c in (conv1, conv2))
            and hasattr(up[1], "eps")
            and layer0.skip_first_layer_pe
            and hasattr(dec.transformer, "final_attn_token_to_image")
            and hasattr(model.prompt_encoder, "no_mask_embed")
        )
    except (AttributeError, IndexError, TypeError):
        return False
    return bool(ok)


def _image_context(model: nn.Module, embedding: torch.Tensor) -> _ImageContext:
    """Precompute the image-only decoder inputs for one (1, C, h, w) embedding."""
    dec, pe_module = model.mask_decoder, model.prompt_encoder
    embedding = embedding.float()
    c = embedding.shape[1]
    src = embedding + pe_module.no_mask_embed.weight.reshape(1, c, 1, 1)
    src = src.flatten(2).transpose(1, 2).contiguous()  # (1, HW, C)
    pe = pe_module.get_dense_pe().float().flatten(2).transpose(1, 2).contiguous()  # (1, HW, C)
    layer0 = dec.transformer.layers[0]
    t2i, i2t = layer0.cross_attn_token_to_image, layer0.cross_attn_image_to_token
    src_pe = src + pe
    queries0 = _heads(_linear(src_pe, i2t.q_proj), i2t.num_heads)  # (1, heads, HW, d)
    return _ImageContext(
        embedding=embedding,
        src=src,
        pe=pe,
        keys0=_heads(_linear(src_pe, t2i.k_proj), t2i.num_heads).contiguous(),
        values0=_heads(_linear(src, t2i.v_proj), t2i.num_heads).contiguous(),
        queries0=queries0.transpose(-1, -2).contiguous(),
    )


def _tokens_to_image(
    attn: nn.Module, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
) -> torch.Tensor:
    """Prompt tokens (B, T, C) attend to projected image keys/values (1, heads, HW, d)."""
    b, t, _ = queries.shape
    q = _heads(_linear(queries, attn.q_proj), attn.num_heads)  # (B, heads, T, d)
    # shared image side: fold the batch into the query length, one attention call
    q = q.transpose(0, 1).reshape(1, attn.num_heads, b * t, -1)
    out = F.scaled_dot_product_attention(q, keys, values)  # (1, heads, B*T, d)
    out = out.reshape(attn.num_heads, b, t, -1).transpose(0, 1)
    return _linear(_merge_heads(out), attn.out_proj)  # (B, T, C)


def _tokens_to_image_unprojected(
    attn: nn.Module, queries: torch.Tensor, keys_pe: torch.Tensor, keys: torch.Tensor
) -> torch.Tensor:
    """Prompt tokens (B, T, C) attend to per-prompt image tokens (B, HW, C).

    The few queries are moved into the image's C-dimensional space instead of projecting all
    HW image tokens: q . (Wk x + bk) = (q Wk) . x + q . bk, and since attention weights sum to
    one, sum_n a_n (Wv x_n + bv) = Wv (sum_n a_n x_n) + bv. The softmax scale is applied to the
    few queries, not to the (T, HW) scores.
    """
    b, t, c = queries.shape
    h = attn.num_heads
    q = _heads(_linear(queries, attn.q_proj), h)  # (B, h, T, d)
    d = q.shape[-1]
    q = q * d**-0.5
    q_img = (q @ attn.k_proj.weight.view(h, d, c)).reshape(b, h * t, c)  # (B, h*T, C)
    bias = (q * attn.k_proj.bias.view(h, 1, d)).sum(-1).reshape(b, h * t, 1)
    scores = torch.baddbmm(bias, q_img, keys_pe.expand(b, -1, -1).transpose(1, 2))
    weights = torch.softmax(scores, dim=-1)  # (B, h*T, HW)
    mixed = (weights @ keys).view(b, h, t, c)  # (B, h, T, C)
    out = mixed @ attn.v_proj.weight.view(h, d, c).transpose(1, 2)  # (B, h, T, d)
    out = out + attn.v_proj.bias.view(h, 1, d)
    return _linear(_merge_heads(out), attn.out_proj)  # (B, T, C)


def _image_to_tokens(
    attn: nn.Module,
    tokens_k: torch.Tensor,
    tokens_v: torch.Tensor,
    residual: torch.Tensor,
    queries: torch.Tensor | None = None,
    keys_pe: torch.Tensor | None = None,
) -> torch.Tensor:
    """Image tokens attend to the prompt tokens (B, T, C); returns ``residual`` + the
    attention output, (B, HW, C).

    The image side is either projected queries (1, heads, d, HW) (``queries``) or image tokens
    (B, HW, C) (``keys_pe``), whose projection is folded into the few prompt keys:
    (Wq x + bq) . k = x . (Wq^T k) + bq . k. The output projection is folded into the values,
    so no (HW, d) tensor is made: out = sum_heads A_h (V_h Wo_h^T) + bo; and as each head's
    weights sum to one, bo is added as bo / heads to every value row. Scores are laid out
    (heads, T, HW) so the softmax over the few tokens runs along the long image axis.
    """
    b, t, c = tokens_k.shape
    h = attn.num_heads
    k = _heads(_linear(tokens_k, attn.k_proj), h)  # (B, h, T, d)
    v = _heads(_linear(tokens_v, attn.v_proj), h)
    d = k.shape[-1]
    k = k * d**-0.5
    if queries is not None:
        scores = k @ queries  # (B, h, T, HW)
    else:
        wq = attn.q_proj.weight.view(h, d, c)
        m = (k @ wq).reshape(b, h * t, c)  # (B, h*T, C)
        bias = (k * attn.q_proj.bias.view(h, 1, d)).sum(-1).reshape(b, h * t, 1)
        scores = torch.baddbmm(bias, m, keys_pe.transpose(1, 2)).view(b, h, t, -1)
    weights = torch.softmax(scores, dim=2).view(b, h * t, -1)  # (B, h*T, HW)
    values = v @ attn.out_proj.weight.view(c, h, d).permute(1, 2, 0)  # (B, h, T, C)
    values = values.reshape(b, h * t, c) + attn.out_proj.bias / h
    return torch.baddbmm(residual.expand(b, -1, -1), weights.transpose(1, 2), values)


def _two_way_block(
    layer: nn.Module,
    queries: torch.Tensor,
    keys: torch.Tensor,
    query_pe: torch.Tensor,
    key_pe: torch.Tensor,
    context: _ImageContext | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One TwoWayAttentionBlock; ``context`` supplies the precomputed image side of layer 0."""
    # called unbound: any block with the official structure (e.g. segment_anything's) works
    queries = TwoWayAttentionBlock.token_self_attention(layer, queries, query_pe)

    t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
    q = queries + query_pe
    if context is not None:  # layer 0 without mask input: the image side is precomputed
        attn_out = _tokens_to_image(t2i, q, context.keys0, context.values0)
    else:
        keys_pe = keys + key_pe  # the same sum serves both cross attentions
        attn_out = _tokens_to_image_unprojected(t2i, q, keys_pe, keys)
    queries = layer.norm2(queries + attn_out)
    queries = layer.norm3(queries + layer.mlp(queries))
    q = queries + query_pe
    if context is not None:
        keys = _image_to_tokens(i2t, q, queries, keys, queries=context.queries0)
    else:
        keys = _image_to_tokens(i2t, q, queries, keys, keys_pe=keys_pe)
    keys = layer.norm4(keys)
    return queries, keys


def _decode(
    model: nn.Module,
    context: _ImageContext,
    sparse: torch.Tensor,
    dense: torch.Tensor | None,
    multimask: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask decoder for B prompts on one image.

    sparse: (B, T, C) prompt embeddings; dense: (B, C, h, w) mask-input embeddings, or None for
    no mask input. Returns low-res logits (B, M, 4h, 4w) and predicted IoU (B, M), M = 3 with
    ``multimask`` else 1, like ``MaskDecoder.forward``.
    """
    dec = model.mask_decoder
    transformer = dec.transformer
    b = sparse.shape[0]
    _, c, h, w = context.embedding.shape
    output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    tokens = torch.cat([output_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)

    if dense is None:  # every prompt sees the same image side: layer 0 starts from the cache
        keys, first = context.src, context
    else:
        keys = (context.embedding + dense).flatten(2).transpose(1, 2)  # (B, HW, C)
        first = None
    queries = tokens
    for i, layer in enumerate(transformer.layers):
        queries, keys = _two_way_block(
            layer, queries, keys, tokens, context.pe, first if i == 0 else None
        )
    final = transformer.final_attn_token_to_image
    attn_out = _tokens_to_image_unprojected(final, queries + tokens, keys + context.pe, keys)
    queries = transformer.norm_final_attn(queries + attn_out)
    keys = keys.expand(b, -1, -1)  # (B, HW, C)

    selected = range(1, dec.num_mask_tokens) if multimask else range(0, 1)
    hyper = torch.stack(
        [dec.output_hypernetworks_mlps[i](queries[:, 1 + i, :]) for i in selected], dim=1
    )  # (B, M, C/8)
    iou = dec.iou_prediction_head(queries[:, 0, :])[:, selected.start : selected.stop]

    return _upscaled_masks(dec, keys, hyper, h, w), iou


_UPSCALE_ROWS = 16  # embedding rows upscaled at a time: keeps the (16x) features in cache


def _upscaled_masks(
    dec: nn.Module, keys: torch.Tensor, hyper: torch.Tensor, h: int, w: int
) -> torch.Tensor:
    """Output upscaling and the hypernetwork's per-pixel products: (B, M, 4h, 4w) logits.

    ConvT(2, stride 2) -> LayerNorm2d -> act -> ConvT(2, stride 2) -> act, channel-last: the
    convolutions do not overlap, so each is a matrix product, and embedding pixel (i, j)
    becomes the 4x4 block at rows 4i + 2di + ei, columns 4j + 2dj + ej. A few embedding rows
    at a time, so the 32-channel features at 16x the pixels (8 MB per prompt) never leave the
    cache; this is the decoder's most memory-bound part. The pixel shuffle costs two cheap
    copies: the first convolution's output is reordered to rows (i, di, j, dj) while it has
    4x the pixels, and the second runs once per ei, so each product with the hypernetwork
    comes out as whole output rows 4i + 2di + ei in (j, dj, ej) order.
    """
    b, m = hyper.shape[:2]
    c = keys.shape[-1]
    conv1, norm, act1, conv2, act2 = dec.output_upscaling
    c1, c2 = conv1.out_channels, conv2.out_channels
    w1 = conv1.weight.permute(0, 2, 3, 1).reshape(c, 4 * c1)  # (C, (di, dj, c1))
    w2 = conv2.weight.permute(0, 2, 3, 1)  # (c1, ei, ej, c2)
    w2 = [w2[:, ei].reshape(c1, 2 * c2) for ei in (0, 1)]  # (c1, (ej, c2)) per ei
    b1, b2 = conv1.bias.repeat(4), conv2.bias.repeat(2)
    keys = keys.view(b, h, w, c)
    out = keys.new_empty(b, m, h, 2, 2, 4 * w)  # rows (i, di, ei), columns (j, dj, ej)
    for i in range(b):
        for r in range(0, h, _UPSCALE_ROWS):
            rows = min(_UPSCALE_ROWS, h - r)
            x = torch.addmm(b1, keys[i, r : r + rows].reshape(-1, c), w1)  # (n, 4*c1)
            x = F.layer_norm(x.view(rows, w, 2, 2, c1), (c1,), norm.weight, norm.bias, norm.eps)
            x = act1(x).transpose(1, 2).reshape(-1, c1)  # rows (i, di, j, dj)
            for ei in (0, 1):
                y = act2(torch.addmm(b2, x, w2[ei]))  # (4n, (ej, c2))
                y = hyper[i] @ y.view(-1, c2).t()  # (M, (i, di, j, dj, ej))
                out[i, :, r : r + rows, :, ei] = y.view(m, rows, 2, 4 * w)
    return out.view(b, m, 4 * h, 4 * w)


# --------------------------------------------------------------------------------------------
# The predictor
# --------------------------------------------------------------------------------------------

_DECODE_CHUNK = 16  # prompts decoded together: bounds memory (the upscaled features are 8 MB each)


@dataclass(frozen=True)
class _ImageState:
    """Everything known about the current image; replaced whole, never mutated."""

    embedding: torch.Tensor  # (1, C, h, w), in the encoder's dtype
    input_size: Shape  # (h, w) of the resized image inside the padded square
    original_size: Shape  # (H, W) of the image as given
    owner: object = field(default=None, compare=False)  # token of the Predictor that made it
    context_lock: threading.Lock = field(default_factory=threading.Lock, compare=False)
    context: list = field(default_factory=list, compare=False)  # [ _ImageContext ] once built

    @property
    def image_shape(self) -> Shape:
        """(H, W) of the image as given."""
        return self.original_size


class Predictor:
    """SAM as an `Engine`: ``set_image`` once, then ``predict`` for any number of prompts.

    >>> p = Predictor(build_sam("vit_b"))          # doctest: +SKIP
    >>> p.set_image(image)                         # (H, W, 3) uint8, PIL image, path, ...
    >>> pred = p.predict(points=[(x, y)], labels=[1])
    >>> pred.masks.shape, pred.scores.shape        # (3, H, W), (3,)

    ``device``: None picks CUDA, then MPS, then the CPU. ``precision``: "auto" (float16 autocast
    for the image encoder on CUDA, float32 elsewhere), "float32", "bfloat16" or "float16" (the
    encoder only; the prompt decoder always runs in float32). ``cache_bytes`` bounds the
    embedding cache (least recently used embeddings are dropped first; 0 disables it).

    Thread safety: ``set_image`` may run in a background thread while another thread calls
    ``predict``; a prediction uses the image that was completely set when it started. Several
    users of one Predictor (two widgets, a widget and a notebook cell) each keep the handle that
    ``encode``/``set_image`` returned and pass it as ``predict(..., image=handle)``: the
    "current image" of ``set_image`` is then never consulted, so nobody answers from another's
    image.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str | torch.device | None = None,
        precision: str = "auto",
        cache_bytes: int = 256 * 2**20,
    ) -> None:
        if not all(hasattr(model, a) for a in ("image_encoder", "prompt_encoder", "mask_decoder")):
            raise TypeError(
                "Predictor needs a SAM model (with image_encoder, prompt_encoder, mask_decoder), "
                f"e.g. sam_widget.load_model('vit_b'); got {type(model).__name__}"
            )
        if cache_bytes < 0:
            raise ValueError(f"cache_bytes must be >= 0, got {cache_bytes}")
        self._device = select_device(device)
        self.dtype = select_precision(precision, self._device)
        self.model = model.to(self._device).eval()
        self.name: str = _variant_name(model)
        self.image_size: int = int(model.image_encoder.img_size)
        self.mask_threshold: float = float(getattr(model, "mask_threshold", 0.0))
        self.cache_bytes = int(cache_bytes)
        self._cache: OrderedDict[tuple, _ImageState] = OrderedDict()
        self._cache_used = 0
        self.cache_hits = 0
        self.cache_misses = 0
        self._fast = _fast_path_ok(model)
        self._state: _ImageState | None = None
        self._token = object()  # marks the handles this Predictor made (see `_current`)
        self._lock = threading.Lock()  # guards _state and the cache
        self._encode_lock = threading.Lock()  # one encoder run at a time

    # ---- Engine attributes -------------------------------------------------------------------

    @property
    def device(self) -> str:
        return str(self._device)

    @property
    def image_shape(self) -> Shape | None:
        """(H, W) of the current image, or None before ``set_image``."""
        state = self._state
        return None if state is None else state.original_size

    @property
    def embedding(self) -> torch.Tensor:
        """The current image's embedding, (256, 64, 64), in the encoder's dtype."""
        return self._current().embedding[0]

    @property
    def input_size(self) -> Shape:
        """(h, w) of the current image after resizing into the model's square input."""
        return self._current().input_size

    # ---- images ------------------------------------------------------------------------------

    def encode(self, image: Any) -> _ImageState:
        """Encode ``image`` (numpy, PIL image or path; see ``sam_widget.images.to_rgb``) without
        making it the current image; returns its handle for ``predict(..., image=handle)``.

        An image whose content was encoded before (and is still cached) is not encoded again.
        """
        rgb = to_rgb(image)
        key = self._cache_key(rgb)
        with self._lock:
            state = self._cache.get(key)
            if state is not None:
                self._cache.move_to_end(key)
                self.cache_hits += 1
                return state
        with self._encode_lock:
            with self._lock:  # another thread may have encoded it meanwhile
                state = self._cache.get(key)
            if state is None:
                state = self._encode(rgb)
                with self._lock:
                    self.cache_misses += 1
                    self._remember(key, state)
        return state

    def set_image(self, image: Any) -> _ImageState:
        """Encode ``image`` (see `encode`) and make it the current image; returns its handle.

        If encoding fails or is interrupted (an exception, KeyboardInterrupt), no image is
        current afterwards: ``predict`` then raises "no image set" rather than answering for
        the image set before.
        """
        try:
            state = self.encode(image)
        except BaseException:
            with self._lock:
                self._state = None
            raise
        with self._lock:
            self._state = state
        return state

    def reset_image(self) -> None:
        """Forget the current image (cached embeddings stay cached)."""
        with self._lock:
            self._state = None

    def clear_cache(self) -> None:
        """Drop every cached embedding."""
        with self._lock:
            self._cache.clear()
            self._cache_used = 0

    @property
    def cache_info(self) -> dict[str, int]:
        """{"entries", "bytes", "max_bytes", "hits", "misses"} of the embedding cache."""
        with self._lock:
            return {
                "entries": len(self._cache),
                "bytes": self._cache_used,
                "max_bytes": self.cache_bytes,
                "hits": self.cache_hits,
                "misses": self.cache_misses,
            }

    def _cache_key(self, rgb: np.ndarray) -> tuple:
        digest = hashlib.blake2b(np.ascontiguousarray(rgb).data, digest_size=20).hexdigest()
        return (digest, rgb.shape, self.name, str(self.dtype), str(self._device))

    def _remember(self, key: tuple, state: _ImageState) -> None:
        size = state.embedding.numel() * state.embedding.element_size()
        if size > self.cache_bytes:
            return
        self._cache[key] = state
        self._cache_used += size
        while self._cache_used > self.cache_bytes:
            _, old = self._cache.popitem(last=False)
            self._cache_used -= old.embedding.numel() * old.embedding.element_size()

    @torch.no_grad()
    def _encode(self, rgb: np.ndarray) -> _ImageState:
        resized = resize_longest_side(rgb, self.image_size)
        x = torch.from_numpy(np.array(resized)).to(self._device)  # a writable copy
        x = x.permute(2, 0, 1).unsqueeze(0).float()  # (1, 3, h, w), uint8 values as float32
        x = self.model.preprocess(x)  # normalise, pad to (1, 3, 1024, 1024)
        if self.dtype == torch.float32:
            embedding = self.model.image_encoder(x)
        else:
            with torch.autocast(self._device.type, dtype=self.dtype):
                embedding = self.model.image_encoder(x)
            embedding = embedding.to(self.dtype)
        return _ImageState(
            embedding=embedding.contiguous(),
            input_size=tuple(resized.shape[:2]),
            original_size=tuple(rgb.shape[:2]),
            owner=self._token,
        )

    def _current(self, image: _ImageState | None = None) -> _ImageState:
        """The handle ``image`` (checked to be one of ours), else the current image."""
        if image is not None:
            if not isinstance(image, _ImageState) or image.owner is not self._token:
                raise ValueError(
                    "image= must be a handle returned by this Predictor's encode() or "
                    f"set_image(), got {type(image).__name__}"
                )
            return image
        state = self._state
        if state is None:
            raise RuntimeError("no image set: call set_image(image) before predict()")
        return state

    def _context(self, state: _ImageState) -> _ImageContext:
        with state.context_lock:
            if not state.context:
                with torch.no_grad():
                    state.context.append(_image_context(self.model, state.embedding))
            return state.context[0]

    # ---- prompts -----------------------------------------------------------------------------

    def predict(
        self,
        points: Sequence[Sequence[float]] | np.ndarray | None = None,
        labels: Sequence[int] | np.ndarray | None = None,
        box: Sequence[float] | np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask: bool = True,
        image: _ImageState | None = None,
    ) -> Prediction:
        """Masks for one prompt state (or B boxes at once).

        points: (N, 2) pixel (x, y) of the original image, or (B, N, 2) with B boxes;
        labels: (N,) or (B, N), 1 foreground / 0 background; box: (4,) x0, y0, x1, y1 in pixels,
        or (B, 4) for B objects at once; mask_input: (1, 256, 256) logits from an earlier
        prediction (or (B, 1, 256, 256)); image: a handle from `encode`/`set_image` (default:
        the current image). Returns a `Prediction` with scores (C,), logits
        (C, 256, 256), masks (C, H, W), C = 3 if ``multimask`` else 1; with B boxes each gains a
        leading B axis.
        """
        state = self._current(image)
        coords, point_labels, boxes, masks, batched = _check_prompts(
            points, labels, box, mask_input, self.image_size
        )
        old_h, old_w = state.original_size
        new_h, new_w = state.input_size
        scale = np.array([new_w / old_w, new_h / old_h])
        # scaled in float64, then float32 like the official predictor
        if coords is not None:
            coords = (coords * scale).astype(np.float32)
        if boxes is not None:
            boxes = (boxes.reshape(-1, 2, 2) * scale).reshape(-1, 4).astype(np.float32)
        low_res, iou = self.decode(state, coords, point_labels, boxes, masks, multimask)
        return self._prediction(state, low_res, iou, batched)

    @torch.no_grad()
    def decode(
        self,
        state: _ImageState | None,
        coords: np.ndarray | torch.Tensor | None,
        labels: np.ndarray | torch.Tensor | None,
        boxes: np.ndarray | torch.Tensor | None,
        masks: np.ndarray | torch.Tensor | None,
        multimask: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts already in the model's input frame -> (low-res logits (B, M, 256, 256),
        IoU (B, M)). coords (B, N, 2), labels (B, N), boxes (B, 4), masks (B, 1, 256, 256)."""
        state = self._current() if state is None else state
        dev = self._device

        def tensor(x: Any, dtype: torch.dtype | None) -> torch.Tensor | None:
            if x is None:
                return None
            if isinstance(x, np.ndarray) and dtype is None:
                dtype = torch.float32 if x.dtype == np.float64 and dev.type == "mps" else None
            return torch.as_tensor(x, dtype=dtype).to(dev)

        coords_t = tensor(coords, torch.float32 if dev.type == "mps" else None)
        if coords_t is not None and not coords_t.is_floating_point():
            coords_t = coords_t.float()
        labels_t = tensor(labels, torch.int32)
        boxes_t = tensor(boxes, torch.float32)
        masks_t = tensor(masks, torch.float32)
        b = next(len(x) for x in (coords_t, boxes_t, masks_t) if x is not None)
        outputs = []
        for start in range(0, b, _DECODE_CHUNK):
            part = slice(start, start + _DECODE_CHUNK)
            outputs.append(
                self._decode_chunk(
                    state,
                    None if coords_t is None else (coords_t[part], labels_t[part]),
                    None if boxes_t is None else boxes_t[part],
                    None if masks_t is None else masks_t[part],
                    multimask,
                )
            )
        if len(outputs) == 1:
            return outputs[0]
        return torch.cat([o[0] for o in outputs]), torch.cat([o[1] for o in outputs])

    def _decode_chunk(self, state, points, boxes, masks, multimask):
        sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=masks)
        if self._fast:
            return _decode(
                self.model,
                self._context(state),
                sparse,
                None if masks is None else dense,
                multimask,
            )
        low_res, iou = self.model.mask_decoder(
            image_embeddings=state.embedding.float(),
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
        return low_res, iou

    def upscale(self, low_res: torch.Tensor, size: Shape, state: _ImageState | None = None):
        """Low-res logits (..., 256, 256) -> logits (..., h, w) covering the whole image."""
        state = self._current() if state is None else state
        return upscale_logits(low_res, state.input_size, size, self.image_size)

    def _prediction(self, state, low_res, iou, batched) -> Prediction:
        if not batched:
            low_res, iou = low_res[0], iou[0]
        threshold = self.mask_threshold

        def to_masks(size: Shape) -> np.ndarray:
            with torch.no_grad():
                if low_res.device.type == "cpu":
                    return logits_to_masks(
                        low_res, state.input_size, size, threshold, self.image_size
                    )
                logits = upscale_logits(low_res, state.input_size, size, self.image_size)
                return (logits > threshold).cpu().numpy()

        return Prediction(
            scores=iou.float().cpu().numpy(),
            logits=low_res.float().cpu().numpy(),
            image_shape=state.original_size,
            to_masks=to_masks,
        )


def _check_prompts(points, labels, box, mask_input, image_size):
    """Validate prompts; returns float64 coords (B, N, 2), int labels (B, N), boxes (B, 4),
    float32 masks (B, 1, 256, 256) (each or None) and whether the caller asked for a batch."""

    def array(x, name, dtype=np.float64):
        try:
            a = np.asarray(x, dtype=dtype)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name} must be numeric, got {x!r:.80}") from e
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or infinite values: {a.tolist()!r:.200}")
        return a

    coords = lab = boxes = masks = None
    batched = False
    if points is not None and len(points) > 0:
        coords = array(points, "points")
        if coords.ndim == 2 and coords.shape[1] == 2:
            coords = coords[None]
        elif coords.ndim == 3 and coords.shape[2] == 2:
            batched = True
        else:
            raise ValueError(f"points must have shape (N, 2) or (B, N, 2), got {coords.shape}")
        if labels is None:
            raise ValueError("labels are required with points: 1 foreground, 0 background")
        lab = array(labels, "labels")
        if lab.shape != coords.shape[:2] and lab.shape != coords.shape[1:2]:
            raise ValueError(
                f"labels must have one entry per point: {coords.shape[1]} points, "
                f"labels of shape {lab.shape}"
            )
        if not np.isin(lab, (0, 1)).all():
            raise ValueError(f"labels must be 1 (foreground) or 0 (background), got {lab.tolist()}")
        lab = np.broadcast_to(lab.astype(np.int32), coords.shape[:2]).copy()
    elif labels is not None and len(labels) > 0:
        raise ValueError("labels were given without points")
    if box is not None:
        boxes = array(box, "box")
        if boxes.shape == (4,):
            boxes = boxes[None]
        elif boxes.ndim == 2 and boxes.shape[1] == 4 and len(boxes) > 0:
            batched = True
        else:
            raise ValueError(
                f"box must be (x0, y0, x1, y1) or have shape (B, 4), got {boxes.shape}"
            )
        bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
        if bad.any():
            raise ValueError(
                f"box corners are inverted: {boxes[bad][0].tolist()}; "
                "give (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1"
            )
    if mask_input is not None:
        masks = array(mask_input, "mask_input", np.float32)
        low = image_size // 4
        if masks.shape == (low, low):
            masks = masks[None, None]
        elif masks.shape == (1, low, low):
            masks = masks[None]
        elif masks.ndim == 4 and masks.shape[1:] == (1, low, low):
            batched = True
        else:
            raise ValueError(
                f"mask_input must be (1, {low}, {low}) logits from an earlier prediction "
                f"(pred.logits[i][None]), got shape {masks.shape}"
            )
    sizes = {len(x) for x in (coords, boxes, masks) if x is not None}
    if not sizes:
        raise ValueError("give at least one prompt: points (with labels), a box or a mask_input")
    b = max(sizes)
    if sizes - {1, b}:
        raise ValueError(f"batched prompts disagree on the batch size: {sorted(sizes)}")
    if coords is not None and len(coords) != b:
        coords, lab = np.repeat(coords, b, axis=0), np.repeat(lab, b, axis=0)
    if boxes is not None and len(boxes) != b:
        boxes = np.repeat(boxes, b, axis=0)
    if masks is not None and len(masks) != b:
        masks = np.repeat(masks, b, axis=0)
    return coords, lab, boxes, masks, batched
