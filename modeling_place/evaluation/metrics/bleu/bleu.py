"""Corpus BLEU-1..4 by sacrebleu on the package's report tokenisation (lower-case words, punctuation dropped).

Self-contained: sacrebleu only (requirements.txt).
"""

import re

import datasets
import evaluate
from sacrebleu.metrics import BLEU

_DESCRIPTION = """Corpus-level BLEU-1 to BLEU-4 (Papineni et al. 2002) by `sacrebleu` with `tokenize="none"`,
`smooth_method="none"` on lower-cased word tokens: clipped n-gram precisions of orders 1..n, geometric mean,
brevity penalty against the closest reference length. Equal to coco-caption's BLEU up to its 1e-9 smoothing.
Scores lie in [0, 1] (sacrebleu's / 100)."""
_KWARGS = """
Args:
    predictions: generated reports.
    references: per prediction, one reference string or a list of references.
    max_order: highest n-gram order (default 4).
Returns:
    bleu_1 ... bleu_<max_order>.
"""
_CITATION = """@inproceedings{papineni2002bleu,
  title={BLEU: a Method for Automatic Evaluation of Machine Translation}, author={Papineni, Kishore and Roukos,
  Salim and Ward, Todd and Zhu, Wei-Jing}, booktitle={Proceedings of ACL}, pages={311--318}, year={2002}
}
@inproceedings{post2018sacrebleu,
  title={A Call for Clarity in Reporting {BLEU} Scores}, author={Post, Matt},
  booktitle={Proceedings of the Third Conference on Machine Translation}, pages={186--191}, year={2018}
}"""
_TOKEN = re.compile(r"[a-z0-9]+")
_STRING = datasets.Value("string")
# one reference string, or a list of references, per prediction
_FEATURES = [datasets.Features({"predictions": _STRING, "references": datasets.Sequence(_STRING)}),
             datasets.Features({"predictions": _STRING, "references": _STRING})]


def _tokens(text: str) -> str:
    """The package's report tokenisation: lower-case words and numbers, punctuation dropped, space-joined."""
    if not isinstance(text, str):
        raise TypeError(f"text metrics need strings, got {type(text).__name__}")
    return " ".join(_TOKEN.findall(text.lower()))


def _grouped(predictions, references) -> list[list[str]]:
    """One list of tokenised references per prediction (a bare string is one reference)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference entries")
    grouped = [[_tokens(ref)] if isinstance(ref, str) else [_tokens(r) for r in ref] for ref in references]
    if any(not refs for refs in grouped):
        raise ValueError("every prediction needs at least one reference")
    return grouped


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Bleu(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS,
                                   features=_FEATURES)

    def _compute(self, predictions, references, max_order=4):
        grouped = _grouped(predictions, references)
        hypotheses = [_tokens(p) for p in predictions]
        # sacrebleu reads references as streams (the i-th reference of every prediction); None pads the short ones
        streams = [[refs[i] if i < len(refs) else None for refs in grouped] for i in range(max(map(len, grouped)))]
        scores = {}
        for order in range(1, max_order + 1):
            scorer = BLEU(tokenize="none", smooth_method="none", max_ngram_order=order, force=True)
            scores[f"bleu_{order}"] = scorer.corpus_score(hypotheses, streams).score / 100
        return scores
