"""The prompt decoder, arranged for many prompts on one image (the `Predictor`'s fast path).

The official MaskDecoder copies the image embedding once per prompt, recomputes the same
projections of it for every prompt, and moves tensors between (B, C, H, W) and (B, HW, C)
several times. The functions below compute the same function from the same submodules and
weights (the model's own ``mask_decoder`` and ``prompt_encoder``), but:
- the first layer's projections of the image side (identical for every prompt when no
  mask_input is given) are computed once per image and kept in an `_ImageContext`;
- attention goes through ``scaled_dot_product_attention``;
- the upscaling convolutions (kernel 2, stride 2: no overlap) are matrix products in the
  channel-last layout, with the pixel shuffle left to one permute of the final masks;
- only the tokens that are read (the IoU token and the mask tokens whose masks are returned)
  go through the final attention and the hypernetwork.
The parity tests compare the result with the official ``SamPredictor``.

SAM 2.1's decoder takes the same path: its extra output token (the object score) is one more
token, its high-resolution features are added inside the upscaling (rearranged once per image
into the same block layout and folded into the convolutions' biases), its sigmoid IoU is its
IoU head's own, and its single-mask fallback compares the single mask with the best
multimask candidate only (the two masks it can return).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sam_widget.models.matmul import linear, matmul
from sam_widget.models.sam2.mask_decoder import select_single_masks
from sam_widget.models.transformer import TwoWayAttentionBlock


def _linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    return linear(x, layer.weight, layer.bias)


def _bmm(a: torch.Tensor, b: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
    """(B, m, k) @ (B, k, n) (+ ``add``, broadcast to (B, m, n)). One prompt (B = 1, a click)
    is one 2-D product (`sam_widget.models.matmul`: oneDNN on the CPU); more go batched."""
    if a.shape[0] == 1 and b.shape[0] == 1:
        out = matmul(a[0], b[0])
        if add is not None:
            out.add_(add[0])
        return out.unsqueeze(0)
    if add is None:
        return a @ b
    return torch.baddbmm(add.expand(a.shape[0], -1, -1), a, b)


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
    # SAM 2's high-res features in the upscaler's block layout, each plus its conv's bias:
    # after the first conv (h*w, (di, dj, C/4)); after the second (h*2*w*2, (ei, ej, C/8))
    high_res1: torch.Tensor | None = None
    high_res0: torch.Tensor | None = None


def fast_path_ok(model: nn.Module) -> bool:
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


def image_context(
    model: nn.Module, embedding: torch.Tensor, high_res: tuple[torch.Tensor, ...] = ()
) -> _ImageContext:
    """Precompute the image-only decoder inputs for one (1, C, h, w) embedding (and SAM 2's
    two high-res feature maps (1, C/8, 4h, 4w), (1, C/4, 2h, 2w))."""
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
    high_res1 = high_res0 = None
    if high_res:
        conv1, _, _, conv2, _ = dec.output_upscaling
        s0, s1 = (f.float()[0].permute(1, 2, 0) for f in high_res)  # channel-last
        h, w = embedding.shape[-2:]
        c1, c2 = s1.shape[-1], s0.shape[-1]
        # pixel (2i + di, 2j + dj) of the stride-8 map -> row (i, j), column (di, dj, c)
        high_res1 = s1.view(h, 2, w, 2, c1).permute(0, 2, 1, 3, 4).reshape(h * w, 4 * c1)
        high_res1 = high_res1 + conv1.bias.repeat(4)
        # pixel (4i + 2di + ei, 4j + 2dj + ej) of the stride-4 map -> row (i, di, j, dj),
        # column (ei, ej, c)
        s0 = s0.view(h, 2, 2, w, 2, 2, c2).permute(0, 1, 3, 4, 2, 5, 6)
        high_res0 = s0.reshape(h * 2 * w * 2, 4 * c2) + conv2.bias.repeat(4)
    return _ImageContext(
        embedding=embedding,
        src=src,
        pe=pe,
        keys0=_heads(_linear(src_pe, t2i.k_proj), t2i.num_heads).contiguous(),
        values0=_heads(_linear(src, t2i.v_proj), t2i.num_heads).contiguous(),
        queries0=queries0.transpose(-1, -2).contiguous(),
        high_res1=high_res1,
        high_res0=high_res0,
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
    scores = _bmm(q_img, keys_pe.expand(b, -1, -1).transpose(1, 2), bias)
    weights = torch.softmax(scores, dim=-1)  # (B, h*T, HW)
    mixed = _bmm(weights, keys.expand(b, -1, -1)).view(b, h, t, c)  # (B, h, T, C)
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
        scores = _bmm(m, keys_pe.transpose(1, 2), bias).view(b, h, t, -1)
    weights = torch.softmax(scores, dim=2).view(b, h * t, -1)  # (B, h*T, HW)
    values = v @ attn.out_proj.weight.view(c, h, d).permute(1, 2, 0)  # (B, h, T, C)
    values = values.reshape(b, h * t, c) + attn.out_proj.bias / h
    return _bmm(weights.transpose(1, 2), values, residual)


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


def decode(
    model: nn.Module,
    context: _ImageContext,
    sparse: torch.Tensor,
    dense: torch.Tensor | None,
    multimask: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask decoder for B prompts on one image.

    sparse: (B, T, C) prompt embeddings; dense: (B, C, h, w) mask-input embeddings, or None for
    no mask input. Returns low-res logits (B, M, 4h, 4w) and predicted IoU (B, M), M = 3 with
    ``multimask`` else 1, like the model's ``mask_decoder`` (SAM's or SAM 2's).
    """
    dec = model.mask_decoder
    transformer = dec.transformer
    b = sparse.shape[0]
    _, c, h, w = context.embedding.shape
    if hasattr(dec, "output_tokens"):  # ours: (L + 1 + M, C), SAM 2 leads with its object token
        output_tokens = dec.output_tokens()
    else:  # the official SAM decoder
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
    # the final attention only for the tokens read below: the IoU token and the mask tokens
    # whose masks are made (the prompts' own tokens and SAM 2's object token are not read)
    s = getattr(dec, "num_leading_tokens", 0)
    dynamic = getattr(dec, "dynamic_multimask_via_stability", False) and not dec.training
    if multimask:
        made = list(range(1, dec.num_mask_tokens))
    elif dynamic:  # SAM 2: the single mask, or the best multimask one if it is unstable
        made = list(range(dec.num_mask_tokens))
    else:
        made = [0]
    used = [s] + [s + 1 + i for i in made]
    queries, tokens = queries[:, used], tokens[:, used]
    final = transformer.final_attn_token_to_image
    attn_out = _tokens_to_image_unprojected(final, queries + tokens, keys + context.pe, keys)
    queries = transformer.norm_final_attn(queries + attn_out)
    keys = keys.expand(b, -1, -1)  # (B, HW, C)

    iou = dec.iou_prediction_head(queries[:, 0, :])  # (B, 1 + M), sigmoid for SAM 2
    hypers = torch.stack(
        [dec.output_hypernetworks_mlps[i](queries[:, 1 + k]) for k, i in enumerate(made)], 1
    )  # (B, len(made), C/8)
    if dynamic and not multimask:
        # only the single mask and the best candidate are made
        rows = torch.arange(b)
        best = iou[:, 1:].argmax(dim=-1) + 1  # (B,)
        hyper = torch.stack([hypers[:, 0], hypers[rows, best]], dim=1)  # (B, 2, C/8)
        masks = _upscaled_masks(dec, keys, hyper, h, w, context)
        pair_iou = torch.stack([iou[:, 0], iou[rows, best]], dim=1)
        return select_single_masks(
            masks,
            pair_iou,
            dec.dynamic_multimask_stability_delta,
            dec.dynamic_multimask_stability_thresh,
        )
    return _upscaled_masks(dec, keys, hypers, h, w, context), iou[:, made[0] : made[-1] + 1]


_UPSCALE_ROWS = 16  # embedding rows upscaled at a time: keeps the (16x) features in cache


def _upscaled_masks(
    dec: nn.Module,
    keys: torch.Tensor,
    hyper: torch.Tensor,
    h: int,
    w: int,
    context: _ImageContext | None = None,
) -> torch.Tensor:
    """Output upscaling and the hypernetwork's per-pixel products: (B, M, 4h, 4w) logits.

    ConvT(2, stride 2) -> LayerNorm2d -> act -> ConvT(2, stride 2) -> act, channel-last: the
    convolutions do not overlap, so each is a matrix product, and embedding pixel (i, j)
    becomes the 4x4 block at rows 4i + 2di + ei, columns 4j + 2dj + ej. A few embedding rows
    at a time, so the 32-channel features at 16x the pixels (8 MB per prompt) never leave the
    cache; this is the decoder's most memory-bound part. The pixel shuffle costs two cheap
    copies: the first convolution's output is reordered to rows (i, di, j, dj) while it has
    4x the pixels, and the product with the hypernetwork, in (i, di, j, dj, ei, ej) order, is
    permuted into rows 4i + 2di + ei and columns (j, dj, ej) while it has M channels. SAM 2's
    high-res features, laid out the same way (`image_context`), stand in for the
    convolutions' biases.
    """
    b, m = hyper.shape[:2]
    c = keys.shape[-1]
    conv1, norm, act1, conv2, act2 = dec.output_upscaling
    c1, c2 = conv1.out_channels, conv2.out_channels
    w1 = conv1.weight.permute(0, 2, 3, 1).reshape(c, 4 * c1)  # (C, (di, dj, c1))
    w2 = conv2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2)  # (c1, (ei, ej, c2))
    high_res = context is not None and context.high_res1 is not None
    b1, b2 = conv1.bias.repeat(4), conv2.bias.repeat(4)
    keys = keys.view(b, h, w, c)
    out = keys.new_empty(b, m, h, 2, 2, 4 * w)  # rows (i, di, ei), columns (j, dj, ej)
    for i in range(b):
        for r in range(0, h, _UPSCALE_ROWS):
            rows = min(_UPSCALE_ROWS, h - r)
            if high_res:
                b1 = context.high_res1[r * w : (r + rows) * w]  # (n, 4*c1), bias included
            x = matmul(keys[i, r : r + rows].reshape(-1, c), w1).add_(b1)  # (n, 4*c1)
            x = F.layer_norm(x.view(rows, w, 2, 2, c1), (c1,), norm.weight, norm.bias, norm.eps)
            x = act1(x).transpose(1, 2).reshape(-1, c1)  # rows (i, di, j, dj)
            if high_res:
                b2 = context.high_res0[r * 4 * w : (r + rows) * 4 * w]
            y = act2(matmul(x, w2).add_(b2))  # (4n, (ei, ej, c2))
            y = hyper[i] @ y.view(-1, c2).t()  # (M, (i, di, j, dj, ei, ej))
            y = y.view(m, rows, 2, 2 * w, 2, 2).transpose(3, 4)  # (M, i, di, ei, (j, dj), ej)
            out[i, :, r : r + rows] = y.reshape(m, rows, 2, 2, 4 * w)
    return out.view(b, m, 4 * h, 4 * w)
