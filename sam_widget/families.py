"""Model families: what differs between SAM and SAM 2.1 on the way from an image to masks.

The `Predictor` is family-agnostic; it asks the model's family (``family_of(model)``) how to

* turn an RGB image into the model input (``prepare``): SAM resizes the longest side to 1024
  (PIL bilinear), normalises on the 0..255 scale and pads to the square; SAM 2.1 resizes to the
  1024 square without keeping the aspect ratio (bilinear with antialiasing on the 0..1 scale)
  and normalises with ImageNet's mean and std;
* encode it (``encode``): SAM gives the image embedding; SAM 2.1 also the decoder's two
  high-resolution feature maps (the image embedding includes its ``no_mem_embed``);
* move prompts into the model frame (``to_model_frame``), with each official predictor's
  rounding, and embed them (``embed_prompts``): SAM 2.1 gives a box as two labelled points
  before the clicks, and still appends the padding point;
* run the reference decoder (``decode_reference``, the model's own ``mask_decoder``);
* map low-res logits to an image (``mask_frame``, see ``sam_widget.masks``) and hand them back
  for feeding in again (``output_logits``: SAM 2.1 clamps them to [-32, 32]).

The everything mode asks for ``default_pred_iou_thresh`` (the official generators' defaults)
and ``grid_points`` (how each official generator rounds its grid points).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

Shape = tuple[int, int]


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


class SamFamily:
    """SAM (ViT-B/L/H) and MobileSAM."""

    name = "sam"
    default_pred_iou_thresh = 0.88  # SamAutomaticMaskGenerator's default

    def image_size(self, model: nn.Module) -> int:
        return int(model.image_encoder.img_size)

    def prepare(self, model: nn.Module, rgb: np.ndarray, device: torch.device):
        """RGB uint8 (H, W, 3) -> (normalised padded input (1, 3, S, S), (h, w) inside it)."""
        resized = resize_longest_side(rgb, self.image_size(model))
        x = torch.from_numpy(np.array(resized)).to(device)  # a writable copy
        x = x.permute(2, 0, 1).unsqueeze(0).float()  # (1, 3, h, w), uint8 values as float32
        return model.preprocess(x), tuple(resized.shape[:2])

    def encode(self, model: nn.Module, x: torch.Tensor):
        """-> (embedding (1, C, h, w), high-res features: none)."""
        return model.image_encoder(x), ()

    def to_model_frame(self, coords, boxes, original_size: Shape, input_size: Shape):
        """float64 pixel coords (B, N, 2) / boxes (B, 4) -> float32 in the model frame."""
        old_h, old_w = original_size
        new_h, new_w = input_size
        scale = np.array([new_w / old_w, new_h / old_h])
        # scaled in float64, then float32 like the official predictor
        if coords is not None:
            coords = (coords * scale).astype(np.float32)
        if boxes is not None:
            boxes = (boxes.reshape(-1, 2, 2) * scale).reshape(-1, 4).astype(np.float32)
        return coords, boxes

    def grid_points(self, points: np.ndarray, crop_size: Shape, input_size: Shape):
        """Everything mode: crop-pixel grid points (N, 2) float64 -> (model-frame coords
        tensor (N, 2), the points as recorded). The official generator scales in float64."""
        scale = np.array([input_size[1] / crop_size[1], input_size[0] / crop_size[0]])
        return torch.as_tensor(points * scale), points

    def embed_prompts(self, model: nn.Module, points, boxes, masks):
        return model.prompt_encoder(points=points, boxes=boxes, masks=masks)

    def decode_reference(self, model: nn.Module, state: Any, sparse, dense, multimask: bool):
        return model.mask_decoder(
            image_embeddings=state.embedding.float(),
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )

    def mask_frame(self, image_size: int, input_size: Shape, output_size: Shape):
        """(frame, crop) of the logits -> image resizes (see ``sam_widget.masks``)."""
        return (image_size, image_size), tuple(input_size)

    def output_logits(self, low_res: torch.Tensor) -> torch.Tensor:
        return low_res


class Sam2Family(SamFamily):
    """SAM 2.1 (``sam_widget.models.sam2.Sam2``)."""

    name = "sam2"
    default_pred_iou_thresh = 0.8  # SAM2AutomaticMaskGenerator's default

    def image_size(self, model: nn.Module) -> int:
        return int(model.image_size)

    def prepare(self, model: nn.Module, rgb: np.ndarray, device: torch.device):
        x = torch.from_numpy(np.array(rgb)).to(device)  # a writable copy
        x = x.permute(2, 0, 1).unsqueeze(0).float()  # (1, 3, H, W) on the 0..255 scale
        s = self.image_size(model)
        return model.preprocess(x), (s, s)  # the whole square is the image

    def encode(self, model: nn.Module, x: torch.Tensor):
        embedding, high_res = model.encode(x)
        return embedding, tuple(high_res)

    def to_model_frame(self, coords, boxes, original_size: Shape, input_size: Shape):
        """As the official ``SAM2Transforms.transform_coords``: float32, x / W * S."""
        h, w = (np.float32(n) for n in original_size)
        size = np.float32(input_size[0])

        def scale(xy):
            xy = xy.astype(np.float32)
            return np.stack([xy[..., 0] / w, xy[..., 1] / h], axis=-1) * size

        if coords is not None:
            coords = scale(coords)
        if boxes is not None:
            boxes = scale(boxes.reshape(-1, 2, 2)).reshape(-1, 4)
        return coords, boxes

    def grid_points(self, points: np.ndarray, crop_size: Shape, input_size: Shape):
        """The official SAM 2 generator takes the points as float32 and scales them so."""
        points = points.astype(np.float32)
        coords, _ = self.to_model_frame(points, None, crop_size, input_size)
        return torch.from_numpy(coords), points

    def embed_prompts(self, model: nn.Module, points, boxes, masks):
        """SAM 2's predictor: box corners become points labelled 2 and 3, placed before the
        clicks; the prompt encoder then always appends its padding point."""
        if boxes is not None:
            corners = boxes.reshape(-1, 2, 2)
            corner_labels = torch.tensor([[2, 3]], dtype=torch.int32, device=boxes.device)
            corner_labels = corner_labels.expand(len(corners), 2)
            if points is None:
                points = (corners, corner_labels)
            else:
                points = (
                    torch.cat([corners, points[0].to(corners.dtype)], dim=1),
                    torch.cat([corner_labels, points[1].to(torch.int32)], dim=1),
                )
        return model.prompt_encoder(points=points, boxes=None, masks=masks)

    def decode_reference(self, model: nn.Module, state: Any, sparse, dense, multimask: bool):
        return model.mask_decoder(
            image_embeddings=state.embedding.float(),
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            high_res_features=[f.float() for f in state.high_res],
        )

    def mask_frame(self, image_size: int, input_size: Shape, output_size: Shape):
        return tuple(output_size), tuple(output_size)

    def output_logits(self, low_res: torch.Tensor) -> torch.Tensor:
        return torch.clamp(low_res, -32.0, 32.0)


def family_of(model: nn.Module) -> SamFamily:
    """The family of a SAM-like model: SAM 2.1 if it has SAM 2's mask decoder, else SAM."""
    if hasattr(model, "sam_mask_decoder") and hasattr(model, "no_mem_embed"):
        return Sam2Family()
    return SamFamily()
