"""COVIDx CXR reader (space-separated split lists + image folders).

Layout (COVIDx v8/v9 ``train_COVIDx9A.txt``/``test_COVIDx9A.txt``, or CXR-3/4 ``train.txt``/``val.txt``/``test.txt``)::

    ROOT/train.txt   "<patient id> <filename> <class> <data source>"   one image per line, no header
    ROOT/test.txt
    ROOT/train/<filename>
    ROOT/test/<filename>

Classes are ``normal``/``pneumonia``/``COVID-19`` (3-class releases) or ``negative``/``positive`` (binary).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .readers_common import (
    BadRows,
    PathLike,
    check_images,
    decode_utf8,
    require_file,
    rule_in_set,
    rule_not_blank,
    to_dataset_dict,
    two_way_split,
    validate_rows,
)

COVIDX_THREE_CLASSES = ("normal", "pneumonia", "COVID-19")  # MGCA's label order (0, 1, 2)
COVIDX_BINARY_CLASSES = ("negative", "positive")


def find_covidx_list(root: Path, stem: str, required: bool) -> Path | None:
    """The single ``{stem}*.txt`` split list in ``root`` (``train.txt``, ``train_COVIDx9A.txt``...)."""
    matches = sorted(root.glob(f"{stem}*.txt"))
    if len(matches) > 1:
        names = ", ".join(m.name for m in matches)
        raise ValueError(f"several COVIDx {stem} lists in {root.resolve()} ({names}); pass {stem}_txt=... to choose")
    if not matches and required:
        raise FileNotFoundError(f"COVIDx {stem} list not found: expected {(root / f'{stem}.txt').resolve()}")
    return matches[0] if matches else None


def read_covidx_list(path: PathLike, bad_rows: BadRows | None = None) -> pd.DataFrame:
    """Parse a COVIDx list: ``patient_id filename class [source]`` per line, ``class`` one of the known names.

    A line with fewer than 3 fields or an unknown class raises :class:`DatasetFormatError` (row = line number;
    column ``image_id`` for the filename, ``label_name`` for the class), or is skipped and counted with
    ``bad_rows.skip``.
    """
    path = require_file(path, "COVIDx split list")
    rows, numbers = [], []
    for number, line in enumerate(decode_utf8(path.read_bytes(), path).splitlines(), start=1):
        fields = line.split()
        if fields:
            rows.append(dict(zip(("patient_id", "image_id", "label_name"), fields[:3])))
            numbers.append(number)
    if not rows:
        raise ValueError(f"{path}: no entries")
    frame = pd.DataFrame(rows, columns=["patient_id", "image_id", "label_name"])
    rules = [rule_not_blank("image_id"), rule_in_set("label_name", (*COVIDX_THREE_CLASSES, *COVIDX_BINARY_CLASSES))]
    frame = validate_rows(frame, rules, path, bad_rows if bad_rows is not None else BadRows(), numbers)
    return frame


def read_covidx(
    root: PathLike,
    *,
    train_txt: PathLike | None = None,
    val_txt: PathLike | None = None,
    test_txt: PathLike | None = None,
    validation_fraction: float = 0.2,
    seed: int = 0,
    missing_images: str = "error",
    skip_bad_rows: bool = False,
):
    """Read COVIDx: train/test lists (+ val list when present, else MGCA's 20 % of train with sklearn
    ``train_test_split(random_state=seed)``).

    Returns:
        ``DatasetDict`` with ``image_path`` (``ROOT/<train|val|test>/<filename>``), ``image_id`` (filename),
        ``patient_id``, ``label`` (``ClassLabel``: normal/pneumonia/COVID-19 or negative/positive),
        ``label_name``, ``COVID-19`` (1.0 for COVID-19/positive), ``split``.
    """
    root = Path(root)
    lists = {
        "train": Path(train_txt) if train_txt else find_covidx_list(root, "train", required=True),
        "validation": Path(val_txt) if val_txt else find_covidx_list(root, "val", required=False),
        "test": Path(test_txt) if test_txt else find_covidx_list(root, "test", required=True),
    }
    folders = {"train": "train", "validation": "val", "test": "test"}
    parts, bad_rows = [], BadRows(skip_bad_rows)
    for split, path in lists.items():
        if path is None:
            continue
        part = read_covidx_list(path, bad_rows)
        part["image_path"] = [str(root / folders[split] / name) for name in part["image_id"]]
        part["split"] = split
        parts.append(part)
    if lists["validation"] is None and validation_fraction:
        parts[0]["split"] = two_way_split(len(parts[0]), validation_fraction, seed=seed)
    frame = pd.concat(parts, ignore_index=True)
    class_names = _class_names(frame["label_name"], lists["train"])
    frame["label"] = [class_names.index(name) for name in frame["label_name"]]
    frame["COVID-19"] = frame["label_name"].isin(["COVID-19", "positive"]).to_numpy(np.float32)
    frame = check_images(frame, missing_images, root)
    columns = ["image_path", "image_id", "patient_id", "label", "label_name", "COVID-19", "split"]
    return to_dataset_dict(frame[columns], label_names=class_names, bad_rows=bad_rows, source=str(root))


def _class_names(names: pd.Series, source: Path) -> tuple[str, ...]:
    found = set(names)
    for classes in (COVIDX_THREE_CLASSES, COVIDX_BINARY_CLASSES):
        if found <= set(classes):
            return classes
    expected = f"{COVIDX_THREE_CLASSES} or {COVIDX_BINARY_CLASSES}"
    raise ValueError(f"{source}: unknown COVIDx classes {sorted(found)}; expected {expected}")
