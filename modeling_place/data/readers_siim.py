"""SIIM-ACR Pneumothorax reader and its run-length-encoding (RLE) codec.

Layout (stage 1, and the stage-2 re-release)::

    ROOT/train-rle.csv         "ImageId, EncodedPixels"  (note the leading space; values also start with one)
    ROOT/dicom-images-train/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm
    -- or --
    ROOT/stage_2_train.csv     ImageId, EncodedPixels   with ``ID_...`` image names
    ROOT/stage_2_images/ID_....dcm   (any folder depth; PNG conversions are accepted too)

The RLE is *relative* (each start counts from the end of the previous run) over pixels in *column-major*
order; ``-1`` means an empty mask, and an image with several pneumothorax regions has several rows (union).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .readers_common import (
    BadRows,
    PathLike,
    check_images,
    find_first_dir,
    find_first_file,
    read_csv_table,
    require_columns,
    rule_not_blank,
    rule_per_value,
    three_way_split,
    to_dataset_dict,
    validate_rows,
)

SIIM_CSV_NAMES = ("train-rle.csv", "stage_2_train.csv")
SIIM_IMAGE_DIRS = ("dicom-images-train", "stage_2_images", "stage_2_train", "images", "train")
SIIM_IMAGE_SIZE = 1024
EMPTY_RLE = "-1"


def _rle_runs(rle: str, n_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Absolute (start, end) of each run of a relative RLE string, validated against the image size."""
    try:
        values = np.asarray(rle.split(), dtype=np.int64)
    except ValueError as error:
        raise ValueError(f"RLE {rle[:40]!r} contains a non-integer token") from error
    if values.size % 2:
        raise ValueError(f"RLE {rle[:40]!r} has an odd number of values (expected start/length pairs)")
    offsets, lengths = values[0::2], values[1::2]
    if (offsets < 0).any() or (lengths < 0).any():
        raise ValueError(f"RLE {rle[:40]!r} has a negative offset or length")
    ends = np.cumsum(offsets + lengths)
    starts = ends - lengths
    if ends.size and ends[-1] > n_pixels:
        raise ValueError(f"RLE {rle[:40]!r} runs past the {n_pixels} pixels of the image")
    return starts, ends


def rle_problem(rle: object, height: int = SIIM_IMAGE_SIZE, width: int = SIIM_IMAGE_SIZE) -> str | None:
    """``None`` if ``rle`` is ``-1`` or a well-formed relative RLE inside a ``height x width`` image, else what is
    wrong (quoting the value): the read-time check, so a bad mask never waits until decoding to fail."""
    text = rle.strip() if isinstance(rle, str) else ""
    if text == EMPTY_RLE:
        return None
    if not text:
        return f"{rle!r} is not an RLE (an empty mask is written -1)"
    try:
        starts, ends = _rle_runs(text, height * width)
    except ValueError as error:
        return str(error)
    if not starts.size or (ends == starts).any():
        return f"RLE {text[:40]!r} has a run of length 0"
    return None


def rle_decode(rle: str, height: int, width: int) -> np.ndarray:
    """Decode one SIIM relative, column-major RLE string to a ``(height, width)`` uint8 mask of 0/1.

    Equivalent to the Kaggle/MGCA ``rle2mask(rle, width, height)`` followed by ``.T``; ``"-1"`` (or an empty
    string) decodes to an all-zero mask.
    """
    rle = rle.strip()
    n_pixels = height * width
    if rle in ("", EMPTY_RLE):
        return np.zeros((height, width), dtype=np.uint8)
    starts, ends = _rle_runs(rle, n_pixels)
    # Mark run boundaries and integrate: pixels covered by a run get a positive count.
    boundaries = np.zeros(n_pixels + 1, dtype=np.int32)
    np.add.at(boundaries, starts, 1)
    np.add.at(boundaries, ends, -1)
    flat = np.cumsum(boundaries[:-1]) > 0
    return flat.reshape((height, width), order="F").astype(np.uint8)


def rle_encode(mask: np.ndarray) -> str:
    """Encode a 2-D mask (non-zero = foreground) as a SIIM relative column-major RLE; empty -> ``"-1"``."""
    flat = (np.asarray(mask) > 0).reshape(-1, order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [0]])))
    if changes.size == 0:
        return EMPTY_RLE
    starts, ends = changes[0::2], changes[1::2]
    offsets = starts - np.concatenate([[0], ends[:-1]])
    return " ".join(map(str, np.stack([offsets, ends - starts], axis=1).ravel()))


def decode_siim_mask(rles: Sequence[str], height: int = SIIM_IMAGE_SIZE, width: int = SIIM_IMAGE_SIZE) -> np.ndarray:
    """Union of the masks of all RLE rows of one image (the ``mask_rle`` column), as uint8 0/1."""
    mask = np.zeros((height, width), dtype=np.uint8)
    for rle in rles:
        mask |= rle_decode(rle, height, width)
    return mask


def read_siim_rle_table(path: PathLike, bad_rows: BadRows | None = None) -> pd.DataFrame:
    """The RLE CSV with header and values stripped (``" EncodedPixels"`` -> ``EncodedPixels``, ``" -1"`` -> ``-1``),
    every row checked: an ``ImageId``, and ``EncodedPixels`` ``-1`` or a well-formed RLE inside 1024 x 1024."""
    frame = read_csv_table(path, dtype=str, keep_default_na=False)
    require_columns(frame, ["ImageId", "EncodedPixels"], path)
    frame = frame.assign(ImageId=frame["ImageId"].str.strip(), EncodedPixels=frame["EncodedPixels"].str.strip())
    rules = [rule_not_blank("ImageId"), rule_per_value("EncodedPixels", "-1 or an RLE inside 1024 x 1024", rle_problem)]
    return validate_rows(frame, rules, path, bad_rows if bad_rows is not None else BadRows())


def group_siim_masks(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per ``ImageId`` (first-seen order) with its non-empty RLEs and the ``Pneumothorax`` label."""
    grouped = rows.groupby("ImageId", sort=False)["EncodedPixels"]
    rles = grouped.agg(lambda values: [v for v in values if v not in ("", EMPTY_RLE)])
    labels = np.array([float(bool(r)) for r in rles], dtype=np.float32)
    return pd.DataFrame({"image_id": rles.index, "mask_rle": rles.to_numpy(), "Pneumothorax": labels})


def index_images(folder: Path, suffixes: Sequence[str] = (".dcm", ".png")) -> dict[str, str]:
    """Map file stem -> path for every image under ``folder`` at any depth (stage-1 trees are 3 deep)."""
    index: dict[str, str] = {}
    for suffix in suffixes:
        for path in folder.rglob(f"*{suffix}"):
            index.setdefault(path.stem, str(path))
    return index


def read_siim_pneumothorax(
    root: PathLike,
    *,
    csv: PathLike | None = None,
    image_dir: PathLike | None = None,
    split_scheme: str = "mgca",
    balance_train_negatives: bool = False,
    seed: int = 0,
    missing_images: str = "error",
    skip_bad_rows: bool = False,
):
    """Read SIIM-ACR Pneumothorax: one row per image with the union-able RLE rows and a binary label.

    Args:
        root: Dataset folder.
        csv: RLE table; default ``train-rle.csv`` or ``stage_2_train.csv`` in ``root``.
        image_dir: Image folder (searched recursively for ``<ImageId>.dcm``/``.png``); default the first of
            ``dicom-images-train``, ``stage_2_images``, ``stage_2_train``, ``images``, ``train`` in ``root``.
        split_scheme: ``"mgca"`` (70/15/15 with sklearn ``random_state=seed``, by image so that the rows of one
            image never straddle splits -- MGCA splits rows) or ``"none"`` (all train).
        balance_train_negatives: Down-sample training negatives to the number of positive training images.
        seed: Split / sampling seed.
        missing_images: ``"error"``, ``"drop"`` or ``"ignore"``.
        skip_bad_rows: Skip (and count) rows with a blank ``ImageId`` or an invalid RLE (:func:`rle_problem`)
            instead of raising :class:`DatasetFormatError` naming the file, row and column.

    Returns:
        ``DatasetDict`` with ``image_path``, ``image_id``, ``mask_rle`` (list of RLE strings; decode with
        :func:`decode_siim_mask`, 1024x1024), ``Pneumothorax``, ``split``.
    """
    root = Path(root)
    csv_path = Path(csv) if csv is not None else find_first_file([root / n for n in SIIM_CSV_NAMES], "SIIM RLE CSV")
    bad_rows = BadRows(skip_bad_rows)
    frame = group_siim_masks(read_siim_rle_table(csv_path, bad_rows))
    folder = Path(image_dir) if image_dir is not None else find_first_dir(
        [root / name for name in SIIM_IMAGE_DIRS], "SIIM image folder"
    )
    images = index_images(folder)
    frame["image_path"] = [images.get(i, str(folder / f"{i}.dcm")) for i in frame["image_id"]]
    frame = check_images(frame, missing_images, csv_path)
    frame["split"] = _siim_splits(len(frame), split_scheme, seed)
    if balance_train_negatives:
        frame = _balance_negatives(frame, seed)
    columns = ["image_path", "image_id", "mask_rle", "Pneumothorax", "split"]
    return to_dataset_dict(frame[columns], bad_rows=bad_rows, source=str(csv_path))


def _siim_splits(n_images: int, scheme: str, seed: int) -> np.ndarray:
    if scheme == "none":
        return np.full(n_images, "train", dtype=object)
    if scheme != "mgca":
        raise ValueError(f"split_scheme must be 'mgca' or 'none', got {scheme!r}")
    return three_way_split(n_images, 0.3, seed=seed)


def _balance_negatives(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Keep as many training negatives as training positives (MGCA's segmentation training set)."""
    in_train = frame["split"] == "train"
    negatives = frame.index[in_train & (frame["Pneumothorax"] == 0)]
    n_positive = int((in_train & (frame["Pneumothorax"] == 1)).sum())
    keep = np.random.default_rng(seed).choice(negatives, size=min(n_positive, len(negatives)), replace=False)
    dropped = negatives.difference(keep)
    return frame.drop(index=dropped).reset_index(drop=True)
