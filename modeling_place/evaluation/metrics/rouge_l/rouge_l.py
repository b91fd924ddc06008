"""ROUGE-L: mean sentence-level longest-common-subsequence F-measure."""

import evaluate

from modeling_place.evaluation.functional import rouge_l
from modeling_place.evaluation.metric_features import report_features

_DESCRIPTION = """ROUGE-L F-measure per prediction, averaged. With `beta=1` (default) it equals the `rougeL`
F1 of Google's rouge-score on the same tokens; `beta=1.2` gives coco-caption's ROUGE_L (used by most report
generation papers). With several references, precision and recall are each maximised over them."""
_KWARGS = """
Args:
    predictions: generated reports.
    references: per prediction, one reference string or a list of references.
    beta: recall weight of the F-measure (default 1.0).
Returns:
    rouge_l (float in [0, 1]).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class RougeL(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=report_features(),
        )

    def _compute(self, predictions, references, beta=1.0):
        return {"rouge_l": rouge_l(predictions, references, beta)}
