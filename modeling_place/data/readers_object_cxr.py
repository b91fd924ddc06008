"""Object-CXR (JF Healthcare, MIDL 2020) foreign-object detection reader.

Layout (``train.zip`` and ``dev.zip`` extracted next to the CSVs)::

    ROOT/train.csv   image_name, annotation        (the README calls the first column image_path)
    ROOT/dev.csv
    ROOT/train/00001.jpg
    ROOT/dev/08001.jpg

``annotation``: objects separated by ``;``, each ``TYPE x1 y1 x2 y2 ...`` with TYPE ``0`` rectangle and ``1``
ellipse (given by two bounding-box corners) or ``2`` polygon (x, y vertex list); empty = no foreign object.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .readers_common import (
    BadRows,
    PathLike,
    check_images,
    find_first_file,
    read_csv_table,
    require_columns,
    rule_not_blank,
    rule_per_value,
    to_dataset_dict,
    two_way_split,
    validate_rows,
)

OBJECT_SHAPES = {"0": "rectangle", "1": "ellipse", "2": "polygon"}
OBJECT_SEPARATOR = ";"


def parse_object_cxr_annotation(annotation: str | float | None) -> tuple[list[list[float]], list[str]]:
    """Boxes ``[x0, y0, x1, y1]`` and shape names of one ``annotation`` cell.

    Rectangles and ellipses are stored as two corners; a polygon's box is the bounds of its vertices (MGCA
    instead derives a polylabel-centred square; the tight bounds are the standard COCO conversion).

    Raises:
        ValueError: Unknown shape code, odd coordinate count, fewer than two points, a coordinate that is not a
            finite number >= 0 (image pixels start at 0 in the top-left corner) -- the message quotes the object.
    """
    if annotation is None or (isinstance(annotation, float) and math.isnan(annotation)) or not str(annotation).strip():
        return [], []
    boxes, shapes = [], []
    for obj in filter(None, (part.strip() for part in str(annotation).split(OBJECT_SEPARATOR))):
        code, *numbers = obj.split()
        if code not in OBJECT_SHAPES:
            raise ValueError(f"unknown Object-CXR shape code {code!r} in object {obj[:60]!r} (expected 0, 1 or 2)")
        if len(numbers) < 4 or len(numbers) % 2:
            raise ValueError(f"Object-CXR object {obj[:60]!r} needs an even number (>= 4) of coordinates")
        try:
            points = np.asarray(numbers, dtype=np.float64).reshape(-1, 2)
        except ValueError:
            raise ValueError(f"Object-CXR object {obj[:60]!r} has a non-numeric coordinate") from None
        if not np.isfinite(points).all() or (points < 0).any():
            raise ValueError(f"Object-CXR object {obj[:60]!r} has a negative or non-finite coordinate")
        boxes.append([*points.min(axis=0).tolist(), *points.max(axis=0).tolist()])
        shapes.append(OBJECT_SHAPES[code])
    return boxes, shapes


def annotation_problem(annotation: object) -> str | None:
    """``None`` if the ``annotation`` cell parses, else the parser's message."""
    try:
        parse_object_cxr_annotation(annotation)  # type: ignore[arg-type]
    except ValueError as error:
        return str(error)
    return None


def _read_object_csv(path: Path, split_folder: str, bad_rows: BadRows) -> pd.DataFrame:
    frame = read_csv_table(path, dtype=str, keep_default_na=False)
    if "image_name" not in frame.columns and "image_path" in frame.columns:
        frame = frame.rename(columns={"image_path": "image_name"})
    require_columns(frame, ["image_name", "annotation"], path)
    rules = [rule_not_blank("image_name"), rule_per_value("annotation", "a valid annotation", annotation_problem)]
    frame = validate_rows(frame, rules, path, bad_rows)
    parsed = [parse_object_cxr_annotation(annotation) for annotation in frame["annotation"]]
    frame["boxes"] = [boxes for boxes, _ in parsed]
    frame["box_types"] = [shapes for _, shapes in parsed]
    frame["image_path"] = [_object_image_path(path.parent, split_folder, n) for n in frame["image_name"]]
    return frame


def _object_image_path(root: Path, split_folder: str, name: str) -> str:
    """``ROOT/<split>/<name>``; names that already carry a folder (``train/00001.jpg``) are kept as is."""
    return str(root / name) if Path(name).parent != Path(".") else str(root / split_folder / name)


def read_object_cxr(
    root: PathLike,
    *,
    validation_fraction: float = 0.1,
    seed: int = 0,
    missing_images: str = "error",
    skip_bad_rows: bool = False,
):
    """Read Object-CXR: ``train.csv`` -> train/validation (MGCA: 10 % with sklearn ``random_state=seed``),
    ``dev.csv`` -> test (MGCA uses dev as its test set).

    A row with a blank ``image_name`` or an annotation :func:`parse_object_cxr_annotation` rejects raises
    :class:`DatasetFormatError` naming file, row and column (``skip_bad_rows=True``: skipped and counted).

    Returns:
        ``DatasetDict`` with ``image_path``, ``image_id`` (image_name), ``annotation`` (raw shapes, for exact
        ellipse/polygon masks), ``boxes``, ``box_types``, ``Foreign Object`` (1.0 when any box), ``split``.
    """
    root = Path(root)
    bad_rows = BadRows(skip_bad_rows)
    train = _read_object_csv(find_first_file([root / "train.csv"], "Object-CXR train.csv"), "train", bad_rows)
    dev = _read_object_csv(find_first_file([root / "dev.csv"], "Object-CXR dev.csv"), "dev", bad_rows)
    train["split"] = two_way_split(len(train), validation_fraction, seed=seed) if validation_fraction else "train"
    dev["split"] = "test"
    frame = pd.concat([train, dev], ignore_index=True)
    frame["Foreign Object"] = np.array([float(bool(b)) for b in frame["boxes"]], dtype=np.float32)
    frame = check_images(frame.rename(columns={"image_name": "image_id"}), missing_images, root)
    columns = ["image_path", "image_id", "annotation", "boxes", "box_types", "Foreign Object", "split"]
    return to_dataset_dict(frame[columns], bad_rows=bad_rows, source=str(root))
