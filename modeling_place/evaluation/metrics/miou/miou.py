"""mIoU: mean over images of |P∩R| / |P∪R| (scikit-learn's `jaccard_score`), heat maps binarised at a threshold.

Self-contained: imports only pip-installable libraries (requirements.txt).
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import jaccard_score

_DESCRIPTION = """Mean intersection over union of a (heat) map thresholded at `threshold` against a binary mask,
per image (scikit-learn's `jaccard_score` on the flattened pair; 1 when both are empty), averaged over images."""
_KWARGS = """
Args:
    predictions: per image, an H x W map (binary masks or heat maps in [0, 1]).
    references: per image, a binary H x W mask.
    threshold: a pixel is predicted when its value is >= threshold (default 0.5).
Returns:
    miou (float), num_images (int).
"""
_CITATION = """@article{jaccard1912,
  title={The Distribution of the Flora in the Alpine Zone}, author={Jaccard, Paul},
  journal={New Phytologist}, volume={11}, number={2}, pages={37--50}, year={1912}
}"""


def _pair(prediction, reference, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Flattened predicted and reference masks; ValueError on NaN maps, non-binary masks or a size mismatch."""
    values, mask = np.asarray(prediction, dtype=np.float64), np.asarray(reference)
    if values.shape != mask.shape:
        raise ValueError(f"pair {index}: prediction {values.shape} and reference {mask.shape} differ in shape")
    if not np.isfinite(values).all():
        raise ValueError(f"pair {index}: the map holds NaN or infinite values")
    if np.setdiff1d(np.unique(mask), [0, 1]).size:
        raise ValueError(f"pair {index}: references must be binary masks (0/1)")
    return values.ravel(), mask.astype(bool).ravel()


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Miou(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
                                        "references": datasets.Sequence(datasets.Sequence(datasets.Value("uint8")))}),
        )

    def _compute(self, predictions, references, threshold=0.5):
        scores = []
        for index, pair in enumerate(zip(predictions, references)):
            values, mask = _pair(*pair, index)
            scores.append(jaccard_score(mask, values >= threshold, zero_division=1.0))
        return {"miou": float(np.mean(scores)), "num_images": len(scores)}
