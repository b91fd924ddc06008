"""ROUGE-L: mean sentence-level longest-common-subsequence F-measure, by rouge-score or coco-caption.

Self-contained: rouge-score and pycocoevalcap (requirements.txt).
"""

import re

import datasets
import evaluate
import numpy as np
from pycocoevalcap.rouge.rouge import Rouge
from rouge_score import rouge_scorer

_DESCRIPTION = """ROUGE-L F-measure per prediction, averaged, on lower-cased word tokens. `beta=1` (default) is
Google's rouge-score `rougeL` F1 (with several references, the best F1 over them); `beta=1.2` is coco-caption's
ROUGE_L (pycocoevalcap; most report-generation papers), which maximises precision and recall separately over
the references."""
_KWARGS = """
Args:
    predictions: generated reports.
    references: per prediction, one reference string or a list of references.
    beta: 1.0 (rouge-score) or 1.2 (coco-caption).
Returns:
    rouge_l (float in [0, 1]).
"""
_CITATION = """@inproceedings{lin2004rouge,
  title={ROUGE: A Package for Automatic Evaluation of Summaries}, author={Lin, Chin-Yew},
  booktitle={Text Summarization Branches Out (ACL workshop)}, pages={74--81}, year={2004}
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


class _Tokens:
    """rouge-score's tokenizer interface over the already tokenised, space-joined text."""

    def tokenize(self, text: str) -> list[str]:
        return text.split()


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class RougeL(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS,
                                   features=_FEATURES)

    def _compute(self, predictions, references, beta=1.0):
        grouped = _grouped(predictions, references)
        hypotheses = [_tokens(p) for p in predictions]
        if beta == 1.2:
            score, _ = Rouge().compute_score(dict(enumerate(grouped)), {i: [h] for i, h in enumerate(hypotheses)})
            return {"rouge_l": float(score)}
        if beta != 1.0:
            raise ValueError(f"beta must be 1.0 (rouge-score) or 1.2 (coco-caption), got {beta}")
        scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Tokens())
        scores = [scorer.score_multi(refs, hypothesis)["rougeL"].fmeasure
                  for refs, hypothesis in zip(grouped, hypotheses)]
        return {"rouge_l": float(np.mean(scores))}
