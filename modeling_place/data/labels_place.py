"""Label names across chest X-ray datasets, mapped onto one canonical (CheXpert-style) vocabulary.

Every reader names its label columns with :func:`canonical_label`, so a model trained on one dataset can be
evaluated on another by column name. The canonical vocabulary is the 14 CheXpert observations plus the few
findings that some datasets label and CheXpert does not (``Emphysema``, ``Fibrosis``, ``Hernia``,
``COVID-19``, ``Foreign Object``).

Mapping choices that lose detail are deliberate and documented here:

* NIH ``Mass`` and ``Nodule`` both become ``Lung Lesion`` (CheXpert's lesion class covers both).
* NIH ``Infiltration`` becomes ``Lung Opacity`` (CheXpert's opacity class includes infiltrates).
* NIH ``Pleural_Thickening`` becomes ``Pleural Other`` (CheXpert files pleural thickening there).
* RSNA ``Target`` (the pneumonia label) becomes ``Pneumonia``; its detailed class ``Lung Opacity`` stays
  ``Lung Opacity`` and ``Normal`` becomes ``No Finding``. ``No Lung Opacity / Not Normal`` has no canonical
  counterpart and is rejected.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

CHEXPERT_LABELS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
"""The 14 CheXpert observations, in the column order of CheXpert's ``train.csv``."""

CHEXPERT_COMPETITION_TASKS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
)
"""The five CheXpert competition tasks (also the five classes of the 5x200 retrieval benchmark)."""

MGCA_UNCERTAINTY_MAP: dict[str, float] = {
    "Atelectasis": 1.0,
    "Cardiomegaly": 0.0,
    "Consolidation": 0.0,
    "Edema": 1.0,
    "Pleural Effusion": 1.0,
}
"""Per-label uncertainty policy of the CheXpert paper as used by MGCA/GLoRIA (U-Ones / U-Zeros)."""

EXTRA_LABELS: tuple[str, ...] = ("Emphysema", "Fibrosis", "Hernia", "COVID-19", "Foreign Object")
"""Canonical names for findings outside the CheXpert vocabulary."""

CANONICAL_LABELS: tuple[str, ...] = CHEXPERT_LABELS + EXTRA_LABELS

NIH_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
"""The 14 NIH ChestX-ray14 findings, spelled as in ``Data_Entry_2017.csv``."""

_IDENTITY_CHEXPERT = {name: name for name in CHEXPERT_LABELS}

_SOURCE_MAPS: dict[str, dict[str, str]] = {
    "chexpert": _IDENTITY_CHEXPERT,
    "mimic": _IDENTITY_CHEXPERT,  # the MIMIC-CXR-JPG chexpert/negbio CSVs use CheXpert names
    "synthetic": {name: name for name in CANONICAL_LABELS},  # the embedded generator speaks canonical names
    "nih": {
        "No Finding": "No Finding",
        "Atelectasis": "Atelectasis",
        "Cardiomegaly": "Cardiomegaly",
        "Effusion": "Pleural Effusion",
        "Infiltration": "Lung Opacity",
        "Infiltrate": "Lung Opacity",  # the spelling of BBox_List_2017.csv
        "Mass": "Lung Lesion",
        "Nodule": "Lung Lesion",
        "Pneumonia": "Pneumonia",
        "Pneumothorax": "Pneumothorax",
        "Consolidation": "Consolidation",
        "Edema": "Edema",
        "Emphysema": "Emphysema",
        "Fibrosis": "Fibrosis",
        "Pleural_Thickening": "Pleural Other",
        "Hernia": "Hernia",
    },
    "rsna": {
        "Target": "Pneumonia",
        "Pneumonia": "Pneumonia",
        "Lung Opacity": "Lung Opacity",
        "Normal": "No Finding",
    },
    "siim": {"Pneumothorax": "Pneumothorax", "Label": "Pneumothorax"},
    "covidx": {
        "COVID-19": "COVID-19",
        "positive": "COVID-19",
        "pneumonia": "Pneumonia",
        "normal": "No Finding",
    },
    "object-cxr": {"Foreign Object": "Foreign Object"},
}


def _normalise(name: str) -> str:
    """Case-, underscore- and whitespace-insensitive key, so ``pleural_effusion`` matches ``Pleural Effusion``."""
    return re.sub(r"[\s_]+", " ", name.strip()).casefold()


_LOOKUP: dict[str, dict[str, str]] = {
    source: {_normalise(raw): canonical for raw, canonical in mapping.items()}
    for source, mapping in _SOURCE_MAPS.items()
}


def label_sources() -> tuple[str, ...]:
    """Names of the datasets whose label vocabularies :func:`canonical_label` knows."""
    return tuple(_SOURCE_MAPS)


def source_label_map(source: str) -> Mapping[str, str]:
    """The raw-name -> canonical-name map of one source (a read-only view)."""
    _check_source(source)
    return dict(_SOURCE_MAPS[source])


def _check_source(source: str) -> None:
    if source not in _SOURCE_MAPS:
        raise ValueError(f"Unknown label source {source!r}; valid sources: {', '.join(_SOURCE_MAPS)}")


def canonical_label(name: str, source: str = "chexpert") -> str:
    """Map a dataset's label name to the canonical vocabulary.

    Args:
        name: The label as the dataset spells it (``"Effusion"``, ``"pleural_effusion"``, ``"Target"``...).
            Matching ignores case, underscores and repeated whitespace.
        source: Which dataset the name comes from; see :func:`label_sources`.

    Returns:
        The canonical name, e.g. ``canonical_label("Effusion", "nih") == "Pleural Effusion"``.

    Raises:
        ValueError: Unknown source, or a name the source does not define (the message lists the known names).
    """
    _check_source(source)
    canonical = _LOOKUP[source].get(_normalise(name))
    if canonical is None:
        known = ", ".join(sorted(_SOURCE_MAPS[source]))
        raise ValueError(f"Unknown label {name!r} for source {source!r}; known labels: {known}")
    return canonical


def is_known_label(name: str, source: str = "chexpert") -> bool:
    """Whether :func:`canonical_label` accepts ``name`` for ``source``."""
    _check_source(source)
    return _normalise(name) in _LOOKUP[source]


def canonical_labels(names: Iterable[str], source: str = "chexpert") -> list[str]:
    """Canonical names of several labels, de-duplicated in first-seen order (NIH Mass + Nodule -> one)."""
    return list(dict.fromkeys(canonical_label(name, source) for name in names))
