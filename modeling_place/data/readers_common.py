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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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


# ----------------------------------------------------------------------------------------------- row validation


class DatasetFormatError(ValueError):
    """A row of a dataset file breaks its format's rules (the one error type every reader raises for bad rows).

    Attributes:
        file: The file the row came from.
        row: 1-based data row (the header is not counted; for text lists and JSON, the line / item number).
        column: The offending column (or JSON key / field name).
        problem: What is wrong, quoting the value.
    """

    def __init__(self, file: PathLike, row: int, column: str, problem: str) -> None:
        self.file, self.row, self.column, self.problem = str(file), int(row), str(column), problem
        super().__init__(f"{self.file}: row {self.row}, column {self.column!r}: {problem}")

    def __reduce__(self):  # keep the fields through pickling (datasets' multiprocessing, DataLoader workers)
        return type(self), (self.file, self.row, self.column, self.problem)


@dataclass
class BadRows:
    """Bad-row policy of one reader call: raise on the first bad row (default) or skip, count and report them.

    ``skip_bad_rows=True`` on any reader skips the rows that break a rule, logs one warning with the counts at
    the end, and attaches this object to the returned ``DatasetDict`` as ``.bad_rows`` (``place-prepare``
    writes :meth:`summary` into ``manifest.json``).
    """

    skip: bool = False
    errors: list[DatasetFormatError] = field(default_factory=list)

    def reject(self, error: DatasetFormatError) -> None:
        """Raise ``error``, or record it when skipping."""
        if not self.skip:
            raise error
        self.errors.append(error)

    def summary(self) -> dict[str, Any]:
        """``{"skipped": n, "by_column": {"file: column": n}, "examples": [first five messages]}``."""
        by_column: dict[str, int] = {}
        for error in self.errors:
            key = f"{Path(error.file).name}: {error.column}"
            by_column[key] = by_column.get(key, 0) + 1
        return {"skipped": len(self.errors), "by_column": by_column, "examples": [str(e) for e in self.errors[:5]]}

    def log(self, source: str) -> None:
        if self.errors:
            summary = self.summary()
            logger.warning("%s: skipped %d bad row(s) %s; e.g. %s", source, summary["skipped"],
                           summary["by_column"], summary["examples"][0])


@dataclass(frozen=True)
class RowRule:
    """One format rule: ``is_bad(frame)`` flags the rows breaking it; ``expected`` completes "VALUE is not ..."."""

    column: str
    expected: str
    is_bad: Callable[[pd.DataFrame], pd.Series]
    explain: Callable[[Any], str | None] | None = None  # a value-specific message, when "is not" is too vague


def is_blank(series: pd.Series) -> pd.Series:
    """NaN / None / empty or white-space-only cells."""
    return series.isna() | series.astype(str).str.strip().eq("")


def rule_not_blank(column: str) -> RowRule:
    return RowRule(column, "a non-empty value", lambda frame: is_blank(frame[column]))


def rule_in_set(column: str, allowed: Iterable[str], blank_ok: bool = False) -> RowRule:
    """Cell (stripped text) must be one of ``allowed`` (or blank when ``blank_ok``)."""
    allowed = tuple(allowed)
    expected = "one of " + ", ".join(repr(a) for a in allowed) + (" or blank" if blank_ok else "")

    def is_bad(frame: pd.DataFrame) -> pd.Series:
        blank = is_blank(frame[column])
        inside = frame[column].astype(str).str.strip().isin(allowed)
        return ~inside & ~(blank & blank_ok)

    return RowRule(column, expected, is_bad)


def numeric(series: pd.Series) -> pd.Series:
    """Cells as float64 (NaN for blank or non-numeric)."""
    return pd.to_numeric(series.astype(str).str.strip().replace("", np.nan), errors="coerce")


def rule_number(
    column: str,
    low: float | None = None,
    high: float | None = None,
    *,
    blank_ok: bool = False,
    when: Callable[[pd.DataFrame], pd.Series] | None = None,
    allowed: Sequence[float] | None = None,
    what: str = "a number",
) -> RowRule:
    """Cell must parse as a finite number in ``[low, high]`` (or in ``allowed``), on the rows selected by ``when``."""
    bounds = "" if low is None and high is None else f" in [{low if low is not None else '-inf'}, " \
        f"{high if high is not None else 'inf'}]"
    expected = f"one of {', '.join(map(str, allowed))}" if allowed is not None else what + bounds
    expected += " or blank" if blank_ok else ""

    def is_bad(frame: pd.DataFrame) -> pd.Series:
        values, blank = numeric(frame[column]), is_blank(frame[column])
        bad = ~np.isfinite(values)
        if allowed is not None:
            bad |= ~values.isin(list(allowed))
        bad |= values < low if low is not None else False
        bad |= values > high if high is not None else False
        bad &= ~(blank & blank_ok)
        return bad & when(frame) if when is not None else bad

    return RowRule(column, expected, is_bad)


def rule_blank_when(column: str, when: Callable[[pd.DataFrame], pd.Series], condition: str) -> RowRule:
    """Cell must be blank on the rows selected by ``when`` (e.g. RSNA boxes when ``Target = 0``)."""
    return RowRule(column, f"blank ({condition})", lambda frame: ~is_blank(frame[column]) & when(frame))


def rule_per_value(column: str, expected: str, problem: Callable[[Any], str | None]) -> RowRule:
    """A rule checked value by value: ``problem(value)`` returns ``None`` or what is wrong (for RLE, annotations)."""
    return RowRule(column, expected, lambda frame: frame[column].map(lambda v: problem(v) is not None), problem)


def rule_digits(column: str) -> RowRule:
    """Cell must be a non-empty string of digits (numeric IDs such as MIMIC's subject_id / study_id)."""
    return RowRule(column, "a numeric ID", lambda frame: ~frame[column].astype(str).str.strip().str.fullmatch(r"\d+"))


def rule_split(column: str = "split") -> RowRule:
    """Cell must be a split name :func:`normalise_split` knows."""
    return rule_in_set(column, sorted(_SPLIT_ALIASES))


def decode_utf8(data: bytes, file: PathLike, column: str = "text") -> str:
    """Bytes of a text file -> str; invalid UTF-8 raises :class:`DatasetFormatError` naming the file and the line."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        problem = f"invalid UTF-8 (byte {data[error.start:error.start + 1]!r} at offset {error.start}, line {line})"
        raise DatasetFormatError(file, line, column, problem) from error


def repair_strings(value: Any) -> Any:
    """Strings (also inside lists and dicts) made valid Unicode: a JSON ``"\\ud800"`` escape decodes to a lone
    surrogate that pandas/Arrow cannot store and a tokenizer cannot encode. Use as ``json.loads`` object_hook."""
    from ..processing.report_place import to_valid_unicode

    if isinstance(value, str):
        return to_valid_unicode(value)
    if isinstance(value, list):
        return [repair_strings(v) for v in value]
    if isinstance(value, dict):
        return {repair_strings(k): repair_strings(v) for k, v in value.items()}
    return value


LABEL_VALUES = (1.0, 0.0, -1.0)


def numeric_columns(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """``frame`` with ``columns`` as float64 (blank -> NaN): after :func:`validate_rows` a column that held a
    skipped text cell is still of object dtype, and label arithmetic must not see strings."""
    frame = frame.copy()
    for column in columns:
        frame[column] = numeric(frame[column])
    return frame


def label_rules(labels: Iterable[str]) -> list[RowRule]:
    """CheXpert-style label cells: ``1.0`` positive, ``0.0`` negative, ``-1.0`` uncertain, blank unmentioned."""
    return [rule_number(label, allowed=LABEL_VALUES, blank_ok=True) for label in labels]


def validate_rows(
    frame: pd.DataFrame,
    rules: Sequence[RowRule],
    path: PathLike,
    bad_rows: BadRows,
    row_numbers: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Check every row of a freshly read table against ``rules``.

    Row numbers are ``row_numbers`` (e.g. the line numbers of a text list) or else the frame's position + 1,
    so call this before any filtering or merging. With ``bad_rows.skip`` the bad rows are removed (first broken
    rule recorded per row); otherwise the earliest bad row raises :class:`DatasetFormatError`.
    """
    numbers = list(row_numbers) if row_numbers is not None else list(range(1, len(frame) + 1))
    bad = np.zeros(len(frame), dtype=bool)
    found: list[tuple[int, DatasetFormatError]] = []
    for rule in rules:
        if rule.column not in frame.columns:
            continue
        flagged = np.asarray(rule.is_bad(frame), dtype=bool) & ~bad
        for position in np.flatnonzero(flagged):
            value = frame[rule.column].iloc[position]
            problem = (rule.explain and rule.explain(value)) or f"{_show(value)} is not {rule.expected}"
            found.append((position, DatasetFormatError(path, numbers[position], rule.column, problem)))
        bad |= flagged
    for _, error in sorted(found, key=lambda item: item[0]):
        bad_rows.reject(error)  # raises the earliest one unless skipping
    return frame.loc[~bad].reset_index(drop=True) if bad.any() else frame


def _show(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "a blank cell"
    return repr(value if isinstance(value, str) else value)[:80]


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
    """Decode one image file to a PIL image through the processor's decoder (`load_image_file`): PNG / JPEG of
    any bit depth, a truncated file refused naming it; DICOM with its modality and VOI LUTs applied, min-max
    scaled and MONOCHROME1 inverted (bright bone), returned as an 8-bit ``"L"`` image."""
    from PIL import Image

    from ..processing.image_processing_place import load_image_file

    image = load_image_file(require_file(path, "image"))
    if isinstance(image, np.ndarray):  # DICOM: float32 in [0, 1]
        return Image.fromarray(np.round(image * 255).astype(np.uint8), mode="L")
    return image


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
    """Collapsed white space, valid Unicode (a JSON ``\\ud800`` escape gives a lone surrogate Arrow refuses)."""
    from ..processing.report_place import to_valid_unicode

    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return " ".join(to_valid_unicode(str(value)).split())


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


def to_dataset_dict(
    frame: pd.DataFrame, label_names: Sequence[str] | None = None, bad_rows: BadRows | None = None, source: str = ""
):
    """Turn a reader's table into a ``DatasetDict`` keyed by split, with explicit features.

    Args:
        frame: One row per image, with a ``split`` column in ``train``/``validation``/``test``.
        label_names: When given, the integer ``label`` column becomes a ``ClassLabel`` with these names, so
            the class names travel with the data.
        bad_rows: The reader's bad-row record: logged once here and attached as ``.bad_rows``.
        source: What was read (for the log line).
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
    result = DatasetDict(splits)
    result.bad_rows = bad_rows if bad_rows is not None else BadRows()
    result.bad_rows.log(source or "dataset")
    return result


def _column_values(series: pd.Series) -> list:
    """Python values for one column (NaN strings -> ``None``; numpy scalars -> Python scalars)."""
    if series.dtype == object:
        return [None if isinstance(v, float) and np.isnan(v) else v for v in series.tolist()]
    return series.tolist()


def read_json(path: PathLike) -> Any:
    """Load a JSON file, re-raising decode errors as ValueError naming the file."""
    path = require_file(path, "JSON file")
    try:
        return json.loads(decode_utf8(path.read_bytes(), path), object_hook=repair_strings)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: invalid JSON ({error})") from error
