"""CIDEr-D of coco-caption: consensus-based TF-IDF n-gram similarity, ×10."""

import evaluate

from modeling_place.evaluation.functional import cider_d
from modeling_place.evaluation.metric_features import report_features

_DESCRIPTION = """CIDEr-D (Vedantam et al. 2015) as coco-caption's `Cider` scorer: n-grams of orders 1-4 weighted
by TF-IDF (document frequencies from the references of the evaluated corpus), clipped cosine similarity,
Gaussian length penalty (sigma 6), averaged over orders and references and multiplied by 10."""
_KWARGS = """
Args:
    predictions: generated reports.
    references: per prediction, one reference string or a list of references.
Returns:
    cider (float >= 0).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Cider(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=report_features(),
        )

    def _compute(self, predictions, references):
        return {"cider": cider_d(predictions, references)}
