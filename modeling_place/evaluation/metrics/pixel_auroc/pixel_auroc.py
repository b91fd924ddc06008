"""Pixel-level AUROC of grounding maps against lesion masks (scikit-learn's `roc_auc_score` per pair).

Self-contained: numpy and scikit-learn (requirements.txt).
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import roc_auc_score

_DESCRIPTION = """Per pair, the area under the ROC curve of the map's pixel values as scores for the mask's pixels
(`sklearn.metrics.roc_auc_score`), averaged over pairs; 0.5 is a map unrelated to the lesion."""
_KWARGS = """
Args:
    predictions: per pair, an H x W map.
    references: per pair, a binary H x W mask with pixels inside and outside.
Returns:
    pixel_auroc (float), num_pairs (int).
"""
_CITATION = """@inproceedings{boecking2022biovil,
  title={Making the Most of Text Semantics to Improve Biomedical Vision-Language Processing},
  author={Boecking, Benedikt and Usuyama, Naoto and Bannur, Shruthi and others},
  booktitle={European Conference on Computer Vision (ECCV)}, pages={1--21}, year={2022}
}"""


def _pairs(predictions, references) -> tuple[np.ndarray, np.ndarray]:
    """(N, H*W) float maps and boolean masks; every mask needs pixels inside and outside (grounding protocol)."""
    maps, masks = np.asarray(predictions, dtype=np.float64), np.asarray(references)
    if maps.shape != masks.shape or maps.ndim != 3:
        raise ValueError(f"predictions {maps.shape} and references {masks.shape} must both be (N, H, W)")
    if not np.isfinite(maps).all():
        raise ValueError("predictions hold NaN or infinite values")
    if np.setdiff1d(np.unique(masks), [0, 1]).size:
        raise ValueError("references must be binary masks (0/1)")
    masks = masks.astype(bool).reshape(len(masks), -1)
    inside = masks.sum(axis=1)
    empty = np.flatnonzero((inside == 0) | (inside == masks.shape[1]))
    if empty.size:
        raise ValueError(f"mask {int(empty[0])} is all background or all foreground: grounding needs both")
    return maps.reshape(len(maps), -1), masks


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class PixelAuroc(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
                                        "references": datasets.Sequence(datasets.Sequence(datasets.Value("uint8")))}),
        )

    def _compute(self, predictions, references):
        maps, masks = _pairs(predictions, references)
        scores = [roc_auc_score(mask, values) for values, mask in zip(maps, masks)]
        return {"pixel_auroc": float(np.mean(scores)), "num_pairs": len(scores)}
