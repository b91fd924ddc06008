"""Accuracy: the fraction of predictions equal to their reference (scikit-learn's `accuracy_score`)."""

import datasets
import evaluate

from modeling_place.evaluation.functional import accuracy

_DESCRIPTION = "Accuracy of multi-class predictions: the fraction of examples whose predicted class is the reference."
_KWARGS = """
Args:
    predictions: predicted class indices.
    references: reference class indices.
Returns:
    accuracy (float in [0, 1]).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Accuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        return {"accuracy": accuracy(predictions, references)}
