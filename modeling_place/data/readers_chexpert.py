"""CheXpert readers: ``train.csv``/``valid.csv`` with either path prefix, and the 5x200 sampler.

Layout (Stanford AIMI full release or the Kaggle ``CheXpert-v1.0-small`` mirror)::

    ROOT/CheXpert-v1.0-small/train.csv          (or ROOT/train.csv, or CheXpert-v1.0/...)
    ROOT/CheXpert-v1.0-small/valid.csv
    ROOT/CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg

``Path`` in the CSVs starts with ``CheXpert-v1.0-small/`` or ``CheXpert-v1.0/``; images are found whichever
prefix the CSV uses and whichever folder name the images sit in.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from .labels_place import CHEXPERT_COMPETITION_TASKS, CHEXPERT_LABELS
from .readers_common import (
    BadRows,
    PathLike,
    RowRule,
    apply_uncertainty,
    check_images,
    find_first_file,
    label_rules,
    numeric_columns,
    read_csv_table,
    require_columns,
    rule_in_set,
    rule_not_blank,
    rule_number,
    strip_prefix_component,
    to_dataset_dict,
    validate_rows,
)

CHEXPERT_PREFIXES = ("CheXpert-v1.0-small", "CheXpert-v1.0")
CHEXPERT_VALID_NUM = 5000
_META_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")


def chexpert_rules() -> list[RowRule]:
    """``train.csv``/``valid.csv`` rules: a ``Path``, ``Frontal/Lateral`` in Frontal/Lateral, ``Age`` a number in
    [0, 120] (blank allowed), the 14 labels in 1.0 / 0.0 / -1.0 / blank."""
    return [
        rule_not_blank("Path"),
        rule_in_set("Frontal/Lateral", ("Frontal", "Lateral")),
        rule_number("Age", 0, 120, blank_ok=True),
        *label_rules(CHEXPERT_LABELS),
    ]


def find_chexpert_csv(root: PathLike, name: str) -> Path:
    """``train.csv``/``valid.csv`` in ``root`` or in ``root/CheXpert-v1.0-small`` / ``root/CheXpert-v1.0``."""
    root = Path(root)
    candidates = [root / name] + [root / prefix / name for prefix in CHEXPERT_PREFIXES]
    return find_first_file(candidates, f"CheXpert {name}")


def _path_resolvers(csv_path: Path) -> list[Callable[[str], Path]]:
    """Ways a CSV ``Path`` can map to a file: as given from the CSV's parent, or prefix-stripped from its folder."""
    folder = csv_path.parent
    return [lambda p: folder.parent / p, lambda p: folder / strip_prefix_component(p), lambda p: folder / p]


def resolve_chexpert_paths(relative_paths: pd.Series, csv_path: Path, check: bool) -> list[str]:
    """Absolute image paths for CSV ``Path`` values, choosing the resolver under which the first image exists.

    Without ``check`` (``missing_images="ignore"``) the prefix-stripped form next to the CSV is used.
    """
    resolvers = _path_resolvers(csv_path)
    chosen = resolvers[1]
    if check and len(relative_paths):
        first = relative_paths.iloc[0]
        existing = [resolver for resolver in resolvers if resolver(first).is_file()]
        if not existing:
            tried = " or ".join(str(resolver(first).resolve()) for resolver in resolvers)
            raise FileNotFoundError(f"CheXpert image listed in {csv_path} not found: expected {tried}")
        chosen = existing[0]
    return [str(chosen(p)) for p in relative_paths]


def _read_chexpert_csv(path: Path, missing_images: str, bad_rows: BadRows) -> pd.DataFrame:
    """One CheXpert CSV as a table with ``image_path``, IDs and the raw (validated, unresolved) labels."""
    frame = read_csv_table(path, string_columns=["Path"])
    require_columns(frame, [*_META_COLUMNS, *CHEXPERT_LABELS], path)
    frame = numeric_columns(validate_rows(frame, chexpert_rules(), path, bad_rows), CHEXPERT_LABELS)
    frame["image_path"] = resolve_chexpert_paths(frame["Path"], path, check=missing_images != "ignore")
    frame["image_id"] = [strip_prefix_component(p) for p in frame["Path"]]
    frame["patient_id"] = [_match(r"patient\d+", p) for p in frame["Path"]]
    frame["study_id"] = [_match(r"patient\d+/study\d+", p) for p in frame["Path"]]
    is_frontal = frame["Frontal/Lateral"] == "Frontal"
    frame["view"] = np.where(is_frontal, frame["AP/PA"].fillna("").astype(str), "LATERAL")
    return frame.rename(columns={"Sex": "sex", "Age": "age"})


def _match(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    return found.group(0) if found else ""


def _output_columns(extra: tuple[str, ...] = ()) -> list[str]:
    base = ["image_path", "image_id", "patient_id", "study_id", "view", "sex", "age"]
    return [*base, *CHEXPERT_LABELS, *extra, "split"]


def read_chexpert(
    root: PathLike,
    *,
    uncertainty: str | Mapping[str, float] = "zeros",
    frontal_only: bool = True,
    split_scheme: str = "holdout",
    holdout_size: int = CHEXPERT_VALID_NUM,
    seed: int = 0,
    missing_images: str = "error",
    skip_bad_rows: bool = False,
):
    """Read CheXpert with an uncertainty policy and the MGCA/GLoRIA split.

    Args:
        root: Folder holding ``train.csv``/``valid.csv`` (directly or inside a ``CheXpert-v1.0*`` folder).
        uncertainty: ``"ones"`` (U-Ones), ``"zeros"`` (U-Zeros), ``"mgca"`` (per-label map of the CheXpert
            paper for the 5 competition tasks), ``"keep"`` or a dict; blanks become 0.
        frontal_only: Keep frontal images only (as MGCA/GLoRIA do).
        split_scheme: ``"holdout"``: ``holdout_size`` train images (pandas ``sample(random_state=seed)``) are the
            validation split and ``valid.csv`` is the test split (MGCA/GLoRIA practice). ``"official"``:
            ``train.csv`` = train, ``valid.csv`` = validation.
        holdout_size: Images held out of ``train.csv`` (5,000 in MGCA/GLoRIA).
        seed: Sampling seed.
        missing_images: ``"error"``, ``"drop"`` or ``"ignore"``.
        skip_bad_rows: Skip rows breaking :func:`chexpert_rules` (counted) instead of raising
            :class:`DatasetFormatError`.
    """
    if split_scheme not in ("holdout", "official"):
        raise ValueError(f"split_scheme must be 'holdout' or 'official', got {split_scheme!r}")
    train_path, valid_path = find_chexpert_csv(root, "train.csv"), find_chexpert_csv(root, "valid.csv")
    bad_rows = BadRows(skip_bad_rows)
    train, valid = (_read_chexpert_csv(path, missing_images, bad_rows) for path in (train_path, valid_path))
    if frontal_only:
        train, valid = (t.loc[t["Frontal/Lateral"] == "Frontal"].reset_index(drop=True) for t in (train, valid))
    train["split"] = "train"
    valid["split"] = "validation"
    if split_scheme == "holdout":
        if not 0 < holdout_size < len(train):
            raise ValueError(
                f"holdout_size={holdout_size} must be between 1 and {len(train) - 1} (rows of {train_path})"
            )
        held_out = train.sample(n=holdout_size, random_state=seed).index
        train.loc[held_out, "split"] = "validation"
        valid["split"] = "test"
    frame = pd.concat([train, valid], ignore_index=True)
    frame = apply_uncertainty(frame, CHEXPERT_LABELS, uncertainty)
    frame = check_images(frame, missing_images, train_path.parent)
    return to_dataset_dict(frame[_output_columns()], bad_rows=bad_rows, source=str(train_path.parent))


def sample_chexpert_5x200(frame: pd.DataFrame, per_class: int = 200, seed: int = 0) -> pd.DataFrame:
    """MGCA/GLoRIA 5x200 recipe on a raw CheXpert table (NaN -> 0 first, frontal only).

    For each competition task in order: images positive for that task and exactly 0 for the other 12 labels
    (``No Finding`` ignored; uncertain -1 therefore excludes an image), then ``sample(n=per_class,
    random_state=seed)``. Adds ``label`` (task index) and ``label_name``.
    """
    frame = frame.loc[frame["Frontal/Lateral"] == "Frontal"].copy()
    frame[list(CHEXPERT_LABELS)] = frame[list(CHEXPERT_LABELS)].fillna(0)
    considered = [label for label in CHEXPERT_LABELS if label != "No Finding"]
    parts = []
    for index, task in enumerate(CHEXPERT_COMPETITION_TASKS):
        wanted = pd.Series(0.0, index=considered)
        wanted[task] = 1.0
        candidates = frame.loc[(frame[considered] == wanted).all(axis=1)]
        if len(candidates) < per_class:
            raise ValueError(f"5x200: only {len(candidates)} images qualify for {task!r}, {per_class} requested")
        sampled = candidates.sample(n=per_class, random_state=seed)
        parts.append(sampled.assign(label=index, label_name=task))
    return pd.concat(parts, ignore_index=True)


def read_chexpert_5x200(
    root: PathLike, *, per_class: int = 200, seed: int = 0, missing_images: str = "error", skip_bad_rows: bool = False
):
    """The CheXpert 5x200 zero-shot/retrieval set, built from ``train.csv`` (one ``test`` split).

    Labels are the raw values after NaN -> 0 (the recipe keeps only clean single-positive images, so no
    uncertainty policy is needed); ``label`` is a ``ClassLabel`` over the five competition tasks.
    """
    train_path = find_chexpert_csv(root, "train.csv")
    bad_rows = BadRows(skip_bad_rows)
    sampled = sample_chexpert_5x200(_read_chexpert_csv(train_path, missing_images, bad_rows), per_class, seed)
    sampled = apply_uncertainty(sampled, CHEXPERT_LABELS, "keep")
    sampled["split"] = "test"
    sampled = check_images(sampled, missing_images, train_path)
    columns = _output_columns(("label", "label_name"))
    return to_dataset_dict(
        sampled[columns], label_names=CHEXPERT_COMPETITION_TASKS, bad_rows=bad_rows, source=str(train_path)
    )
