"""AUROC: macro mean over labels of the per-label ROC AUC; labels without both classes are skipped."""

import datasets
import evaluate
import numpy as np

from modeling_place.evaluation.functional import multilabel_auroc

_DESCRIPTION = """Macro AUROC for multi-label (or binary) classification, as scikit-learn's `roc_auc_score`
per label. A label whose references hold no positive (or no negative) has no AUROC: it is left out of the
mean and named in `skipped_labels`."""
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


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Auroc(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=[
                datasets.Features({"predictions": datasets.Sequence(datasets.Value("float64")),
                                   "references": datasets.Sequence(datasets.Value("int32"))}),
                datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("int32")}),
            ],
        )

    def _compute(self, predictions, references, label_names=None):
        return multilabel_auroc(np.asarray(predictions), np.asarray(references), label_names)
