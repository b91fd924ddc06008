"""Contrast-to-noise ratio of grounding maps against lesion masks (threshold-free; BioViL / MS-CXR).

Self-contained: numpy only (the definition; no library implements it).
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """Per pair, |mean inside - mean outside| / sqrt(var inside + var outside) of the map's pixels against
the mask; averaged over pairs. `signed_cnr` keeps the sign (negative: the map is lower on the lesion)."""
_KWARGS = """
Args:
    predictions: per pair, an H x W map (any finite values: cosine maps, attention maps, priors).
    references: per pair, a binary H x W mask with pixels inside and outside.
Returns:
    cnr (float), signed_cnr (float), num_pairs (int).
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


def _signed_cnr(values: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """(mu_in - mu_out) / sqrt(var_in + var_out) per row; 0 for a flat map, +-inf for a map equal to its mask."""
    result = np.zeros(len(values))
    for row, (value, mask) in enumerate(zip(values, inside)):
        mean_in, mean_out = value[mask].mean(), value[~mask].mean()
        if np.isclose(mean_in, mean_out, rtol=1e-9, atol=1e-12):
            continue  # no contrast, whatever the noise
        with np.errstate(divide="ignore"):
            result[row] = (mean_in - mean_out) / np.sqrt(value[mask].var() + value[~mask].var())
    return result


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Cnr(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
                                        "references": datasets.Sequence(datasets.Sequence(datasets.Value("uint8")))}),
        )

    def _compute(self, predictions, references):
        signed = _signed_cnr(*_pairs(predictions, references))
        return {"cnr": float(np.abs(signed).mean()), "signed_cnr": float(signed.mean()), "num_pairs": len(signed)}
