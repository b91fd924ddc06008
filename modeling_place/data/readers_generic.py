"""Generic image-report table reader: CSV/TSV or JSON Lines with ``image_path`` and ``text``.

Accepted columns: ``image_path`` (a path, or a list of paths -- a JSON list in CSV cells), ``text`` or
``findings``/``impression``, optional ``split``, optional ``study_id``/``patient_id``/``image_id``, and label
columns (recognised by name, renamed to canonical names). Relative image paths are resolved against
``image_root`` (default: the table's folder). The CSV separator (comma or tab) is detected from the header;
anything else is a clear error naming the file.
"""
from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .labels_place import is_known_label, canonical_label
from .readers_common import (
    BadRows,
    PathLike,
    RowRule,
    check_images,
    decode_utf8,
    join_sections,
    label_rules,
    normalise_split,
    numeric,
    read_csv_table,
    repair_strings,
    require_columns,
    require_file,
    rule_in_set,
    rule_per_value,
    to_dataset_dict,
    validate_rows,
)
from .readers_common import _SPLIT_ALIASES

_SEPARATORS = {",": "comma", "\t": "tab"}
_ID_COLUMNS = ("study_id", "patient_id", "image_id")


def detect_separator(path: PathLike, image_column: str = "image_path") -> str:
    """Return ``","`` or ``"\\t"``: the separator under which the header contains ``image_column``."""
    path = require_file(path, "table")
    with open(path, encoding="utf-8", newline="") as handle:
        header_line = handle.readline()
    for separator in _SEPARATORS:
        header = [name.strip() for name in next(csv.reader([header_line], delimiter=separator), [])]
        if image_column in header:
            return separator
    raise ValueError(
        f"{path}: no column {image_column!r} in the header read with a comma or a tab separator "
        f"(header: {header_line.strip()[:200]!r}); write a comma- or tab-separated file with that column"
    )


def _read_rows(path: Path, image_column: str, separator: str | None) -> tuple[pd.DataFrame, list[int] | None]:
    """The table and, for JSON Lines, the line number of each row (blank lines are skipped)."""
    if path.suffix.lower() in (".jsonl", ".json"):
        return _read_json_rows(path)
    separator = separator or detect_separator(path, image_column)
    return read_csv_table(path, sep=separator, dtype=str, keep_default_na=False), None


def _read_json_rows(path: Path) -> tuple[pd.DataFrame, list[int] | None]:
    """JSON Lines (one object per line) or a JSON array of objects."""
    text = decode_utf8(path.read_bytes(), path)
    numbers = None
    try:
        if path.suffix.lower() == ".json":
            rows = json.loads(text, object_hook=repair_strings)
        else:
            numbered = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
            rows = [json.loads(line, object_hook=repair_strings) for _, line in numbered]
            numbers = [n for n, _ in numbered]
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: invalid JSON ({error})") from error
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ValueError(f"{path}: expected JSON objects, one per row")
    return pd.DataFrame(rows), numbers


def _as_path_list(value: Any) -> list[str]:
    """A cell's image paths: a list, a JSON-list string, or a single path string (validated beforehand)."""
    if isinstance(value, list):
        return [str(v) for v in value]
    text = str(value).strip()
    return [str(v) for v in json.loads(text)] if text.startswith("[") else [text]


def _path_cell_problem(value: Any) -> str | None:
    """``None`` for a non-empty path or a non-empty list of non-empty paths (a list or a JSON-list string)."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return f"image path list {value[:60]!r} is not valid JSON"
    if isinstance(value, list):
        if value and all(isinstance(v, str) and v.strip() for v in value):
            return None
        return f"image path list {value!r:.60} must hold one or more non-empty path strings"
    if isinstance(value, str) and value.strip():
        return None
    return f"{value!r:.60} is not an image path"


def _table_rules(frame: pd.DataFrame, image_column: str, label_columns: list[str]) -> list[RowRule]:
    """Generic-table rules: a valid image-path cell, a known or blank split, labels 1 / 0 / -1 / blank."""
    rules = [rule_per_value(image_column, "an image path or a list of paths", _path_cell_problem)]
    if "split" in frame.columns:
        rules.append(rule_in_set("split", sorted(_SPLIT_ALIASES), blank_ok=True))
    return rules + label_rules(label_columns)


def _text_column(frame: pd.DataFrame, text_column: str, sections: Sequence[str], path: Path) -> list[str]:
    if text_column in frame.columns:
        return [join_sections({"text": v}, ["text"]) for v in frame[text_column]]
    present = [s for s in sections if s in frame.columns]
    if not present:
        wanted = [text_column, *sections]
        raise ValueError(f"{path}: missing a text column; expected one of {wanted}, found {list(frame.columns)}")
    return [join_sections(row, present) for row in frame[present].to_dict("records")]


def read_table_dataset(
    root: PathLike,
    *,
    image_root: PathLike | None = None,
    image_column: str = "image_path",
    text_column: str = "text",
    sections: Sequence[str] = ("findings", "impression"),
    separator: str | None = None,
    label_source: str = "synthetic",
    default_split: str = "train",
    missing_images: str = "error",
    skip_bad_rows: bool = False,
):
    """Read a generic CSV/TSV/JSONL image-report table (``root`` is the table file).

    Rows with several images become one row per image sharing ``study_id`` (the row's ``study_id``/``id``
    column, else its row number). Columns named like a known label of ``label_source`` are renamed to the
    canonical name and cast to float; other extra columns are kept as strings.

    Rows with an empty or malformed image-path cell, an unknown split or a label cell other than 1 / 0 / -1 /
    blank raise :class:`DatasetFormatError` (row = data row, or the line of a JSON Lines file);
    ``skip_bad_rows=True`` skips and counts them.
    """
    path = require_file(root, "table")
    frame, numbers = _read_rows(path, image_column, separator)
    require_columns(frame, [image_column], path)
    bad_rows = BadRows(skip_bad_rows)
    labels = [c for c in frame.columns if is_known_label(str(c), label_source)]
    frame = validate_rows(frame, _table_rules(frame, image_column, labels), path, bad_rows, numbers)
    images = Path(image_root) if image_root is not None else path.parent
    frame["text"] = _text_column(frame, text_column, sections, path)
    frame["split"] = _split_column(frame, default_split, path)
    if "study_id" not in frame.columns:
        frame["study_id"] = frame["id"].astype(str) if "id" in frame.columns else [str(i) for i in range(len(frame))]
    frame["_images"] = [_as_path_list(v) for v in frame[image_column]]
    frame = frame.drop(columns=[image_column]).explode("_images", ignore_index=True)
    frame = frame.loc[frame["_images"].notna()].rename(columns={"_images": "image_id"})
    frame["image_path"] = [str(images / p) for p in frame["image_id"]]
    frame = _canonical_label_columns(frame, label_source)
    frame = check_images(frame.reset_index(drop=True), missing_images, path)
    leading = ["image_path", "image_id", *(c for c in _ID_COLUMNS[:2] if c in frame.columns), "text"]
    rest = [c for c in frame.columns if c not in (*leading, "split")]
    return to_dataset_dict(frame[[*leading, *rest, "split"]], bad_rows=bad_rows, source=str(path))


def _split_column(frame: pd.DataFrame, default_split: str, path: Path) -> list[str]:
    """Normalised split names; missing or blank cells take ``default_split``."""
    values = frame["split"] if "split" in frame.columns else [None] * len(frame)
    return [normalise_split(v if isinstance(v, str) and v.strip() else default_split, path) for v in values]


def _canonical_label_columns(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Rename label columns to canonical names and cast them to float (blank -> 0)."""
    renames = {c: canonical_label(c, source) for c in frame.columns if is_known_label(str(c), source)}
    frame = frame.rename(columns=renames)
    for column in renames.values():
        frame[column] = numeric(frame[column]).fillna(0).astype("float32")  # validated: blank is the only NaN
    other = [c for c in frame.columns if c not in renames.values()]
    frame[other] = frame[other].where(frame[other].notna(), "").astype(str)
    return frame
