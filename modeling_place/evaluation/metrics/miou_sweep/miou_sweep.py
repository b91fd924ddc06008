"""mIoU over fixed thresholds: grounding maps clamped to [0, 1], binarised at 0.1 ... 0.5, IoU averaged."""

import datasets
import evaluate
import numpy as np

from modeling_place.evaluation.grounding import SWEEP_THRESHOLDS, iou_sweep

_DESCRIPTION = """Per pair, the IoU of clip(map, 0, 1) >= t against the mask for each fixed threshold t (0.1, 0.2, 0.3,
0.4, 0.5 by default), averaged over thresholds, then over pairs. No threshold is tuned or chosen per image."""
_KWARGS = """
Args:
    predictions: per pair, an H x W map.
    references: per pair, a binary H x W mask with foreground.
    thresholds: the sweep (default 0.1, 0.2, 0.3, 0.4, 0.5).
Returns:
    miou_sweep (float), num_pairs (int).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class MiouSweep(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
                                        "references": datasets.Sequence(datasets.Sequence(datasets.Value("uint8")))}),
        )

    def _compute(self, predictions, references, thresholds=SWEEP_THRESHOLDS):
        scores = iou_sweep(np.asarray(predictions), np.asarray(references), thresholds)
        return {"miou_sweep": float(scores.mean()), "num_pairs": len(scores)}
