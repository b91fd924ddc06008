"""Precision@K for image-to-text retrieval: the share of the K best texts that have the query's class."""

import datasets
import evaluate
import numpy as np

from modeling_place.evaluation.functional import precision_at_k

_DESCRIPTION = """Precision@K of retrieval: for each query (an image), the fraction of its K most similar candidates
(texts) whose class equals the query's class, averaged over queries (ties broken by candidate order)."""
_KWARGS = """
Args:
    predictions: per query, its similarity to every candidate (one row of the similarity matrix).
    references: per query, its class.
    candidate_labels: the class of every candidate (same order as the similarity rows).
    k: one K or a list of K values (default [1, 5, 10]).
Returns:
    precision_at_<k> for each k.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class PrecisionAtK(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("float64")),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, candidate_labels, k=(1, 5, 10)):
        ks = [k] if isinstance(k, int) else list(k)
        similarity, labels = np.asarray(predictions), np.asarray(references)
        return {f"precision_at_{n}": precision_at_k(similarity, labels, np.asarray(candidate_labels), n) for n in ks}
