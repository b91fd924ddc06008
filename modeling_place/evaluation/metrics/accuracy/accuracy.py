"""Accuracy: the fraction of predictions equal to their reference (scikit-learn's `accuracy_score`).

Self-contained: imports only pip-installable libraries (requirements.txt).
"""

import datasets
import evaluate
from sklearn.metrics import accuracy_score

_DESCRIPTION = "Accuracy of multi-class predictions: the fraction of examples whose predicted class is the reference."
_KWARGS = """
Args:
    predictions: predicted class indices.
    references: reference class indices.
Returns:
    accuracy (float in [0, 1]).
"""
_CITATION = """@article{pedregosa2011sklearn,
  title={Scikit-learn: Machine Learning in {P}ython}, author={Pedregosa, F. and others},
  journal={Journal of Machine Learning Research}, volume={12}, pages={2825--2830}, year={2011}
}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Accuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        if len(predictions) == 0:
            raise ValueError("accuracy of an empty set is undefined")
        return {"accuracy": float(accuracy_score(references, predictions))}
