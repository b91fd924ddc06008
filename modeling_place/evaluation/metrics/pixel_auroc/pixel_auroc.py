"""Pixel-level AUROC of grounding maps against lesion masks (scikit-learn's roc_auc_score per pair)."""

import datasets
import evaluate
import numpy as np

from modeling_place.evaluation.grounding import pixel_auroc

_DESCRIPTION = """Per pair, the area under the ROC curve of the map's pixel values as scores for the mask's pixels
(`sklearn.metrics.roc_auc_score`), averaged over pairs; 0.5 is a map unrelated to the lesion."""
_KWARGS = """
Args:
    predictions: per pair, an H x W map.
    references: per pair, a binary H x W mask with pixels inside and outside.
Returns:
    pixel_auroc (float), num_pairs (int).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class PixelAuroc(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
                                        "references": datasets.Sequence(datasets.Sequence(datasets.Value("uint8")))}),
        )

    def _compute(self, predictions, references):
        scores = pixel_auroc(np.asarray(predictions), np.asarray(references))
        return {"pixel_auroc": float(scores.mean()), "num_pairs": len(scores)}
