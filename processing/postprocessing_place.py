"""Post-processing for the segmentation and detection heads, as image-processor methods (what pipelines call).

`PlaceImageProcessor` fits an image inside `size` (aspect kept), pads it centred, then centre-crops
`crop_size`. Predictions live in that crop; mapping them back to the original image inverts the same
geometry (`CropGeometry`). The same geometry maps ground-truth masks and boxes *into* the crop for training.

`PlacePostProcessingMixin` needs only `size`, `crop_size` and `do_center_crop` from its host class;
`PlaceImageProcessor` inherits it, so a saved processor works with the segmentation and detection pipelines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class CropGeometry:
    """Affine map from original pixel coordinates to model-input (crop) pixel coordinates: x' = x·scale + offset."""

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float
    crop_width: int
    crop_height: int

    def to_crop(self, boxes: Tensor) -> Tensor:
        """`[x0, y0, x1, y1]` boxes in original pixels → crop pixels, clipped to the crop."""
        scale = boxes.new_tensor([self.scale_x, self.scale_y] * 2)
        offset = boxes.new_tensor([self.offset_x, self.offset_y] * 2)
        limit = boxes.new_tensor([self.crop_width, self.crop_height] * 2)
        return torch.minimum((boxes * scale + offset).clamp(min=0), limit)

    def to_original(self, boxes: Tensor, height: int, width: int) -> Tensor:
        """`[x0, y0, x1, y1]` boxes in crop pixels → original pixels, clipped to the image."""
        scale = boxes.new_tensor([self.scale_x, self.scale_y] * 2)
        offset = boxes.new_tensor([self.offset_x, self.offset_y] * 2)
        limit = boxes.new_tensor([width, height] * 2)
        return torch.minimum(((boxes - offset) / scale).clamp(min=0), limit)

    def original_grid(self, height: int, width: int, device: torch.device | None = None) -> Tensor:
        """`grid_sample` grid `(1, H, W, 2)` that reads crop-space maps at the original pixels' centres."""
        xs = ((torch.arange(width, device=device) + 0.5) * self.scale_x + self.offset_x) / self.crop_width * 2 - 1
        ys = ((torch.arange(height, device=device) + 0.5) * self.scale_y + self.offset_y) / self.crop_height * 2 - 1
        grid_y, grid_x = torch.meshgrid(ys.float(), xs.float(), indexing="ij")
        return torch.stack([grid_x, grid_y], dim=-1)[None]

    def crop_grid(self, height: int, width: int, device: torch.device | None = None) -> Tensor:
        """`grid_sample` grid `(1, crop_h, crop_w, 2)` that reads original-image maps at the crop pixels' centres."""
        xs = ((torch.arange(self.crop_width, device=device) + 0.5 - self.offset_x) / self.scale_x) / width * 2 - 1
        ys = ((torch.arange(self.crop_height, device=device) + 0.5 - self.offset_y) / self.scale_y) / height * 2 - 1
        grid_y, grid_x = torch.meshgrid(ys.float(), xs.float(), indexing="ij")
        return torch.stack([grid_x, grid_y], dim=-1)[None]


def _size_pair(size: Any, name: str) -> tuple[int, int]:
    height, width = (size["height"], size["width"]) if isinstance(size, dict) else (size.height, size.width)
    if height is None or width is None:
        raise ValueError(f"{name} must have a height and a width, got {size!r}")
    return int(height), int(width)


def _target_size_list(target_sizes: Any, count: int) -> list[tuple[int, int] | None]:
    if target_sizes is None:
        return [None] * count
    sizes = target_sizes.tolist() if isinstance(target_sizes, Tensor) else list(target_sizes)
    if len(sizes) != count:
        raise ValueError(f"target_sizes has {len(sizes)} entries for a batch of {count}")
    return [(int(h), int(w)) for h, w in sizes]


class PlacePostProcessingMixin:
    """`post_process_semantic_segmentation` / `post_process_object_detection` for PLACE's heads."""

    def crop_geometry(self, height: int, width: int) -> CropGeometry:
        """The eval-mode geometry of this processor for an image of `height × width` pixels."""
        canvas_h, canvas_w = _size_pair(self.size, "size")
        crop_h, crop_w = _size_pair(self.crop_size, "crop_size") if self.do_center_crop else (canvas_h, canvas_w)
        scale = min(canvas_h / height, canvas_w / width)
        fitted_h, fitted_w = max(1, round(height * scale)), max(1, round(width * scale))
        pad_top, pad_left = (canvas_h - fitted_h) // 2, (canvas_w - fitted_w) // 2
        # torchvision-style centre crop of the canvas (a crop larger than the canvas pads it)
        crop_top = int((canvas_h - crop_h) / 2.0) if crop_h <= canvas_h else -((crop_h - canvas_h) // 2)
        crop_left = int((canvas_w - crop_w) / 2.0) if crop_w <= canvas_w else -((crop_w - canvas_w) // 2)
        return CropGeometry(fitted_w / width, fitted_h / height, pad_left - crop_left, pad_top - crop_top, crop_w, crop_h)

    # -- predictions → original image ------------------------------------------------------------------
    def post_process_semantic_segmentation(
        self, outputs: Any, target_sizes: Sequence[tuple[int, int]] | Tensor | None = None
    ) -> list[Tensor]:
        """Class maps `(H, W)` (long) per image; at crop resolution when `target_sizes` is None.

        One output channel: foreground where the sigmoid exceeds 0.5 (values 0/1). Several: arg-max class.
        Pixels that the centre crop cut away are background (0).
        """
        logits = outputs["logits"]
        crop_h, crop_w = _size_pair(self.crop_size, "crop_size") if self.do_center_crop else _size_pair(self.size, "size")
        maps = []
        for image_logits, target in zip(logits, _target_size_list(target_sizes, len(logits))):
            image_logits = image_logits[None].float()
            if target is None:
                resized = F.interpolate(image_logits, size=(crop_h, crop_w), mode="bilinear", align_corners=False)
            else:
                grid = self.crop_geometry(*target).original_grid(*target, device=image_logits.device)
                resized = F.grid_sample(image_logits, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            maps.append(_logits_to_classes(resized[0]))
        return maps

    def post_process_object_detection(
        self,
        outputs: Any,
        threshold: float = 0.5,
        target_sizes: Sequence[tuple[int, int]] | Tensor | None = None,
        nms_threshold: float = 0.5,
        max_detections: int = 100,
    ) -> list[dict[str, Tensor]]:
        """Per image `{"scores", "labels", "boxes"}`: sigmoid scores above `threshold`, per-class NMS.

        Boxes are `[x0, y0, x1, y1]` in original pixels when `target_sizes` is given, else normalised to
        the model input (crop). At most `max_detections` boxes per image, best first.
        """
        from torchvision.ops import batched_nms, box_convert

        crop_h, crop_w = _size_pair(self.crop_size, "crop_size") if self.do_center_crop else _size_pair(self.size, "size")
        probabilities = outputs["logits"].float().sigmoid()
        boxes = box_convert(outputs["pred_boxes"].float(), "cxcywh", "xyxy")
        results = []
        for scores, image_boxes, target in zip(probabilities, boxes, _target_size_list(target_sizes, len(boxes))):
            patch, label = torch.nonzero(scores > threshold, as_tuple=True)
            kept_scores, kept_boxes = scores[patch, label], image_boxes[patch]
            keep = batched_nms(kept_boxes, kept_scores, label, nms_threshold)[:max_detections]
            kept_boxes = kept_boxes[keep]
            if target is not None:
                pixels = kept_boxes * kept_boxes.new_tensor([crop_w, crop_h, crop_w, crop_h])
                kept_boxes = self.crop_geometry(*target).to_original(pixels, *target)
            results.append({"scores": kept_scores[keep], "labels": label[keep], "boxes": kept_boxes})
        return results

    # -- ground truth → model input ----------------------------------------------------------------------
    def masks_to_model(self, masks: np.ndarray | Tensor) -> Tensor:
        """Label maps `(B, H, W)` (or one `(H, W)`) of an original size → the model input's crop, nearest."""
        masks = torch.as_tensor(np.asarray(masks))
        single = masks.dim() == 2
        masks = masks[None] if single else masks
        height, width = masks.shape[-2:]
        geometry = self.crop_geometry(height, width)
        grid = geometry.crop_grid(height, width).expand(len(masks), -1, -1, -1)
        sampled = F.grid_sample(masks[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
        sampled = sampled[:, 0].round().long()
        return sampled[0] if single else sampled

    def boxes_to_model(self, boxes: Sequence[Sequence[float]] | np.ndarray, height: int, width: int) -> tuple[Tensor, Tensor]:
        """`[x0, y0, x1, y1]` pixel boxes of an image → normalised `(cx, cy, w, h)` in the crop, and a keep mask.

        Boxes that the crop cuts away entirely (zero width or height after clipping) are flagged False.
        """
        from torchvision.ops import box_convert

        geometry = self.crop_geometry(height, width)
        pixels = torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
        cropped = geometry.to_crop(pixels)
        keep = (cropped[:, 2] > cropped[:, 0]) & (cropped[:, 3] > cropped[:, 1])
        scale = cropped.new_tensor([geometry.crop_width, geometry.crop_height] * 2)
        return box_convert(cropped / scale, "xyxy", "cxcywh"), keep


def _logits_to_classes(logits: Tensor) -> Tensor:
    """`(C, H, W)` logits → `(H, W)` long class map (C == 1: sigmoid > 0.5)."""
    if logits.shape[0] == 1:
        return (logits[0] > 0).long()
    return logits.argmax(dim=0)


__all__ = ["CropGeometry", "PlacePostProcessingMixin"]
