"""PLACE evaluation: metrics (numpy functions + local `evaluate` modules), task protocols and post-processing.

* `modeling_place.evaluation.functional`: the metric implementations (AUROC, accuracy, Dice, mAP, BLEU, ROUGE-L, CIDEr,
  Precision@K, pointing game, mIoU), each reproducing an established implementation.
* `load_metric(name)`: the same metrics as `evaluate` modules shipped in `modeling_place/evaluation/metrics/<name>/`
  (the Hub's metric scripts cannot be downloaded offline). Each module is self-contained: it imports only the
  pip-installable libraries in its `requirements.txt` (never this package) and calls scikit-learn, pycocotools,
  sacrebleu, rouge-score or pycocoevalcap where they implement the metric, so a copied folder loads with
  `evaluate.load(folder)` anywhere.
* `modeling_place.evaluation.tasks`: zero-shot classification, image-to-text retrieval and grounding with a `PlaceModel`.
* `modeling_place.processing.postprocessing_place`: post-processing inherited by `PlaceImageProcessor`, with the
  post-processing methods the segmentation and detection pipelines call.
"""

from __future__ import annotations

from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent / "metrics"
METRIC_NAMES = tuple(sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file()))


def metric_path(name: str) -> str:
    """Folder of the local `evaluate` module `name` (pass it to `evaluate.load`)."""
    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown PLACE metric {name!r}; available: {list(METRIC_NAMES)}")
    return str(METRICS_DIR / name)


def load_metric(name: str, **kwargs):
    """`evaluate.load` of a metric shipped with the package, e.g. `load_metric("auroc")`."""
    import evaluate

    return evaluate.load(metric_path(name), **kwargs)


__all__ = ["METRICS_DIR", "METRIC_NAMES", "load_metric", "metric_path"]
