"""mIoU: mean over images of |P∩R| / |P∪R|, with heat maps binarised at a threshold (grounding)."""

import datasets
import evaluate
import numpy as np

from modeling_place.evaluation.functional import mask_iou

_DESCRIPTION = """Mean intersection over union of a (heat) map thresholded at `threshold` against a binary mask,
per image (scikit-learn's `jaccard_score` on the flattened pair), averaged over images."""
_KWARGS = """
Args:
    predictions: per image, an H x W map (binary masks or heat maps in [0, 1]).
    references: per image, a binary H x W mask.
    threshold: a pixel is predicted when its value is >= threshold (default 0.5).
Returns:
    miou (float), num_images (int).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Miou(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
                                        "references": datasets.Sequence(datasets.Sequence(datasets.Value("uint8")))}),
        )

    def _compute(self, predictions, references, threshold=0.5):
        scores = [mask_iou(np.asarray(p) >= threshold, np.asarray(r))[0] for p, r in zip(predictions, references)]
        return {"miou": float(np.mean(scores)), "num_images": len(scores)}
