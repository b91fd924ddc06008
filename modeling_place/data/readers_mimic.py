"""MIMIC-CXR readers: the official MIMIC-CXR-JPG layout with reports, and MGCA's derived ``master.csv``.

Official layout (PhysioNet ``mimic-cxr-jpg`` + the reports of ``mimic-cxr``)::

    ROOT/files/p10/p10000032/s50414267/<dicom_id>.jpg
    ROOT/mimic-cxr-2.0.0-metadata.csv(.gz)   dicom_id, subject_id, study_id, ..., ViewPosition, ...
    ROOT/mimic-cxr-2.0.0-split.csv(.gz)      dicom_id, study_id, subject_id, split
    ROOT/mimic-cxr-2.0.0-chexpert.csv(.gz)   subject_id, study_id, <14 CheXpert labels>   (or -negbio)
    ROOT/mimic-cxr-reports.zip               files/p10/p10000032/s50414267.txt   (or the same .txt tree)

Reports are read from ``mimic-cxr-reports.zip`` or from a ``files/pXX/pSUBJECT/sSTUDY.txt`` tree (the reports
are not part of the JPG release), never from DICOMs.
"""
from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from .labels_place import CHEXPERT_LABELS
from .readers_common import (
    BadRows,
    DatasetFormatError,
    PathLike,
    RowRule,
    apply_uncertainty,
    check_images,
    decode_utf8,
    drop_empty_text,
    find_first_file,
    join_sections,
    label_rules,
    normalise_split,
    numeric_columns,
    read_csv_table,
    report_columns,
    require_columns,
    rule_digits,
    rule_in_set,
    rule_not_blank,
    rule_split,
    strip_prefix_component,
    to_dataset_dict,
    validate_rows,
)

MIMIC_CSV_PREFIX = "mimic-cxr-2.0.0-"
_ID_COLUMNS = ("dicom_id", "subject_id", "study_id")
_ID_RULES = [rule_not_blank("dicom_id"), rule_digits("subject_id"), rule_digits("study_id")]
MIMIC_SPLITS = ("train", "validate", "test")


def mimic_rules(kind: str) -> list[RowRule]:
    """Rules of one ``mimic-cxr-2.0.0-{kind}.csv``: IDs present (subject/study numeric); ``split`` in
    train/validate/test; labels 1.0 / 0.0 / -1.0 / blank. ``ViewPosition`` may be blank (~15.8k rows are)."""
    if kind == "split":
        return [*_ID_RULES, rule_in_set("split", MIMIC_SPLITS)]
    if kind in ("chexpert", "negbio"):
        return [*_ID_RULES[1:], *label_rules(CHEXPERT_LABELS)]
    return list(_ID_RULES)


def find_mimic_csv(root: PathLike, kind: str) -> Path:
    """Locate ``mimic-cxr-2.0.0-{kind}.csv.gz`` (or ``.csv``) in ``root``; the error lists both full paths."""
    stem = Path(root) / f"{MIMIC_CSV_PREFIX}{kind}"
    return find_first_file(
        [stem.with_name(stem.name + ".csv.gz"), stem.with_name(stem.name + ".csv")], f"MIMIC-CXR-JPG {kind} CSV"
    )


def mimic_image_path(files_root: PathLike, subject_id: str, study_id: str, dicom_id: str) -> str:
    """``files/p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg`` under ``files_root`` (IDs without prefixes)."""
    return str(Path(files_root) / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}" / f"{dicom_id}.jpg")


class MimicReports:
    """Read MIMIC-CXR free-text reports by study from ``mimic-cxr-reports.zip`` or a ``files/`` .txt tree."""

    def __init__(self, source: PathLike):
        self.source = Path(source)
        self._zip_names: dict[str, str] | None = None
        if self.source.is_file():
            with zipfile.ZipFile(self.source) as archive:
                # Index by the study file name: study IDs are unique across subjects, and the zip's top folder
                # differs between releases (``files/...`` vs ``mimic-cxr-reports/files/...``).
                self._zip_names = {
                    Path(name).name: name for name in archive.namelist() if name.endswith(".txt")
                }

    @classmethod
    def locate(cls, root: PathLike, reports: PathLike | None = None) -> MimicReports:
        """Use ``reports`` if given, else ``ROOT/mimic-cxr-reports.zip``, else the ``ROOT/files`` .txt tree."""
        root = Path(root)
        if reports is not None:
            path = Path(reports)
            if not path.exists():
                raise FileNotFoundError(f"MIMIC-CXR reports not found: expected {path.resolve()}")
            return cls(path)
        zipped = root / "mimic-cxr-reports.zip"
        if zipped.is_file():
            return cls(zipped)
        if any((root / "files").glob("p*/p*/s*.txt")):
            return cls(root / "files")
        raise FileNotFoundError(
            f"MIMIC-CXR reports not found: expected {zipped.resolve()} or report files "
            f"{(root / 'files').resolve()}/pXX/pSUBJECT/sSTUDY.txt (pass reports=False to read labels only)"
        )

    def read_many(
        self, subject_ids: Sequence[str], study_ids: Sequence[str], bad_rows: BadRows | None = None
    ) -> list[str | None]:
        """Report texts in the order given; ``None`` where a study has no report file.

        A file that is not valid UTF-8 raises :class:`DatasetFormatError` naming it (for the zip:
        ``zip!member``), or with ``bad_rows.skip`` is counted and read as missing.
        """
        bad_rows = bad_rows if bad_rows is not None else BadRows()
        cache: dict[str, str | None] = {}  # several images share a study's report
        if self._zip_names is None:
            return [self._cached(cache, study, lambda s=subject, t=study: self._read_tree(s, t), bad_rows)
                    for subject, study in zip(subject_ids, study_ids)]
        with zipfile.ZipFile(self.source) as archive:
            return [self._cached(cache, study, lambda t=study: self._read_zip(archive, t), bad_rows)
                    for study in study_ids]

    @staticmethod
    def _cached(cache: dict[str, str | None], study_id: str, read, bad_rows: BadRows) -> str | None:
        if study_id not in cache:
            try:
                cache[study_id] = read()
            except DatasetFormatError as error:
                bad_rows.reject(error)
                cache[study_id] = None
        return cache[study_id]

    def _read_zip(self, archive: zipfile.ZipFile, study_id: str) -> str | None:
        name = self._zip_names.get(f"s{study_id}.txt")
        return decode_utf8(archive.read(name), f"{self.source}!{name}") if name else None

    def _read_tree(self, subject_id: str, study_id: str) -> str | None:
        path = self.source / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}.txt"
        return decode_utf8(path.read_bytes(), path) if path.is_file() else None


def _read_id_table(path: Path, required: Sequence[str], rules: Sequence[RowRule], bad_rows: BadRows) -> pd.DataFrame:
    frame = read_csv_table(path, string_columns=[c for c in _ID_COLUMNS if c in required])
    require_columns(frame, required, path)
    return validate_rows(frame, rules, path, bad_rows)


def _mimic_frame(root: Path, views: Sequence[str] | None, label_source: str, bad_rows: BadRows) -> pd.DataFrame:
    """Per-image table: metadata (view-filtered) + official split + study-level labels."""
    metadata_path = find_mimic_csv(root, "metadata")
    metadata = _read_id_table(metadata_path, [*_ID_COLUMNS, "ViewPosition"], mimic_rules("metadata"), bad_rows)
    if views is not None:
        metadata = metadata.loc[metadata["ViewPosition"].isin(list(views))]
    split_path = find_mimic_csv(root, "split")
    splits = _read_id_table(split_path, [*_ID_COLUMNS, "split"], mimic_rules("split"), bad_rows)
    frame = metadata[[*_ID_COLUMNS, "ViewPosition"]].merge(
        splits[[*_ID_COLUMNS, "split"]], on=list(_ID_COLUMNS), how="inner"
    )
    frame["split"] = [normalise_split(s, split_path) for s in frame["split"]]
    labels_path = find_mimic_csv(root, label_source)
    labels = _read_id_table(labels_path, ["subject_id", "study_id", *CHEXPERT_LABELS], mimic_rules(label_source), bad_rows)
    labels = numeric_columns(labels, CHEXPERT_LABELS)
    # Left join: a study absent from the label file gets blank (= unmentioned) labels.
    return frame.merge(labels, on=["subject_id", "study_id"], how="left")


def read_mimic_cxr(
    root: PathLike,
    *,
    reports: PathLike | bool | None = None,
    views: Sequence[str] | None = ("PA", "AP"),
    label_source: str = "chexpert",
    uncertainty: str | Mapping[str, float] = "zeros",
    sections: Sequence[str] = ("findings", "impression"),
    drop_empty: bool = True,
    missing_images: str = "error",
    skip_bad_rows: bool = False,
):
    """Read MIMIC-CXR-JPG (images, metadata, official split, CheXpert/NegBio labels) with report text.

    Args:
        root: The MIMIC-CXR-JPG root (holding ``files/`` and the ``mimic-cxr-2.0.0-*.csv(.gz)`` tables).
        reports: Path of ``mimic-cxr-reports.zip`` or of a ``files/`` report tree; ``None`` looks in ``root``;
            ``False`` reads no reports (no text columns).
        views: ``ViewPosition`` values kept (frontal = PA/AP; empty view positions are dropped). ``None`` = all.
        label_source: ``"chexpert"`` or ``"negbio"`` label table.
        uncertainty: Policy for -1 labels (see :func:`readers_common.apply_uncertainty`).
        sections: Report sections joined into ``text``.
        drop_empty: Drop images whose report has none of ``sections`` (as MGCA does); a report whose section
            headers are all empty has no text.
        missing_images: ``"error"``, ``"drop"`` or ``"ignore"``.
        skip_bad_rows: Skip (and count) table rows breaking :func:`mimic_rules` and report files that are not
            UTF-8, instead of raising :class:`DatasetFormatError`.

    Returns:
        ``DatasetDict`` (train/validation/test = official train/validate/test) with ``image_path``, ``image_id``
        (dicom_id), ``patient_id``/``subject_id``, ``study_id`` (numeric, no ``s``), ``view``, ``findings``,
        ``impression``, ``text``, the 14 CheXpert labels and ``split``.
    """
    if label_source not in ("chexpert", "negbio"):
        raise ValueError(f"label_source must be 'chexpert' or 'negbio', got {label_source!r}")
    root = Path(root)
    bad_rows = BadRows(skip_bad_rows)
    frame = _mimic_frame(root, views, label_source, bad_rows)
    frame = apply_uncertainty(frame, CHEXPERT_LABELS, uncertainty)
    frame["image_path"] = [
        mimic_image_path(root / "files", *ids) for ids in frame[["subject_id", "study_id", "dicom_id"]].to_numpy()
    ]
    frame = frame.rename(columns={"dicom_id": "image_id", "ViewPosition": "view"})
    frame["patient_id"] = frame["subject_id"]
    if reports is not False:
        source = MimicReports.locate(root, None if reports in (None, True) else reports)
        texts = source.read_many(frame["subject_id"].tolist(), frame["study_id"].tolist(), bad_rows)
        for column, values in report_columns(texts, sections).items():
            frame[column] = values
        frame = drop_empty_text(frame, drop_empty)
    frame = check_images(frame, missing_images, root / "files")
    leading = ["image_path", "image_id", "patient_id", "subject_id", "study_id", "view"]
    text = [c for c in ("findings", "impression", "text") if c in frame.columns]
    return to_dataset_dict(frame[[*leading, *text, *CHEXPERT_LABELS, "split"]], bad_rows=bad_rows, source=str(root))


_MASTER_COLUMNS = ("Path", "dicom_id", "subject_id", "study_id", "ViewPosition", "impression", "findings", "split")


def _join_companion_labels(frame: pd.DataFrame, root: Path, uncertainty, bad_rows: BadRows) -> pd.DataFrame:
    """Merge the 14 labels of MGCA's companion ``train.csv``/``test.csv`` (keyed by ``Path``) into ``frame``."""
    tables = []
    for name in ("train.csv", "test.csv"):
        path = find_first_file([root / name], "MGCA companion label table")
        table = read_csv_table(path, string_columns=["Path"])
        require_columns(table, ["Path", *CHEXPERT_LABELS], path)
        table = validate_rows(table, [rule_not_blank("Path"), *label_rules(CHEXPERT_LABELS)], path, bad_rows)
        tables.append(numeric_columns(table[["Path", *CHEXPERT_LABELS]], CHEXPERT_LABELS))
    labels = pd.concat(tables).drop_duplicates("Path")
    merged = frame.merge(labels, on="Path", how="left")
    return apply_uncertainty(merged, CHEXPERT_LABELS, uncertainty)


def read_mgca_master(
    root: PathLike,
    *,
    csv: str = "master.csv",
    sections: Sequence[str] = ("impression", "findings"),
    with_labels: bool = False,
    uncertainty: str | Mapping[str, float] = "zeros",
    drop_empty: bool = True,
    missing_images: str = "error",
    skip_bad_rows: bool = False,
):
    """Read MGCA's derived ``master.csv`` (written into the MIMIC-CXR-JPG root by MGCA's preprocessing).

    ``Path`` (``2.0.0/files/pXX/...jpg``) is resolved under ``root`` after dropping its first component;
    ``split`` ``train``/``valid`` becomes ``train``/``validation``. ``text`` joins ``sections`` in MGCA's order
    (impression, then findings). ``with_labels`` adds the 14 labels from MGCA's companion
    ``train.csv``/``test.csv``. Rows with a blank ``Path``/``dicom_id`` or an unknown ``split``, and label cells
    outside 1.0 / 0.0 / -1.0 / blank, raise :class:`DatasetFormatError` (``skip_bad_rows=True``: skipped, counted).
    """
    root = Path(root)
    path = find_first_file([root / csv], "MGCA master table")
    frame = read_csv_table(path, string_columns=["Path", "dicom_id", "subject_id", "study_id"])
    require_columns(frame, _MASTER_COLUMNS, path)
    bad_rows = BadRows(skip_bad_rows)
    frame = validate_rows(frame, [rule_not_blank("Path"), rule_not_blank("dicom_id"), rule_split()], path, bad_rows)
    if with_labels:
        frame = _join_companion_labels(frame, root, uncertainty, bad_rows)
    frame["image_path"] = [str(root / strip_prefix_component(p)) for p in frame["Path"]]
    frame["split"] = [normalise_split(s, path) for s in frame["split"]]
    frame["study_id"] = frame["study_id"].str.removeprefix("s")
    frame["text"] = [join_sections(row, sections) for row in frame[["impression", "findings"]].to_dict("records")]
    for column in ("impression", "findings"):
        frame[column] = [join_sections({column: v}, [column]) for v in frame[column]]
    frame = frame.rename(columns={"dicom_id": "image_id", "ViewPosition": "view"})
    frame["patient_id"] = frame["subject_id"]
    frame = check_images(drop_empty_text(frame, drop_empty), missing_images, path)
    labels = list(CHEXPERT_LABELS) if with_labels else []
    columns = ["image_path", "image_id", "patient_id", "subject_id", "study_id", "view", "findings", "impression"]
    return to_dataset_dict(frame[[*columns, "text", *labels, "split"]], bad_rows=bad_rows, source=str(path))
