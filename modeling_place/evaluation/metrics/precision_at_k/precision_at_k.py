"""Precision@K for image-to-text retrieval: the share of the K best texts that have the query's class.

Self-contained: numpy only (the definition).
"""

import datasets
import evaluate
import numpy as np

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
_CITATION = """@inproceedings{huang2021gloria,
  title={GLoRIA: A Multimodal Global-Local Representation Learning Framework for Label-efficient Medical Image
  Recognition}, author={Huang, Shih-Cheng and Shen, Liyue and Lungren, Matthew P. and Yeung, Serena},
  booktitle={IEEE/CVF International Conference on Computer Vision (ICCV)}, pages={3942--3951}, year={2021}
}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class PrecisionAtK(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("float64")),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, candidate_labels, k=(1, 5, 10)):
        similarity, labels = np.asarray(predictions, dtype=np.float64), np.asarray(references)
        candidates = np.asarray(candidate_labels)
        if similarity.shape != (len(labels), len(candidates)):
            raise ValueError(f"predictions must be (queries, candidates) = ({len(labels)}, {len(candidates)}), "
                             f"got {similarity.shape}")
        if not np.isfinite(similarity).all():
            raise ValueError("predictions hold NaN or infinite similarities")
        ks = [k] if isinstance(k, int) else list(k)
        if not all(1 <= n <= len(candidates) for n in ks):
            raise ValueError(f"every k must lie in [1, {len(candidates)}], got {ks}")
        ranking = np.argsort(-similarity, axis=1, kind="stable")  # stable: ties keep candidate order
        relevant = candidates[ranking] == labels[:, None]
        return {f"precision_at_{n}": float(relevant[:, :n].mean()) for n in ks}
