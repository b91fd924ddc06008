"""Detection mAP as COCOeval: mean AP over IoU thresholds and classes (101-point interpolated precision)."""

import datasets
import evaluate
import numpy as np

from modeling_place.evaluation.functional import detection_map

_DESCRIPTION = """Mean average precision of box detection, computed exactly as pycocotools' COCOeval (bbox, all
areas, at most `max_detections` per image and class). `iou_thresholds` defaults to the benchmark's
0.40:0.05:0.75 (RSNA/Object-CXR style); `coco=True` adds COCO's mAP over 0.50:0.05:0.95 as `coco_map`. Classes
without ground truth are left out of the mean and listed; an image without predictions counts its boxes as
missed."""
_KWARGS = """
Args:
    predictions: per image, {"boxes": [[x0, y0, x1, y1], ...], "scores": [...], "labels": [...]}.
    references: per image, {"boxes": [[x0, y0, x1, y1], ...], "labels": [...]}.
    iou_thresholds: IoU thresholds of the main `map` (default 0.40, 0.45, ..., 0.75).
    coco: also report `coco_map` (default True).
Returns:
    map, per_class, per_threshold, classes_without_ground_truth (and coco_map).
"""

BENCHMARK_IOU_THRESHOLDS = tuple(np.round(np.linspace(0.4, 0.75, 8), 2).tolist())


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class DetectionMap(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        boxes = datasets.Sequence(datasets.Sequence(datasets.Value("float64"), length=4))
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=datasets.Features({
                "predictions": {"boxes": boxes, "scores": datasets.Sequence(datasets.Value("float64")),
                                "labels": datasets.Sequence(datasets.Value("int64"))},
                "references": {"boxes": boxes, "labels": datasets.Sequence(datasets.Value("int64"))},
            }),
        )

    def _compute(self, predictions, references, iou_thresholds=BENCHMARK_IOU_THRESHOLDS, coco=True,
                 max_detections=100):
        result = detection_map(predictions, references, iou_thresholds, max_detections)
        if coco:
            result["coco_map"] = detection_map(predictions, references, None, max_detections)["map"]
        return result
