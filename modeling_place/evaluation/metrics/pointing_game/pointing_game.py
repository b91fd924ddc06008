"""Pointing game: the fraction of heat maps whose maximum lies inside the reference mask."""

import datasets
import evaluate
import numpy as np

from modeling_place.evaluation.functional import pointing_game

_DESCRIPTION = """Pointing-game accuracy for grounding: a hit when the arg-max pixel of the heat map (the first in
row-major order on ties) belongs to the sentence's lesion mask."""
_KWARGS = """
Args:
    predictions: per example, an H x W heat map.
    references: per example, a binary H x W mask.
Returns:
    pointing_game (float), num_examples (int).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class PointingGame(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
                                        "references": datasets.Sequence(datasets.Sequence(datasets.Value("uint8")))}),
        )

    def _compute(self, predictions, references):
        hits = [pointing_game(np.asarray(p), np.asarray(r))[0] for p, r in zip(predictions, references)]
        return {"pointing_game": float(np.mean(hits)), "num_examples": len(hits)}
