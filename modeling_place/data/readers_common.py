"""Shared building blocks of the dataset readers: file/column checks, table reading, labels, splits, output.

Convention used by every reader (see ``docs/DATASETS.md``):

* One row per image. ``image_path`` is an absolute file-path string; pixels are decoded lazily with
  :func:`load_image` (PNG/JPG through PIL, DICOM through pydicom) or :func:`with_lazy_images`.
* ``image_id`` is a stable, dataset-native image identifier (DICOM id, relative path, patientId...): the only
  thing written to split-ID files.
* Label columns carry canonical names (:mod:`labels_place`) and ``float32`` values.
* ``split`` is one of ``train`` / ``validation`` / ``test``; readers return a ``datasets.DatasetDict`` keyed
  by these names (only the splits that have rows).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .labels_place import CANONICAL_LABELS, CHEXPERT_LABELS, MGCA_UNCERTAINTY_MAP

logger = logging.getLogger(__name__)

PathLike = str | Path
SPLIT_ORDER: tuple[str, ...] = ("train", "validation", "test")
_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "validation",
    "valid": "validation",
    "validate": "validation",
    "validation": "validation",
    "test": "test",
    "testing": "test",
}
MISSING_IMAGE_POLICIES = ("error", "drop", "ignore")
UNCERTAINTY_POLICIES = ("zeros", "ones", "mgca", "keep")


# ----------------------------------------------------------------------------------------------- files


def require_file(path: PathLike, description: str) -> Path:
    """Return ``path`` if it is a file, else raise FileNotFoundError naming the full expected path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{description} not found: expected the file {path.resolve()}")
    return path


def require_dir(path: PathLike, description: str) -> Path:
    """Return ``path`` if it is a directory, else raise FileNotFoundError naming the full expected path."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{description} not found: expected the directory {path.resolve()}")
    return path


def find_first_file(candidates: Sequence[PathLike], description: str) -> Path:
    """The first existing file among ``candidates``; FileNotFoundError listing every full path tried."""
    for candidate in candidates:
        if Path(candidate).is_file():
            return Path(candidate)
    tried = " or ".join(str(Path(c).resolve()) for c in candidates)
    raise FileNotFoundError(f"{description} not found: expected {tried}")


def find_first_dir(candidates: Sequence[PathLike], description: str) -> Path:
    """The first existing directory among ``candidates``; FileNotFoundError listing every path tried."""
    for candidate in candidates:
        if Path(candidate).is_dir():
            return Path(candidate)
    tried = " or ".join(str(Path(c).resolve()) for c in candidates)
    raise FileNotFoundError(f"{description} not found: expected the directory {tried}")


def require_columns(df_or_rows: Any, required: Iterable[str], path: PathLike) -> None:
    """Raise ValueError naming the file and every missing column.

    Args:
        df_or_rows: A pandas DataFrame, a sequence of dict rows (all rows are checked), or a header list.
        required: Column names that must be present.
        path: The file the table came from (used in the message).
    """
    required = list(required)
    if isinstance(df_or_rows, pd.DataFrame):
        present = [str(c) for c in df_or_rows.columns]
        missing = [c for c in required if c not in present]
    elif df_or_rows and all(isinstance(row, Mapping) for row in df_or_rows):
        present = sorted({str(k) for row in df_or_rows for k in row})
        missing = [c for c in required if any(c not in row for row in df_or_rows)]
    else:
        present = [str(c) for c in (df_or_rows or [])]
        missing = [c for c in required if c not in present]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}; found columns: {present}"
        )


def read_csv_table(path: PathLike, *, string_columns: Sequence[str] = (), **kwargs: Any) -> pd.DataFrame:
    """Read a CSV (``.csv`` or ``.csv.gz``) with header names stripped of surrounding whitespace.

    Stripping the header is what makes SIIM's ``" EncodedPixels"`` column readable as ``EncodedPixels``.
    Parser failures are re-raised as ValueError naming the file.
    """
    path = require_file(path, "table")
    if string_columns:
        kwargs.setdefault("dtype", {column: str for column in string_columns})
    try:
        frame = pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot be parsed as CSV ({error})") from error
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def strip_prefix_component(relative: str) -> str:
    """Drop the first path component: ``2.0.0/files/p10/...`` -> ``files/p10/...``."""
    parts = Path(relative).parts
    return str(Path(*parts[1:])) if len(parts) > 1 else relative


# ----------------------------------------------------------------------------------------------- splits


def normalise_split(name: str, source: PathLike = "split column") -> str:
    """Map ``train/val/valid/validate/test`` spellings onto ``train``/``validation``/``test``."""
    canonical = _SPLIT_ALIASES.get(str(name).strip().lower())
    if canonical is None:
        raise ValueError(f"{source}: unknown split name {name!r}; expected one of {sorted(_SPLIT_ALIASES)}")
    return canonical


def three_way_split(
    n_items: int, holdout: float | int, *, test_share: float = 0.5, seed: int = 0
) -> np.ndarray:
    """Split labels for ``n_items`` rows, reproducing MGCA's two calls to sklearn's ``train_test_split``.

    MGCA: ``train, rest = train_test_split(df, test_size=holdout, random_state=0)`` then
    ``test, valid = train_test_split(rest, test_size=0.5, random_state=0)``. Given rows in the same order,
    this gives the same assignment.

    Args:
        n_items: Number of rows.
        holdout: Fraction (float) or count (int) held out of train.
        test_share: Share of the held-out rows that go to *test* (MGCA: 0.5).
        seed: ``random_state`` of both calls.

    Returns:
        Array of ``"train"``/``"validation"``/``"test"`` strings, one per row.
    """
    from sklearn.model_selection import train_test_split

    index = np.arange(n_items)
    try:
        train_index, rest_index = train_test_split(index, test_size=holdout, random_state=seed)
        # MGCA's second call is ``test, valid = train_test_split(rest, test_size=0.5)``: the first part is test.
        test_index, valid_index = train_test_split(rest_index, test_size=1.0 - test_share, random_state=seed)
    except ValueError as error:
        raise ValueError(f"cannot split {n_items} rows with holdout={holdout!r}: {error}") from error
    labels = np.empty(n_items, dtype=object)
    labels[train_index], labels[valid_index], labels[test_index] = "train", "validation", "test"
    return labels


def two_way_split(n_items: int, validation: float | int, *, seed: int = 0) -> np.ndarray:
    """``train``/``validation`` labels from one ``train_test_split(test_size=validation, random_state=seed)``."""
    from sklearn.model_selection import train_test_split

    index = np.arange(n_items)
    try:
        _, valid_index = train_test_split(index, test_size=validation, random_state=seed)
    except ValueError as error:
        raise ValueError(f"cannot split {n_items} rows with validation={validation!r}: {error}") from error
    labels = np.full(n_items, "train", dtype=object)
    labels[valid_index] = "validation"
    return labels


# ----------------------------------------------------------------------------------------------- labels


def apply_uncertainty(
    frame: pd.DataFrame,
    labels: Sequence[str],
    policy: str | Mapping[str, float] = "zeros",
    *,
    blank: float = 0.0,
) -> pd.DataFrame:
    """Resolve CheXpert-style label values (1 positive, 0 negative, -1 uncertain, blank unmentioned).

    Args:
        frame: Table holding the label columns (modified copy returned).
        labels: Label columns to resolve.
        policy: ``"zeros"`` (U-Zeros: -1 -> 0), ``"ones"`` (U-Ones: -1 -> 1), ``"mgca"`` (the CheXpert-paper
            per-label map for the five competition tasks, U-Zeros for the other labels), ``"keep"`` (leave -1),
            or a ``{label: value}`` dict (unlisted labels -> 0).
        blank: Value for blank (not mentioned) cells; CheXpert practice is 0.

    Returns:
        A copy of ``frame`` with the label columns as ``float32``.
    """
    per_label = _uncertainty_values(labels, policy)
    frame = frame.copy()
    for label in labels:
        values = pd.to_numeric(frame[label], errors="coerce").astype("float32")
        if label in per_label:
            values = values.mask(values == -1.0, per_label[label])
        frame[label] = values.fillna(blank).astype("float32")
    return frame


def _uncertainty_values(labels: Sequence[str], policy: str | Mapping[str, float]) -> dict[str, float]:
    """Replacement value of -1 for each label (labels absent from the result keep -1)."""
    if isinstance(policy, Mapping):
        return {label: float(policy.get(label, 0.0)) for label in labels}
    if policy == "keep":
        return {}
    if policy in ("zeros", "ones"):
        return {label: 1.0 if policy == "ones" else 0.0 for label in labels}
    if policy == "mgca":
        return {label: MGCA_UNCERTAINTY_MAP.get(label, 0.0) for label in labels}
    raise ValueError(f"Unknown uncertainty policy {policy!r}; valid: {', '.join(UNCERTAINTY_POLICIES)} or a dict")


# ----------------------------------------------------------------------------------------------- images


def check_images(frame: pd.DataFrame, policy: str, source: PathLike) -> pd.DataFrame:
    """Apply the missing-image policy to ``frame["image_path"]``.

    ``"error"`` raises FileNotFoundError with the count and the first missing full path, ``"drop"`` removes the
    rows (with a warning), ``"ignore"`` skips the check (fast on huge trees that are known to be complete).
    """
    if policy not in MISSING_IMAGE_POLICIES:
        raise ValueError(f"missing_images must be one of {MISSING_IMAGE_POLICIES}, got {policy!r}")
    if policy == "ignore" or frame.empty:
        return frame
    exists = np.fromiter((Path(p).is_file() for p in frame["image_path"]), dtype=bool, count=len(frame))
    if exists.all():
        return frame
    first = frame["image_path"].to_numpy()[~exists][0]
    message = f"{int((~exists).sum())} of {len(frame)} images listed by {source} are missing, e.g. {first}"
    if policy == "error":
        raise FileNotFoundError(message + " (pass missing_images='drop' to skip them)")
    logger.warning("%s; dropping them", message)
    return frame.loc[exists].reset_index(drop=True)


def load_image(path: PathLike):
    """Decode one image file to a PIL image: PNG/JPG via PIL, DICOM (``.dcm``) via pydicom.

    DICOM pixels are min-max scaled to 8 bits and MONOCHROME1 images inverted, so every format comes back as
    an ``"L"`` (or the file's own PIL mode) image with bright bone.
    """
    from PIL import Image

    path = require_file(path, "image")
    if path.suffix.lower() != ".dcm":
        return Image.open(path)
    import pydicom

    dicom = pydicom.dcmread(path)
    pixels = dicom.pixel_array.astype(np.float32)
    low, high = float(pixels.min()), float(pixels.max())
    scaled = (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)
    if getattr(dicom, "PhotometricInterpretation", "") == "MONOCHROME1":
        scaled = 1.0 - scaled
    return Image.fromarray(np.round(scaled * 255).astype(np.uint8), mode="L")


def with_lazy_images(dataset, column: str = "image"):
    """Return ``dataset`` with an on-access transform adding a decoded PIL ``column`` from ``image_path``."""

    def _decode(batch: dict[str, list]) -> dict[str, list]:
        batch[column] = [load_image(p) for p in batch["image_path"]]
        return batch

    return dataset.with_transform(_decode)


# ----------------------------------------------------------------------------------------------- text


SECTION_SEPARATOR = "\n\n"
"""Between joined sections, as :func:`report_place.extract_report_text` does, so sentence splitting never
merges the last sentence of one section with the first of the next."""


def join_sections(sections: Mapping[str, Any], order: Sequence[str]) -> str:
    """Join the non-empty sections named in ``order`` (whitespace collapsed; NaN and None count as empty)."""
    parts = [_clean_text(sections.get(name)) for name in order]
    return SECTION_SEPARATOR.join(part for part in parts if part)


def _clean_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return " ".join(str(value).split())


def report_columns(reports: Sequence[str | None], sections: Sequence[str]) -> dict[str, list[str]]:
    """``findings``, ``impression`` and ``text`` columns from raw report strings (``None`` = no report).

    Section finding and text selection come from :mod:`report_place`, the same code the processor uses.
    """
    from ..processing.report_place import extract_report_text, find_sections

    columns: dict[str, list[str]] = {"findings": [], "impression": [], "text": []}
    for report in reports:
        found = find_sections(report) if report else {}
        columns["findings"].append(_clean_text(found.get("findings")))
        columns["impression"].append(_clean_text(found.get("impression")))
        columns["text"].append(extract_report_text(report, sections=tuple(sections)).strip() if report else "")
    return columns


def drop_empty_text(frame: pd.DataFrame, enabled: bool) -> pd.DataFrame:
    """Drop rows whose ``text`` is empty when ``enabled`` (MGCA drops studies with neither section)."""
    if not enabled:
        return frame
    return frame.loc[frame["text"].str.len() > 0].reset_index(drop=True)


# ----------------------------------------------------------------------------------------------- output


def _feature_for(column: str, series: pd.Series):
    from datasets import List, Value

    if column in CANONICAL_LABELS or column in CHEXPERT_LABELS:
        return Value("float32")
    if column in ("boxes",):
        return List(List(Value("float32")))
    if column in ("mask_rle", "box_types", "box_labels"):
        return List(Value("string"))
    if column == "label":
        return Value("int64")
    if pd.api.types.is_bool_dtype(series):
        return Value("bool")
    if pd.api.types.is_integer_dtype(series):
        return Value("int64")
    if pd.api.types.is_float_dtype(series):
        return Value("float32")
    return Value("string")


def to_dataset_dict(frame: pd.DataFrame, label_names: Sequence[str] | None = None):
    """Turn a reader's table into a ``DatasetDict`` keyed by split, with explicit features.

    Args:
        frame: One row per image, with a ``split`` column in ``train``/``validation``/``test``.
        label_names: When given, the integer ``label`` column becomes a ``ClassLabel`` with these names, so
            the class names travel with the data.
    """
    from datasets import ClassLabel, Dataset, DatasetDict, Features

    if "split" not in frame.columns:
        raise ValueError("internal error: reader table has no 'split' column")
    features = Features({column: _feature_for(column, frame[column]) for column in frame.columns})
    if label_names is not None and "label" in frame.columns:
        features["label"] = ClassLabel(names=list(label_names))
    splits = {}
    for split in SPLIT_ORDER:
        part = frame.loc[frame["split"] == split]
        if len(part):
            records = {column: _column_values(part[column]) for column in frame.columns}
            splits[split] = Dataset.from_dict(records, features=features)
    if not splits:
        raise ValueError("the dataset has no rows after filtering; check the input files and options")
    return DatasetDict(splits)


def _column_values(series: pd.Series) -> list:
    """Python values for one column (NaN strings -> ``None``; numpy scalars -> Python scalars)."""
    if series.dtype == object:
        return [None if isinstance(v, float) and np.isnan(v) else v for v in series.tolist()]
    return series.tolist()


def read_json(path: PathLike) -> Any:
    """Load a JSON file, re-raising decode errors as ValueError naming the file."""
    path = require_file(path, "JSON file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: invalid JSON ({error})") from error
