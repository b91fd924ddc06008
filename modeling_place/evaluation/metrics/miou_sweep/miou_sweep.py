"""mIoU over fixed thresholds: grounding maps clamped to [0, 1], binarised at 0.1 ... 0.5, IoU averaged.

Self-contained: numpy and scikit-learn's `jaccard_score` (requirements.txt).
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import jaccard_score

_DESCRIPTION = """Per pair, the IoU (scikit-learn's `jaccard_score`) of clip(map, 0, 1) >= t against the mask for
each fixed threshold t (0.1, 0.2, 0.3, 0.4, 0.5 by default), averaged over thresholds, then over pairs. No
threshold is tuned or chosen per image."""
_KWARGS = """
Args:
    predictions: per pair, an H x W map.
    references: per pair, a binary H x W mask with pixels inside and outside.
    thresholds: the sweep (default 0.1, 0.2, 0.3, 0.4, 0.5).
Returns:
    miou_sweep (float), num_pairs (int).
"""
_CITATION = """@inproceedings{boecking2022biovil,
  title={Making the Most of Text Semantics to Improve Biomedical Vision-Language Processing},
  author={Boecking, Benedikt and Usuyama, Naoto and Bannur, Shruthi and others},
  booktitle={European Conference on Computer Vision (ECCV)}, pages={1--21}, year={2022}
}"""
SWEEP_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5)


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
class MiouSweep(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
                                        "references": datasets.Sequence(datasets.Sequence(datasets.Value("uint8")))}),
        )

    def _compute(self, predictions, references, thresholds=SWEEP_THRESHOLDS):
        maps, masks = _pairs(predictions, references)
        clamped = np.clip(maps, 0.0, 1.0)
        scores = [np.mean([jaccard_score(mask, values >= t) for t in thresholds])
                  for values, mask in zip(clamped, masks)]
        return {"miou_sweep": float(np.mean(scores)), "num_pairs": len(scores)}
