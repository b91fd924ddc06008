"""RSNA Pneumonia Detection Challenge reader (Kaggle ``rsna-pneumonia-detection-challenge``).

Layout::

    ROOT/stage_2_train_labels.csv           patientId, x, y, width, height, Target   (one row per box)
    ROOT/stage_2_detailed_class_info.csv    patientId, class                         (optional)
    ROOT/stage_2_train_images/<patientId>.dcm   (or converted .png/.jpg, e.g. via image_dir=...)
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .readers_common import (
    BadRows,
    PathLike,
    RowRule,
    check_images,
    find_first_file,
    read_csv_table,
    numeric,
    require_columns,
    rule_blank_when,
    rule_in_set,
    rule_not_blank,
    rule_number,
    three_way_split,
    to_dataset_dict,
    validate_rows,
)

RSNA_LABEL_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")
RSNA_IMAGE_DIRS = ("stage_2_train_images", "stage_2_train_images_png", "stage_2_train_images_jpg", "images")
RSNA_IMAGE_SUFFIXES = (".dcm", ".png", ".jpg")
_SPLIT_SCHEMES = {"mgca-classification": 0.3, "mgca-detection": 5337 * 2}
RSNA_IMAGE_SIZE = 1024  # every stage-2 training DICOM is 1024 x 1024; boxes are in its pixels


def _positive(frame: pd.DataFrame) -> pd.Series:
    return numeric(frame["Target"]) == 1


def _negative(frame: pd.DataFrame) -> pd.Series:
    return numeric(frame["Target"]) == 0


def _box_end_rule(start: str, extent: str) -> RowRule:
    """``start + extent`` must stay inside the 1024-pixel image (rows with Target = 1)."""
    def is_bad(frame: pd.DataFrame) -> pd.Series:
        return _positive(frame) & (numeric(frame[start]) + numeric(frame[extent]) > RSNA_IMAGE_SIZE)

    def explain(value) -> str:
        return f"box {start} + {extent} ends past the {RSNA_IMAGE_SIZE}-pixel image ({extent} = {value!r})"

    return RowRule(extent, f"inside the {RSNA_IMAGE_SIZE}-pixel image", is_bad, explain)


def rsna_label_rules() -> list[RowRule]:
    """``stage_2_train_labels.csv`` rules: ``Target`` 0/1; a positive row has a box inside the image, a negative
    row has none (the official file leaves the four box fields blank when ``Target = 0``)."""
    rules = [rule_not_blank("patientId"), rule_number("Target", allowed=(0, 1))]
    for start, extent in (("x", "width"), ("y", "height")):
        rules += [
            rule_number(start, 0, RSNA_IMAGE_SIZE, when=_positive),
            rule_number(extent, 1, RSNA_IMAGE_SIZE, when=_positive),
            _box_end_rule(start, extent),
        ]
    rules += [rule_blank_when(c, _negative, "Target = 0") for c in ("x", "y", "width", "height")]
    return rules


RSNA_CLASSES = ("Lung Opacity", "No Lung Opacity / Not Normal", "Normal")


def aggregate_rsna_boxes(labels: pd.DataFrame) -> pd.DataFrame:
    """One row per patient (sorted by ``patientId``, as pandas' groupby does in MGCA) with its boxes.

    Boxes are ``[x, y, x + width, y + height]`` in pixels of the 1024x1024 image; a patient with
    ``Target = 0`` has no boxes. ``Pneumonia`` is 1.0 when any row of the patient has ``Target = 1``.
    """
    positive = numeric(labels["Target"]) == 1
    x, y, width, height = (numeric(labels[c]) for c in ("x", "y", "width", "height"))
    corners = np.stack([x, y, x + width, y + height], axis=1).astype(np.float32)
    labels = labels.assign(box=[row.tolist() if keep else None for row, keep in zip(corners, positive)])
    grouped = labels.groupby("patientId", sort=True)
    boxes = grouped["box"].agg(lambda values: [box for box in values if box is not None])
    target = grouped["Target"].agg(lambda values: numeric(values).max()).astype(np.float32)
    return pd.DataFrame({"patientId": boxes.index, "boxes": boxes.to_numpy(), "Pneumonia": target.to_numpy()})


def _image_locator(root: Path, image_dir: PathLike | None, first_id: str) -> tuple[Path, str]:
    """The image folder and file suffix, found by looking for the first patient's image."""
    folders = [Path(image_dir)] if image_dir is not None else [root / name for name in RSNA_IMAGE_DIRS]
    candidates = [folder / f"{first_id}{suffix}" for folder in folders for suffix in RSNA_IMAGE_SUFFIXES]
    found = find_first_file(candidates, f"RSNA image of patient {first_id}")
    return found.parent, found.suffix


def _attach_classes(frame: pd.DataFrame, root: Path, bad_rows: BadRows) -> pd.DataFrame:
    """Add the detailed ``class`` column when ``stage_2_detailed_class_info.csv`` is present."""
    path = root / "stage_2_detailed_class_info.csv"
    if not path.is_file():
        return frame
    classes = read_csv_table(path, string_columns=["patientId", "class"])
    require_columns(classes, ["patientId", "class"], path)
    classes = validate_rows(classes, [rule_not_blank("patientId"), rule_in_set("class", RSNA_CLASSES)], path, bad_rows)
    return frame.merge(classes.drop_duplicates("patientId"), on="patientId", how="left")


def read_rsna_pneumonia(
    root: PathLike,
    *,
    image_dir: PathLike | None = None,
    split_scheme: str = "mgca-classification",
    seed: int = 0,
    missing_images: str = "error",
    skip_bad_rows: bool = False,
):
    """Read RSNA Pneumonia with boxes aggregated per patient.

    Args:
        root: Folder holding ``stage_2_train_labels.csv`` (and the image folder).
        image_dir: Image folder when not one of ``stage_2_train_images``/``..._png``/``..._jpg``/``images``;
            images are ``<patientId>.dcm`` or a ``.png``/``.jpg`` conversion.
        split_scheme: ``"mgca-classification"`` (70/15/15), ``"mgca-detection"`` (5,337 x 2 held out, halved)
            -- both reproduce MGCA's ``train_test_split(random_state=seed)`` calls -- or ``"none"`` (all train).
        seed: Split seed.
        missing_images: ``"error"``, ``"drop"`` or ``"ignore"``.
        skip_bad_rows: Skip rows that break :func:`rsna_label_rules` (counted, see ``BadRows``) instead of
            raising :class:`DatasetFormatError`. A patient keeps its valid rows.

    Returns:
        ``DatasetDict`` with ``image_path``, ``image_id``/``patient_id`` (patientId), ``boxes``
        (``[[x0, y0, x1, y1], ...]``), ``Pneumonia``, ``class`` (when the class-info CSV exists), ``split``.
    """
    root = Path(root)
    labels_path = find_first_file([root / "stage_2_train_labels.csv"], "RSNA labels CSV")
    labels = read_csv_table(labels_path, string_columns=["patientId"])
    require_columns(labels, RSNA_LABEL_COLUMNS, labels_path)
    bad_rows = BadRows(skip_bad_rows)
    labels = validate_rows(labels, rsna_label_rules(), labels_path, bad_rows)
    frame = _attach_classes(aggregate_rsna_boxes(labels), root, bad_rows)
    frame["split"] = _rsna_splits(len(frame), split_scheme, seed)
    folder, suffix = _image_locator(root, image_dir, frame["patientId"].iloc[0])
    frame["image_path"] = [str(folder / f"{pid}{suffix}") for pid in frame["patientId"]]
    frame["image_id"] = frame["patientId"]
    frame = check_images(frame.rename(columns={"patientId": "patient_id"}), missing_images, labels_path)
    extra: Sequence[str] = ["class"] if "class" in frame.columns else []
    columns = ["image_path", "image_id", "patient_id", "boxes", "Pneumonia", *extra, "split"]
    return to_dataset_dict(frame[columns], bad_rows=bad_rows, source=str(labels_path))


def _rsna_splits(n_patients: int, scheme: str, seed: int) -> np.ndarray:
    if scheme == "none":
        return np.full(n_patients, "train", dtype=object)
    if scheme not in _SPLIT_SCHEMES:
        raise ValueError(f"split_scheme must be one of {[*_SPLIT_SCHEMES, 'none']}, got {scheme!r}")
    return three_way_split(n_patients, _SPLIT_SCHEMES[scheme], seed=seed)
