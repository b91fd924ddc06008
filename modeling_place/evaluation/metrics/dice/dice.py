"""Dice: mean over images of 2|P∩R| / (|P| + |R|) for binary masks (scikit-learn's `f1_score` per image).

Self-contained: imports only pip-installable libraries (requirements.txt).
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import f1_score

_DESCRIPTION = """Mean per-image Dice coefficient of binary segmentation masks: scikit-learn's `f1_score` on each
image's flattened masks, with `zero_division=empty_score` (an empty prediction for an empty mask scores 1 by
default). Masks must be 0/1 and of one size per pair."""
_KWARGS = """
Args:
    predictions: per image, a binary mask (H x W nested lists or array).
    references: per image, a binary mask of the same size.
    empty_score: the score of an image where both masks are empty (default 1.0).
Returns:
    dice (float), num_images (int).
"""
_CITATION = """@article{dice1945,
  title={Measures of the Amount of Ecologic Association Between Species}, author={Dice, Lee R.},
  journal={Ecology}, volume={26}, number={3}, pages={297--302}, year={1945}
}"""


def _binary(mask, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    outside = np.setdiff1d(np.unique(mask), [0, 1])
    if outside.size:
        raise ValueError(f"{name} must be binary masks (0/1), got values {outside[:5].tolist()}")
    return mask.astype(bool).ravel()


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Dice(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        mask = datasets.Sequence(datasets.Sequence(datasets.Value("uint8")))
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS,
            features=datasets.Features({"predictions": mask, "references": mask}),
        )

    def _compute(self, predictions, references, empty_score=1.0):
        scores = []
        for index, (prediction, reference) in enumerate(zip(predictions, references)):
            if np.shape(prediction) != np.shape(reference):
                raise ValueError(f"pair {index}: prediction {np.shape(prediction)} and reference "
                                 f"{np.shape(reference)} differ in shape")
            scores.append(f1_score(_binary(reference, "references"), _binary(prediction, "predictions"),
                                   zero_division=empty_score))
        return {"dice": float(np.mean(scores)), "num_images": len(scores)}
