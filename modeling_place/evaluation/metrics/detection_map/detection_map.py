"""Detection mAP by pycocotools' COCOeval (bbox), at the benchmark's IoU thresholds 0.40:0.05:0.75.

Self-contained: numpy and pycocotools (requirements.txt).
"""

import contextlib
import io

import datasets
import evaluate
import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

_DESCRIPTION = """Mean average precision of box detection by pycocotools' COCOeval (bbox, area "all", 101-point
interpolated precision, at most `max_detections` per image and class). `iou_thresholds` defaults to the
benchmark's 0.40:0.05:0.75 (RSNA / Object-CXR style); `coco=True` adds COCO's mAP over 0.50:0.05:0.95 as
`coco_map`. Classes without ground truth are left out of the mean and listed; an image without predictions
counts its boxes as missed. Boxes are [x0, y0, x1, y1]; each image needs as many scores and labels as boxes."""
_KWARGS = """
Args:
    predictions: per image, {"boxes": [[x0, y0, x1, y1], ...], "scores": [...], "labels": [...]}.
    references: per image, {"boxes": [[x0, y0, x1, y1], ...], "labels": [...]}.
    iou_thresholds: IoU thresholds of the main `map` (default 0.40, 0.45, ..., 0.75).
    coco: also report `coco_map` (default True).
    max_detections: predictions kept per image and class (default 100).
Returns:
    map, per_class, per_threshold, classes_without_ground_truth (and coco_map).
"""
_CITATION = """@inproceedings{lin2014coco,
  title={Microsoft {COCO}: Common Objects in Context}, author={Lin, Tsung-Yi and Maire, Michael and Belongie, Serge
  and others}, booktitle={European Conference on Computer Vision (ECCV)}, pages={740--755}, year={2014}
}"""

BENCHMARK_IOU_THRESHOLDS = tuple(np.round(np.linspace(0.4, 0.75, 8), 2).tolist())
COCO_IOU_THRESHOLDS = tuple(np.round(np.linspace(0.5, 0.95, 10), 2).tolist())


def _annotations(items, with_scores: bool) -> list[dict]:
    """COCO annotations (xywh boxes) of every image; ValueError when boxes, scores and labels differ in length."""
    annotations = []
    for image, item in enumerate(items):
        boxes = np.asarray(item["boxes"], dtype=np.float64).reshape(-1, 4)
        fields = {"labels": np.asarray(item["labels"]).ravel()}
        if with_scores:
            fields["scores"] = np.asarray(item["scores"], dtype=np.float64).ravel()
        for name, values in fields.items():
            if len(values) != len(boxes):
                raise ValueError(f"image {image}: {len(boxes)} boxes but {len(values)} {name}")
        if with_scores and not np.isfinite(fields["scores"]).all():
            raise ValueError(f"image {image}: scores hold NaN or infinite values")
        if not with_scores and (boxes[:, 2:] < boxes[:, :2]).any():
            raise ValueError(f"references, image {image}: a box has x1 < x0 or y1 < y0 (boxes are [x0, y0, x1, y1])")
        for index, (box, label) in enumerate(zip(boxes, fields["labels"])):
            width, height = box[2] - box[0], box[3] - box[1]
            # an inverted predicted box gets a negative area, outside COCO's area range: ignored, as loadRes does
            annotation = {"id": len(annotations) + 1, "image_id": image, "category_id": int(label),
                          "bbox": [box[0], box[1], width, height], "area": width * height, "iscrowd": 0}
            if with_scores:
                annotation["score"] = float(fields["scores"][index])
            annotations.append(annotation)
    return annotations


def _coco(annotations: list[dict], num_images: int, classes: list[int]) -> COCO:
    coco = COCO()  # built in memory: `loadRes` cannot take an empty detection list
    coco.dataset = {"images": [{"id": i} for i in range(num_images)], "annotations": annotations,
                    "categories": [{"id": c} for c in classes]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def _precision(gt: COCO, detections: COCO, thresholds, max_detections: int) -> np.ndarray:
    """COCOeval's interpolated precision (T, R, K) at area "all" and `max_detections`; -1 where no ground truth."""
    evaluator = COCOeval(gt, detections, "bbox")
    evaluator.params.iouThrs = np.asarray(thresholds, dtype=np.float64)
    evaluator.params.maxDets = [max_detections]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator.eval["precision"][:, :, :, 0, 0]


def detection_map(predictions, references, thresholds, max_detections: int = 100) -> dict:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} prediction entries but {len(references)} reference entries")
    gt_annotations, dt_annotations = _annotations(references, False), _annotations(predictions, True)
    classes = sorted({a["category_id"] for a in gt_annotations + dt_annotations})
    with_gt = sorted({a["category_id"] for a in gt_annotations})
    missing = [c for c in classes if c not in with_gt]
    if not with_gt:
        return {"map": float("nan"), "per_class": {}, "per_threshold": {}, "classes_without_ground_truth": missing}
    gt = _coco(gt_annotations, len(references), classes)
    precision = _precision(gt, _coco(dt_annotations, len(references), classes), thresholds, max_detections)
    kept = precision[:, :, [classes.index(c) for c in with_gt]]  # (T, R, classes with ground truth)
    return {"map": float(kept.mean()),
            "per_class": {c: float(kept[:, :, i].mean()) for i, c in enumerate(with_gt)},
            "per_threshold": {float(t): float(kept[i].mean()) for i, t in enumerate(thresholds)},
            "classes_without_ground_truth": missing}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class DetectionMap(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        boxes = datasets.Sequence(datasets.Sequence(datasets.Value("float64"), length=4))
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS,
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
            result["coco_map"] = detection_map(predictions, references, COCO_IOU_THRESHOLDS, max_detections)["map"]
        return result
