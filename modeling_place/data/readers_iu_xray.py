"""IU X-Ray (OpenI) readers: R2Gen's ``annotation.json`` (also R2Gen's MIMIC-CXR file) and raw OpenI XML + PNG.

R2Gen layout::

    ROOT/annotation.json   {"train": [{"id", "report", "image_path": ["CXR2384_IM-0942/0.png", ...], "split"}], ...}
    ROOT/images/CXR2384_IM-0942/0.png

Raw OpenI layout (``NLMCXR_reports.tgz`` + ``NLMCXR_png.tgz``)::

    ROOT/ecgen-radiology/1.xml     <AbstractText Label="FINDINGS">...</AbstractText>,
                                   <parentImage id="CXR1_1_IM-0001-3001">
    ROOT/NLMCXR_png/CXR1_1_IM-0001-3001.png
"""
from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .readers_common import (
    BadRows,
    DatasetFormatError,
    PathLike,
    check_images,
    drop_empty_text,
    find_first_dir,
    join_sections,
    normalise_split,
    read_json,
    require_file,
    three_way_split,
    to_dataset_dict,
)

OPENI_XML_DIRS = ("ecgen-radiology", "reports", "xml")
OPENI_PNG_DIRS = ("NLMCXR_png", "images", "png")
_R2GEN_ITEM_KEYS = ("id", "report", "image_path")


def r2gen_item_problem(item: object) -> tuple[str, str] | None:
    """``None`` for a well-formed R2Gen item, else ``(key, problem)``: ``id`` a non-empty string or number,
    ``report`` a string, ``image_path`` a non-empty list of non-empty path strings."""
    if not isinstance(item, dict):
        return "item", f"{item!r:.60} is not a JSON object"
    for key in _R2GEN_ITEM_KEYS:
        if key not in item:
            return key, "the key is missing"
    if not isinstance(item["id"], (str, int)) or not str(item["id"]).strip():
        return "id", f"{item['id']!r:.60} is not a non-empty ID"
    if not isinstance(item["report"], str):
        return "report", f"{item['report']!r:.60} is not a string"
    paths = item["image_path"]
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p.strip() for p in paths):
        return "image_path", f"{paths!r:.60} is not a non-empty list of image paths"
    return None


def _r2gen_rows(annotation: dict, path: Path, image_root: Path, bad_rows: BadRows) -> list[dict]:
    """One row per image of every well-formed study in every split of an R2Gen annotation."""
    rows = []
    for split_name, items in annotation.items():
        split = normalise_split(split_name, path)
        if not isinstance(items, list):
            raise ValueError(f"{path} [{split_name!r}]: expected a list of items, got {type(items).__name__}")
        for number, item in enumerate(items, start=1):
            problem = r2gen_item_problem(item)
            if problem is not None:
                bad_rows.reject(DatasetFormatError(f"{path} [{split_name!r}]", number, *problem))
                continue
            for relative in item["image_path"]:
                rows.append(
                    {
                        "image_path": str(image_root / relative),
                        "image_id": relative,
                        "study_id": str(item.get("study_id", item["id"])),
                        "patient_id": str(item.get("subject_id", item["id"])),
                        "text": join_sections({"report": item["report"]}, ["report"]),
                        "split": split,
                    }
                )
    return rows


def read_r2gen_annotation(
    root: PathLike,
    *,
    annotation: PathLike | None = None,
    image_root: PathLike | None = None,
    missing_images: str = "error",
    skip_bad_rows: bool = False,
):
    """Read an R2Gen-style ``annotation.json`` (IU X-Ray or MIMIC-CXR) into one row per image.

    ``text`` is the annotation's ``report`` (R2Gen's findings-only, already cleaned). ``study_id`` is the item's
    ``study_id`` when present (MIMIC) else its ``id``; ``image_id`` is the relative image path. An item breaking
    :func:`r2gen_item_problem` raises :class:`DatasetFormatError` (row = item number in its split; with
    ``skip_bad_rows=True`` it is skipped and counted).
    """
    root = Path(root)
    path = require_file(Path(annotation) if annotation is not None else root / "annotation.json", "R2Gen annotation")
    content = read_json(path)
    if not isinstance(content, dict) or not content:
        raise ValueError(f"{path}: expected an object keyed by split ('train', 'val', 'test')")
    images = Path(image_root) if image_root is not None else root / "images"
    bad_rows = BadRows(skip_bad_rows)
    columns = ["image_path", "image_id", "patient_id", "study_id", "text", "split"]
    frame = pd.DataFrame(_r2gen_rows(content, path, images, bad_rows), columns=columns)
    frame = check_images(frame, missing_images, path)
    return to_dataset_dict(frame[columns], bad_rows=bad_rows, source=str(path))


def parse_openi_xml(path: PathLike) -> dict:
    """Study ID, ``findings``/``impression`` (plus other labelled sections) and image IDs of one OpenI XML."""
    try:
        tree = ElementTree.parse(path)
    except ElementTree.ParseError as error:  # also undecodable text: the XML parser names the position
        raise DatasetFormatError(path, error.position[0], "xml", f"invalid OpenI XML ({error})") from error
    sections = {
        element.get("Label", "").strip().lower(): " ".join((element.text or "").split())
        for element in tree.iter("AbstractText")
    }
    uid = tree.find(".//uId")
    return {
        "study_id": uid.get("id") if uid is not None and uid.get("id") else Path(path).stem,
        "sections": sections,
        "images": [image.get("id") for image in tree.iter("parentImage") if image.get("id")],
    }


def read_openi(
    root: PathLike,
    *,
    sections: Sequence[str] = ("findings", "impression"),
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    seed: int = 0,
    drop_empty: bool = True,
    missing_images: str = "error",
    skip_bad_rows: bool = False,
):
    """Read raw OpenI (Indiana) XML reports and PNG images; studies split train/val/test by study.

    An XML file that does not parse raises :class:`DatasetFormatError` (row = its line of the error);
    ``skip_bad_rows=True`` skips and counts it.

    Studies without images are dropped (as R2Gen does); ``text`` joins ``sections`` in order. The split
    (default 7:1:2 as in R2Gen, not R2Gen's exact draw) is two sklearn ``train_test_split`` calls.
    """
    root = Path(root)
    xml_dir = find_first_dir([root / name for name in OPENI_XML_DIRS], "OpenI XML report folder")
    png_dir = find_first_dir([root / name for name in OPENI_PNG_DIRS], "OpenI PNG image folder")
    bad_rows = BadRows(skip_bad_rows)
    studies = [_parse_or_skip(path, bad_rows) for path in sorted(xml_dir.glob("*.xml"))]
    studies = [study for study in studies if study is not None and study["images"]]
    if not studies:
        raise FileNotFoundError(f"no OpenI XML report with images found in {xml_dir.resolve()}")
    train, valid, test = split_fractions
    study_split = three_way_split(len(studies), valid + test, test_share=test / (valid + test), seed=seed)
    rows = [
        _openi_row(study, image, png_dir, sections, split)
        for study, split in zip(studies, study_split)
        for image in study["images"]
    ]
    frame = drop_empty_text(pd.DataFrame(rows), drop_empty)
    frame = check_images(frame, missing_images, png_dir)
    columns = ["image_path", "image_id", "study_id", "findings", "impression", "text", "split"]
    return to_dataset_dict(frame[columns], bad_rows=bad_rows, source=str(xml_dir))


def _parse_or_skip(path: Path, bad_rows: BadRows) -> dict | None:
    try:
        return parse_openi_xml(path)
    except DatasetFormatError as error:
        bad_rows.reject(error)
        return None


def _openi_row(study: dict, image_id: str, png_dir: Path, sections: Sequence[str], split: str) -> dict:
    found = study["sections"]
    return {
        "image_path": str(png_dir / f"{image_id}.png"),
        "image_id": image_id,
        "study_id": study["study_id"],
        "findings": found.get("findings", ""),
        "impression": found.get("impression", ""),
        "text": join_sections(found, sections),
        "split": split,
    }


def read_iu_xray(root: PathLike, *, source: str = "auto", **options):
    """IU X-Ray from R2Gen's ``annotation.json`` (``source="r2gen"``) or raw OpenI XML (``"openi"``).

    ``"auto"`` uses ``annotation.json`` when ``root`` has one, else the OpenI XML layout.
    """
    if source == "auto":
        source = "r2gen" if (Path(root) / "annotation.json").is_file() else "openi"
    if source == "r2gen":
        return read_r2gen_annotation(root, **options)
    if source == "openi":
        return read_openi(root, **options)
    raise ValueError(f"source must be 'auto', 'r2gen' or 'openi', got {source!r}")

