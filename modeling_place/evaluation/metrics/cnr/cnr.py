"""Contrast-to-noise ratio of grounding maps against lesion masks (threshold-free; BioViL / MS-CXR)."""

import datasets
import evaluate
import numpy as np

from modeling_place.evaluation.grounding import contrast_to_noise

_DESCRIPTION = """Per pair, |mean inside - mean outside| / sqrt(var inside + var outside) of the map's pixels against
the mask; averaged over pairs. `signed_cnr` keeps the sign (negative: the map is lower on the lesion)."""
_KWARGS = """
Args:
    predictions: per pair, an H x W map (any real values: cosine maps, attention maps, priors).
    references: per pair, a binary H x W mask with pixels inside and outside.
Returns:
    cnr (float), signed_cnr (float), num_pairs (int).
"""
_CITATION = """@inproceedings{boecking2022biovil,
  title={Making the Most of Text Semantics to Improve Biomedical Vision-Language Processing},
  author={Boecking, Benedikt and Usuyama, Naoto and Bannur, Shruthi and others},
  booktitle={ECCV}, year={2022}
}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Cnr(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
                                        "references": datasets.Sequence(datasets.Sequence(datasets.Value("uint8")))}),
        )

    def _compute(self, predictions, references):
        signed = contrast_to_noise(np.asarray(predictions), np.asarray(references))
        return {"cnr": float(np.abs(signed).mean()), "signed_cnr": float(signed.mean()), "num_pairs": len(signed)}
