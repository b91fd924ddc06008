"""NIH ChestX-ray14 reader.

Layout (NIH Box release or the Kaggle mirror with ``images_001/images/...``)::

    ROOT/Data_Entry_2017_v2020.csv   (or Data_Entry_2017.csv)  Image Index, Finding Labels (|-separated), ...
    ROOT/train_val_list.txt, ROOT/test_list.txt                one image name per line
    ROOT/BBox_List_2017.csv                                     Image Index, Finding Label, Bbox [x, y, w, h]
    ROOT/images/00000001_000.png      (or ROOT/images_001/images/00000001_000.png, ...)
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from .labels_place import NIH_LABELS, canonical_label
from .readers_common import (
    BadRows,
    PathLike,
    RowRule,
    check_images,
    find_first_file,
    normalise_split,
    numeric,
    read_csv_table,
    require_columns,
    require_file,
    rule_in_set,
    rule_not_blank,
    rule_number,
    rule_per_value,
    to_dataset_dict,
    validate_rows,
)

NIH_ENTRY_CSVS = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
NIH_OFFICIAL_LISTS = {"train": "train_val_list.txt", "test": "test_list.txt"}
_ENTRY_COLUMNS = ("Image Index", "Finding Labels", "Patient ID", "View Position")
NIH_NATIVE_NAMES = (*NIH_LABELS, "No Finding")
NIH_BOX_IMAGE_SIZE = 1024  # BBox_List_2017.csv boxes are in pixels of the 1024 x 1024 PNGs


def _finding_problem(value: object) -> str | None:
    names = str(value).split("|") if isinstance(value, str) and value.strip() else [""]
    unknown = [name for name in names if name not in NIH_NATIVE_NAMES]
    return f"unknown finding label(s) {unknown} in {value!r}; expected |-separated {list(NIH_NATIVE_NAMES)}" \
        if unknown else None


def nih_entry_rules() -> list[RowRule]:
    """``Data_Entry_2017*.csv`` rules: an image name, ``Finding Labels`` made of the 14 NIH names or
    ``No Finding``, ``View Position`` PA or AP. (Ages are not checked: the 2017 file has ages above 400.)"""
    return [
        rule_not_blank("Image Index"),
        rule_per_value("Finding Labels", "|-separated NIH labels", _finding_problem),
        rule_in_set("View Position", ("PA", "AP")),
    ]


def nih_box_rules() -> list[RowRule]:
    """``BBox_List_2017.csv`` rules: x, y >= 0, w, h > 0 and the box inside the 1024 x 1024 image."""
    def past_edge(start: str, extent: str) -> RowRule:
        return RowRule(extent, f"such that {start} + {extent} <= {NIH_BOX_IMAGE_SIZE} (box inside the image)",
                       lambda f: numeric(f[start]) + numeric(f[extent]) > NIH_BOX_IMAGE_SIZE)

    size = NIH_BOX_IMAGE_SIZE
    return [
        rule_not_blank("Image Index"),
        rule_not_blank("Finding Label"),
        rule_number("x", 0, size), rule_number("y", 0, size),
        rule_number("w", 1e-6, size), rule_number("h", 1e-6, size),
        past_edge("x", "w"), past_edge("y", "h"),
    ]


def read_id_list(path: PathLike) -> list[str]:
    """Non-empty stripped lines of a split list file."""
    path = require_file(path, "split list")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def index_nih_images(root: Path) -> dict[str, str]:
    """Image name -> path for ``images/*.png`` and the Kaggle ``images_XXX/images/*.png`` folders."""
    paths = list(root.glob("images*/*.png")) + list(root.glob("images*/images/*.png"))
    return {path.name: str(path) for path in paths}


def nih_label_matrix(findings: pd.Series, label_space: str) -> pd.DataFrame:
    """0/1 label columns from ``Finding Labels`` strings; canonical space merges Mass + Nodule (max)."""
    native = [*NIH_LABELS, "No Finding"]
    sets = [set(str(value).split("|")) for value in findings]
    matrix = pd.DataFrame(
        {label: np.array([label in s for s in sets], dtype=np.float32) for label in native}, index=findings.index
    )
    unknown = set().union(*sets) - set(native) if sets else set()
    if unknown:
        raise ValueError(f"unknown NIH finding label(s) {sorted(unknown)}; expected {native}")
    if label_space == "native":
        return matrix
    if label_space != "canonical":
        raise ValueError(f"label_space must be 'canonical' or 'native', got {label_space!r}")
    return matrix.T.groupby([canonical_label(n, "nih") for n in native], sort=False).max().T


def _read_boxes(path: Path, label_space: str, bad_rows: BadRows) -> pd.DataFrame:
    """Boxes per image from ``BBox_List_2017.csv`` (its ``Bbox [x,y,w,h]`` header splits into 4 columns)."""
    boxes = read_csv_table(path, dtype=str, keep_default_na=False)
    require_columns(boxes, ["Image Index", "Finding Label"], path)
    if boxes.shape[1] < 6:
        raise ValueError(f"{path}: expected 4 box columns (x, y, w, h) after 'Finding Label'")
    boxes = boxes.iloc[:, :6].set_axis(["Image Index", "Finding Label", "x", "y", "w", "h"], axis=1)
    boxes = validate_rows(boxes, nih_box_rules(), path, bad_rows)
    x, y, w, h = (numeric(boxes[c]).astype(np.float32) for c in ("x", "y", "w", "h"))
    boxes = boxes.assign(box=np.stack([x, y, x + w, y + h], axis=1).tolist())
    if label_space == "canonical":
        boxes["Finding Label"] = [canonical_label(label, "nih") for label in boxes["Finding Label"]]
    grouped = boxes.groupby("Image Index", sort=False)
    return pd.DataFrame({"boxes": grouped["box"].agg(list), "box_labels": grouped["Finding Label"].agg(list)})


def _assign_splits(frame: pd.DataFrame, root: Path, split_lists: Mapping[str, PathLike]) -> pd.DataFrame:
    split_of = {}
    for split_name, list_path in split_lists.items():
        split = normalise_split(split_name, "split_lists")
        for image in read_id_list(root / list_path):
            split_of[image] = split
    frame = frame.assign(split=frame["Image Index"].map(split_of))
    return frame.loc[frame["split"].notna()].reset_index(drop=True)


def read_nih_chestxray14(
    root: PathLike,
    *,
    label_space: str = "canonical",
    split_lists: Mapping[str, PathLike] | None = None,
    with_boxes: bool = True,
    missing_images: str = "error",
    skip_bad_rows: bool = False,
):
    """Read NIH ChestX-ray14 with the official (or MRM) split lists and optional boxes.

    Args:
        root: Dataset folder.
        label_space: ``"canonical"`` (Effusion -> Pleural Effusion, Mass/Nodule -> Lung Lesion, ...; see
            :mod:`labels_place`) or ``"native"`` (the 14 NIH names + ``No Finding``).
        split_lists: ``{split: list file relative to root}``; default the official
            ``{"train": "train_val_list.txt", "test": "test_list.txt"}``. MRM's lists work too, e.g.
            ``{"train": "train_1.txt", "validation": "val_list.txt", "test": "test_list.txt"}``. Images in no
            list are left out.
        with_boxes: Add ``boxes``/``box_labels`` from ``BBox_List_2017.csv`` when the file exists.
        missing_images: ``"error"``, ``"drop"`` or ``"ignore"``.
        skip_bad_rows: Skip (and count) rows breaking :func:`nih_entry_rules` / :func:`nih_box_rules` instead of
            raising :class:`DatasetFormatError`.
    """
    root = Path(root)
    entry_path = find_first_file([root / name for name in NIH_ENTRY_CSVS], "NIH Data_Entry CSV")
    frame = read_csv_table(entry_path, string_columns=["Image Index", "Patient ID"])
    require_columns(frame, _ENTRY_COLUMNS, entry_path)
    bad_rows = BadRows(skip_bad_rows)
    frame = validate_rows(frame, nih_entry_rules(), entry_path, bad_rows)
    frame = _assign_splits(frame, root, split_lists or NIH_OFFICIAL_LISTS)
    labels = nih_label_matrix(frame["Finding Labels"], label_space)
    frame = pd.concat([frame, labels], axis=1)
    extra: list[str] = []
    box_path = root / "BBox_List_2017.csv"
    if with_boxes and box_path.is_file():
        boxes = _read_boxes(box_path, label_space, bad_rows)
        frame["boxes"] = [boxes["boxes"].get(name, []) for name in frame["Image Index"]]
        frame["box_labels"] = [boxes["box_labels"].get(name, []) for name in frame["Image Index"]]
        extra = ["boxes", "box_labels"]
    images = index_nih_images(root)
    frame["image_path"] = [images.get(name, str(root / "images" / name)) for name in frame["Image Index"]]
    frame = frame.rename(columns={"Image Index": "image_id", "Patient ID": "patient_id", "View Position": "view"})
    frame = check_images(frame, missing_images, entry_path)
    label_columns = list(labels.columns)
    columns = ["image_path", "image_id", "patient_id", "view", *label_columns, *extra, "split"]
    return to_dataset_dict(frame[columns], bad_rows=bad_rows, source=str(entry_path))

