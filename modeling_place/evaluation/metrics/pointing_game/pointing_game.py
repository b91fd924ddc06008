"""Pointing game: the fraction of heat maps whose maximum lies inside the reference mask.

Self-contained: numpy only (the definition; no library implements it).
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """Pointing-game accuracy for grounding: a hit when the arg-max pixel of the heat map (the first in
row-major order on ties) belongs to the sentence's lesion mask."""
_KWARGS = """
Args:
    predictions: per example, an H x W heat map (finite values).
    references: per example, a binary H x W mask.
Returns:
    pointing_game (float), num_examples (int).
"""
_CITATION = """@article{zhang2018pointing,
  title={Top-Down Neural Attention by Excitation Backprop}, author={Zhang, Jianming and Bargal, Sarah Adel and
  Lin, Zhe and Brandt, Jonathan and Shen, Xiaohui and Sclaroff, Stan},
  journal={International Journal of Computer Vision}, volume={126}, pages={1084--1102}, year={2018}
}"""


def _hit(prediction, reference, index: int) -> float:
    values, mask = np.asarray(prediction, dtype=np.float64), np.asarray(reference)
    if values.shape != mask.shape:
        raise ValueError(f"pair {index}: prediction {values.shape} and reference {mask.shape} differ in shape")
    if not np.isfinite(values).all():
        raise ValueError(f"pair {index}: the map holds NaN or infinite values")  # argmax of NaN is meaningless
    if np.setdiff1d(np.unique(mask), [0, 1]).size:
        raise ValueError(f"pair {index}: references must be binary masks (0/1)")
    return float(mask.ravel()[int(values.argmax())] == 1)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class PointingGame(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
                                        "references": datasets.Sequence(datasets.Sequence(datasets.Value("uint8")))}),
        )

    def _compute(self, predictions, references):
        hits = [_hit(p, r, index) for index, (p, r) in enumerate(zip(predictions, references))]
        return {"pointing_game": float(np.mean(hits)), "num_examples": len(hits)}
