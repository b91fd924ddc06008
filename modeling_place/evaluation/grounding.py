"""Phrase grounding by the field's protocol (BioViL / MS-CXR): similarity maps scored against lesion masks.

A grounding pair is an image, one sentence that describes a finding in it, and the finding's mask. A *readout*
turns the pair into a map over the image (`modeling_place.evaluation.tasks.grounding_maps`); this module scores
maps, with no threshold tuned and none chosen per image:

* **CNR**, contrast-to-noise ratio: (mean inside − mean outside) / sqrt(var inside + var outside) over the
  image's pixels (signed; the protocol reports its absolute value too);
* **mIoU sweep**: the IoU of the map clamped to [0, 1] and binarised at each of 0.1, 0.2, 0.3, 0.4 and 0.5,
  averaged over the five thresholds;
* **pointing game**: a hit when the map's maximum (first in row-major order on ties) is inside the mask;
* **pixel AUROC** of the map's values against the mask (scikit-learn's `roc_auc_score`).

Every metric is computed per pair, averaged per finding, then over findings (`per_finding_mean`), so a common
finding does not outweigh a rare one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .functional import pointing_game

#: The fixed thresholds of the mIoU sweep (on maps clamped to [0, 1]).
SWEEP_THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)
#: BioViL's smoothing of cosine maps, in patches of the encoder's grid.
SMOOTHING_SIGMA = 1.5
METRICS = ("cnr", "cnr_signed", "miou_sweep", "pointing", "pixel_auroc")


def _pairs(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated `(N, H, W)` float maps and boolean masks; a mask must have pixels inside and outside."""
    maps, masks = np.asarray(maps, dtype=np.float64), np.asarray(masks).astype(bool)
    if maps.ndim == 2:
        maps, masks = maps[None], masks[None]
    if maps.shape != masks.shape or maps.ndim != 3:
        raise ValueError(f"maps {maps.shape} and masks {masks.shape} must both be (N, H, W) (or one H x W pair)")
    if not np.isfinite(maps).all():
        raise ValueError("maps hold NaN or infinite values")
    inside = masks.reshape(len(masks), -1).sum(axis=1)
    empty = np.flatnonzero((inside == 0) | (inside == masks[0].size))
    if empty.size:
        raise ValueError(f"mask {int(empty[0])} is all background or all foreground: grounding needs both")
    return maps, masks


def contrast_to_noise(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Signed CNR per pair `(N,)`: (μ_in − μ_out) / sqrt(σ²_in + σ²_out); a map equal to its mask is +inf."""
    maps, masks = _pairs(maps, masks)
    inside = masks.reshape(len(masks), -1)
    values = maps.reshape(len(maps), -1)
    n_in, n_out = inside.sum(axis=1), (~inside).sum(axis=1)
    mean_in = (values * inside).sum(axis=1) / n_in
    mean_out = (values * ~inside).sum(axis=1) / n_out
    var_in = (((values - mean_in[:, None]) ** 2) * inside).sum(axis=1) / n_in
    var_out = (((values - mean_out[:, None]) ** 2) * ~inside).sum(axis=1) / n_out
    with np.errstate(divide="ignore", invalid="ignore"):
        cnr = (mean_in - mean_out) / np.sqrt(var_in + var_out)
    return np.where(np.isclose(mean_in, mean_out, rtol=1e-9, atol=1e-12), 0.0, cnr)  # flat: no contrast


def iou_sweep(maps: np.ndarray, masks: np.ndarray, thresholds: Sequence[float] = SWEEP_THRESHOLDS) -> np.ndarray:
    """Per pair `(N,)`: the mean over `thresholds` of IoU(clamp(map, 0, 1) ≥ t, mask)."""
    maps, masks = _pairs(maps, masks)
    clamped = np.clip(maps, 0.0, 1.0)
    ious = []
    for threshold in thresholds:
        predicted = clamped >= threshold
        union = (predicted | masks).sum(axis=(1, 2))
        ious.append((predicted & masks).sum(axis=(1, 2)) / union)  # union > 0: every mask has foreground
    return np.mean(ious, axis=0)


def pixel_auroc(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per pair `(N,)`: the AUROC of the map's pixel values as scores for the mask's pixels."""
    from sklearn.metrics import roc_auc_score

    maps, masks = _pairs(maps, masks)
    return np.array([roc_auc_score(mask.ravel(), values.ravel()) for values, mask in zip(maps, masks)])


def grounding_metrics(maps: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of the protocol per pair: `{"cnr", "cnr_signed", "miou_sweep", "pointing", "pixel_auroc"}`."""
    maps, masks = _pairs(maps, masks)
    signed = contrast_to_noise(maps, masks)
    return {"cnr": np.abs(signed), "cnr_signed": signed, "miou_sweep": iou_sweep(maps, masks),
            "pointing": pointing_game(maps, masks).astype(np.float64), "pixel_auroc": pixel_auroc(maps, masks)}


def per_finding_mean(values: Mapping[str, np.ndarray], findings: Sequence[str]) -> dict:
    """Mean of each metric per finding, then the mean over findings: `{"by_finding": {f: {m: v}}, m: v, ...}`."""
    findings = np.asarray(findings)
    names = sorted(set(findings.tolist()))
    by_finding = {name: {metric: float(np.mean(v[findings == name])) for metric, v in values.items()}
                  for name in names}
    overall = {metric: float(np.mean([by_finding[name][metric] for name in names])) for metric in values}
    return {**overall, "by_finding": by_finding, "pairs": int(len(findings))}


def smooth_grid(grids: np.ndarray, sigma: float = SMOOTHING_SIGMA) -> np.ndarray:
    """Gaussian smoothing of `(N, g, g)` patch-grid maps, `sigma` in patches (BioViL's post-processing)."""
    from scipy.ndimage import gaussian_filter

    # scipy's default boundary ("reflect"), as BioViL's own smoothing of its similarity maps
    return gaussian_filter(np.asarray(grids, dtype=np.float64), sigma=(0, sigma, sigma), mode="reflect")


def location_prior(masks: np.ndarray, findings: Sequence[str]) -> dict[str, np.ndarray]:
    """The sentence-blind baseline: the mean mask of each finding (`"*"`: of every pair), values in [0, 1]."""
    masks, findings = np.asarray(masks, dtype=np.float64), np.asarray(findings)
    priors = {name: masks[findings == name].mean(axis=0) for name in sorted(set(findings.tolist()))}
    return {**priors, "*": masks.mean(axis=0)}


__all__ = [
    "METRICS",
    "SMOOTHING_SIGMA",
    "SWEEP_THRESHOLDS",
    "contrast_to_noise",
    "grounding_metrics",
    "iou_sweep",
    "location_prior",
    "per_finding_mean",
    "pixel_auroc",
    "smooth_grid",
]
