"""Corpus BLEU-1..4 on the package's report tokenisation (lower-case words, punctuation dropped)."""

import evaluate

from modeling_place.evaluation.functional import corpus_bleu
from modeling_place.evaluation.metric_features import report_features

_DESCRIPTION = """Corpus-level BLEU-1 to BLEU-4 (Papineni et al. 2002): clipped n-gram precisions of orders 1..n,
geometric mean, brevity penalty against the closest reference length, no smoothing. Equal to
`sacrebleu.corpus_bleu` with `tokenize="none"` on the same tokens, and to coco-caption's BLEU up to its 1e-9
smoothing. Scores lie in [0, 1]."""
_KWARGS = """
Args:
    predictions: generated reports.
    references: per prediction, one reference string or a list of references.
    max_order: highest n-gram order (default 4).
Returns:
    bleu_1 ... bleu_<max_order>.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Bleu(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=report_features(),
        )

    def _compute(self, predictions, references, max_order=4):
        return corpus_bleu(predictions, references, max_order)
