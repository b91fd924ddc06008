"""`datasets.Features` shared by the local `evaluate` metric modules (one spec per input kind)."""

from __future__ import annotations

import datasets


def report_features() -> list[datasets.Features]:
    """Generated reports against one reference string, or a list of references, per prediction."""
    string = datasets.Value("string")
    return [
        datasets.Features({"predictions": string, "references": datasets.Sequence(string)}),
        datasets.Features({"predictions": string, "references": string}),
    ]
