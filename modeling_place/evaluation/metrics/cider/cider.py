"""CIDEr-D of coco-caption (pycocoevalcap's `Cider`): consensus-based TF-IDF n-gram similarity, x10.

Self-contained: pycocoevalcap (requirements.txt).
"""

import re

import datasets
import evaluate
from pycocoevalcap.cider.cider import Cider as CocoCider

_DESCRIPTION = """CIDEr-D (Vedantam et al. 2015) by coco-caption's `Cider` scorer (pycocoevalcap) on lower-cased word
tokens: n-grams of orders 1-4 weighted by TF-IDF (document frequencies from the references of the evaluated
corpus), clipped cosine similarity, Gaussian length penalty (sigma 6), averaged over orders and references and
multiplied by 10."""
_KWARGS = """
Args:
    predictions: generated reports.
    references: per prediction, one reference string or a list of references.
Returns:
    cider (float >= 0).
"""
_CITATION = """@inproceedings{vedantam2015cider,
  title={CIDEr: Consensus-based Image Description Evaluation}, author={Vedantam, Ramakrishna and Zitnick, C.
  Lawrence and Parikh, Devi}, booktitle={IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages={4566--4575}, year={2015}
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
class Cider(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS,
                                   features=_FEATURES)

    def _compute(self, predictions, references):
        grouped = _grouped(predictions, references)
        hypotheses = {i: [_tokens(p)] for i, p in enumerate(predictions)}
        score, _ = CocoCider().compute_score(dict(enumerate(grouped)), hypotheses)
        return {"cider": float(score)}
