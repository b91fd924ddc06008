"""AUROC: macro mean over labels of scikit-learn's `roc_auc_score`; labels without both classes are skipped.

Self-contained: imports only pip-installable libraries (requirements.txt), so `evaluate.load(folder)` works
without the PLACE package.
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import roc_auc_score

_DESCRIPTION = """Macro AUROC for multi-label (or binary) classification: scikit-learn's `roc_auc_score` per label,
averaged. A label whose references hold no positive (or no negative) has no AUROC: it is left out of the mean
and named in `skipped_labels`. References must be 0 or 1: map uncertain labels (CheXpert's -1) to 0 or 1, or
drop them, before calling; scores must be finite."""
_KWARGS = """
Args:
    predictions: per example, one score per label (a float for a single label).
    references: per example, one 0/1 per label.
    label_names: optional names for `per_label` and `skipped_labels`.
Returns:
    auroc (float, nan when every label is skipped), per_label (dict), skipped_labels (list).
Example:
    >>> auroc = evaluate.load("modeling_place/evaluation/metrics/auroc")
    >>> auroc.compute(predictions=[[0.9, 0.2], [0.1, 0.3]], references=[[1, 0], [0, 0]])["skipped_labels"]
    ['1']
"""
_CITATION = """@article{hanley1982auc,
  title={The meaning and use of the area under a receiver operating characteristic (ROC) curve},
  author={Hanley, James A. and McNeil, Barbara J.}, journal={Radiology}, volume={143}, number={1},
  pages={29--36}, year={1982}
}
@article{pedregosa2011sklearn,
  title={Scikit-learn: Machine Learning in {P}ython}, author={Pedregosa, F. and others},
  journal={Journal of Machine Learning Research}, volume={12}, pages={2825--2830}, year={2011}
}"""


def _checked(predictions, references) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) float scores and int labels; ValueError on NaN/inf scores or labels outside {0, 1}."""
    scores, labels = np.asarray(predictions, dtype=np.float64), np.asarray(references)
    if scores.ndim == 1:
        scores, labels = scores[:, None], labels[:, None]
    if scores.shape != labels.shape:
        raise ValueError(f"predictions {scores.shape} and references {labels.shape} must have the same shape")
    if not np.isfinite(scores).all():
        raise ValueError("predictions hold NaN or infinite scores")
    outside = np.setdiff1d(np.unique(labels), [0, 1])
    if outside.size:
        raise ValueError(f"references must be 0 or 1, got {outside.tolist()} (map uncertain labels such as "
                         "CheXpert's -1 to 0 or 1 first)")
    return scores, labels.astype(np.int64)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Auroc(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS,
            features=[
                datasets.Features({"predictions": datasets.Sequence(datasets.Value("float64")),
                                   "references": datasets.Sequence(datasets.Value("int32"))}),
                datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("int32")}),
            ],
        )

    def _compute(self, predictions, references, label_names=None):
        scores, labels = _checked(predictions, references)
        names = [str(i) for i in range(scores.shape[1])] if label_names is None else list(label_names)
        per_label, skipped = {}, []
        for column, name in enumerate(names):
            if len(np.unique(labels[:, column])) < 2:
                skipped.append(name)  # AUROC is undefined without both classes
            else:
                per_label[name] = float(roc_auc_score(labels[:, column], scores[:, column]))
        macro = float(np.mean(list(per_label.values()))) if per_label else float("nan")
        return {"auroc": macro, "per_label": per_label, "skipped_labels": skipped}
