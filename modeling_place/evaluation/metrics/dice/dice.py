"""Dice: mean over images of 2|P∩R| / (|P| + |R|) for binary masks (1.0 when both masks are empty)."""

import datasets
import evaluate
import numpy as np

from modeling_place.evaluation.functional import dice_per_image

_DESCRIPTION = """Mean per-image Dice coefficient of binary segmentation masks, as scikit-learn's `f1_score` on
each image's flattened masks with `zero_division=1` (an empty prediction for an empty mask scores 1)."""
_KWARGS = """
Args:
    predictions: per image, a binary mask (H x W nested lists or array).
    references: per image, a binary mask of the same size.
    empty_score: the score of an image where both masks are empty (default 1.0).
Returns:
    dice (float), num_images (int).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Dice(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        mask = datasets.Sequence(datasets.Sequence(datasets.Value("uint8")))
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=datasets.Features({"predictions": mask, "references": mask}),
        )

    def _compute(self, predictions, references, empty_score=1.0):
        scores = [dice_per_image(np.asarray(p), np.asarray(r), empty_score)[0] for p, r in zip(predictions, references)]
        return {"dice": float(np.mean(scores)), "num_images": len(scores)}
