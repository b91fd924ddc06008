"""``place-prepare``: read a real dataset from its official layout and write the table a run needs.

Usage::

    place-prepare DATASET --root ROOT --out OUT [--format arrow csv parquet] [--set KEY=VALUE ...] [--overwrite]
                  [--image-cache SIZE [--image-cache-format jpeg|png] [--num-proc N]]

Writes into OUT:

* ``dataset/`` -- the ``DatasetDict`` (``save_to_disk``; reload with ``datasets.load_from_disk``) [arrow]
* ``tables/{split}.csv`` / ``tables/{split}.parquet`` -- the same rows (list cells as JSON in CSV) [csv/parquet]
* ``splits/{split}.txt`` -- the ``image_id`` of every row, one per line (IDs only: no text, no pixels)
* ``manifest.json`` -- dataset name, root, options, rows per split, columns and the files written

``--image-cache SIZE`` (arrow only) adds an ``image`` column to ``dataset/``: every image decoded once (JPEGs in
draft mode), reduced to 8-bit grey with its longer side at most SIZE px (aspect kept) and stored encoded (JPEG
quality 95 or PNG) inside the Arrow shards. Training with ``--dataset prepared --data_root OUT`` reads those
small images instead of the full-size originals: a ~2,500 x 3,000 radiograph costs tens of ms to decode, a
512 px JPEG a few (benchmarks/input_pipeline.py). An unreadable image gets an empty cell, which training skips
and counts as a bad sample; their number is in ``manifest.json``.

Everything is written into a temporary folder beside OUT and renamed to OUT only when complete, so a failure
(or an interrupted run) never leaves a partial OUT; ``--overwrite`` swaps the old folder out only then.

User errors (missing files, wrong columns, bad rows, bad options) print one line ``place-prepare: error: ...``
and exit 2. ``--set skip_bad_rows=true`` skips bad rows instead; their counts go to ``manifest.json``.
"""
from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .readers_place import READERS, load_dataset_by_name

FORMATS = ("arrow", "csv", "parquet")
CACHE_FORMATS = ("jpeg", "png")
CACHE_JPEG_QUALITY = 95  # MIMIC-CXR-JPG's own quality
CACHE_SHARD_SIZE = "500MB"
CACHE_FIT_SIZE = 256  # the processor's resize for 224 px training (8/7 x 224): cache sizes k x 256 keep its geometry


class _OneLineParser(argparse.ArgumentParser):
    """Argument parser whose usage errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``place-prepare`` command-line interface."""
    parser = _OneLineParser(prog="place-prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=list(READERS), help="dataset reader name")
    parser.add_argument("--root", required=True, type=Path, help="dataset folder (for 'csv': the table file)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--format", nargs="+", choices=FORMATS, default=["arrow"], help="table formats to write")
    parser.add_argument(
        "--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
        help="reader option; VALUE is parsed as JSON when possible (numbers, true/false, lists, objects)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing prepared folder")
    parser.add_argument("--image-cache", type=int, default=None, metavar="SIZE",
                        help="store every image resized (longer side <= SIZE px, 8-bit grey) inside dataset/")
    parser.add_argument("--image-cache-format", choices=CACHE_FORMATS, default="jpeg")
    parser.add_argument("--num-proc", type=int, default=1, help="processes that resize images for the cache")
    return parser


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``["uncertainty=ones", "seed=1", "views=[\\"PA\\"]"]`` -> ``{"uncertainty": "ones", "seed": 1, ...}``."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def write_split_ids(dataset_dict, out: Path) -> list[str]:
    """``splits/{split}.txt`` with the unique ``image_id`` values of each split, in row order."""
    folder = out / "splits"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for split, dataset in dataset_dict.items():
        ids = dict.fromkeys(str(i) for i in dataset["image_id"])
        path = folder / f"{split}.txt"
        path.write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
        written.append(str(path.relative_to(out)))
    return written


def write_tables(dataset_dict, out: Path, formats: Sequence[str]) -> list[str]:
    """Save the dataset in each requested format; returns the written paths relative to ``out``."""
    written = []
    if "arrow" in formats:
        dataset_dict.save_to_disk(str(out / "dataset"), max_shard_size=CACHE_SHARD_SIZE)
        written.append("dataset")
    for split, dataset in dataset_dict.items():
        if "image" in dataset.column_names:  # encoded image bytes belong in the Arrow shards, not in tables
            dataset = dataset.remove_columns("image")
        if "parquet" in formats:
            (out / "tables").mkdir(parents=True, exist_ok=True)
            dataset.to_parquet(str(out / "tables" / f"{split}.parquet"))
            written.append(f"tables/{split}.parquet")
        if "csv" in formats:
            (out / "tables").mkdir(parents=True, exist_ok=True)
            _to_csv(dataset, out / "tables" / f"{split}.csv")
            written.append(f"tables/{split}.csv")
    return written


def _to_csv(dataset, path: Path) -> None:
    """CSV with list cells (boxes, RLE lists) written as JSON so they read back unambiguously."""
    frame = dataset.to_pandas()
    for column in frame.columns:
        if frame[column].map(lambda v: hasattr(v, "__len__") and not isinstance(v, str)).any():
            frame[column] = frame[column].map(lambda v: json.dumps(_plain(v)))
    frame.to_csv(path, index=False)


def _plain(value: Any) -> Any:
    """numpy arrays (as pandas returns nested lists) and numpy scalars (float32 box corners) -> plain Python."""
    if hasattr(value, "__len__") and not isinstance(value, str):
        return [_plain(v) for v in value]
    return value.item() if hasattr(value, "item") else value


@dataclass
class ImageCache:
    """`--image-cache`: the longest side in pixels, the encoding, and the processes that build it."""

    size: int
    image_format: str = "jpeg"
    num_proc: int = 1

    def __post_init__(self) -> None:
        if self.size < 16 or self.image_format not in CACHE_FORMATS or self.num_proc < 1:
            raise ValueError(f"--image-cache needs SIZE >= 16, a format in {CACHE_FORMATS} and --num-proc >= 1, "
                             f"got {self.size}, {self.image_format!r}, {self.num_proc}")


def cached_image(path: str | None, size: int, image_format: str) -> dict[str, Any] | None:
    """One image for the cache, as `datasets.Image` stores it (`{"bytes", "path"}`), or None when unreadable.

    8-bit grey (the processor reduces every image to grey anyway), longer side at most `size` px with the aspect
    kept (`cache_shape`); a JPEG is decoded in draft mode at >= `size` (libjpeg's scaled IDCT)."""
    import numpy as np
    import PIL.Image

    from modeling_place.processing.image_processing_place import load_image_file, to_grayscale_float

    try:
        grey = to_grayscale_float(load_image_file(path, draft_size=size))
    except (OSError, ValueError, TypeError):
        return None
    image = PIL.Image.fromarray(np.round(grey * 255).astype(np.uint8), mode="L")
    # PIL's bilinear widens its kernel when reducing: the antialiased bilinear filter the processor applies itself
    image = image.resize(cache_shape(image.width, image.height, size), PIL.Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format.upper(), **({"quality": CACHE_JPEG_QUALITY} if image_format == "jpeg" else {}))
    return {"bytes": buffer.getvalue(), "path": None}


def cache_shape(width: int, height: int, size: int, fit_size: int = CACHE_FIT_SIZE) -> tuple[int, int]:
    """(width, height) of a cached image: longer side `size`, never enlarged.

    When `size` is a multiple k of `fit_size` (the processor's resize before a 224 px crop), each side is k times
    the side a fit of the original to `fit_size` rounds to, so the processor's fit of the cached image lands on
    exactly the original's geometry (2,500 x 3,000 -> 426 x 512 -> 213 x 256; plain rounding, 427, would give a
    one-pixel wider 214 and shift the image by half a pixel)."""
    longest = max(width, height)
    if size >= longest:
        return width, height
    steps, exact = divmod(size, fit_size)
    if exact == 0 and steps >= 1 and longest >= fit_size:
        return tuple(steps * max(1, round(side * fit_size / longest)) for side in (width, height))
    return tuple(max(1, round(side * size / longest)) for side in (width, height))


def add_image_cache(dataset_dict, cache: ImageCache):
    """Every split with an ``image`` column of cached images (`cached_image` of its ``image_path``)."""
    from datasets import Image

    def encode(row: dict[str, Any]) -> dict[str, Any]:
        return {"image": cached_image(row["image_path"], cache.size, cache.image_format)}

    mapped = dataset_dict.map(encode, num_proc=cache.num_proc if cache.num_proc > 1 else None,
                              desc=f"image cache ({cache.size} px {cache.image_format})")
    mapped = mapped.cast_column("image", Image(decode=False))
    if hasattr(dataset_dict, "bad_rows"):
        mapped.bad_rows = dataset_dict.bad_rows
    return mapped


def prepare(
    dataset: str, root: Path, out: Path, formats: Sequence[str], options: dict[str, Any], overwrite: bool,
    image_cache: ImageCache | None = None,
) -> dict:
    """Read, then write tables, split-ID files and ``manifest.json`` into a temporary folder that replaces
    ``out`` only once everything is written; returns the manifest."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ValueError(f"{out} already exists; pass --overwrite to replace it")
    if image_cache is not None and "arrow" not in formats:
        raise ValueError("--image-cache stores the images in the Arrow dataset: add --format arrow")
    dataset_dict = load_dataset_by_name(dataset, root, **options)
    if image_cache is not None:
        dataset_dict = add_image_cache(dataset_dict, image_cache)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        manifest = _write_all(dataset_dict, dataset, root, staging, formats, options, image_cache)
        _replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone after a successful rename; the partial copy otherwise
    return manifest


def _write_all(
    dataset_dict, dataset: str, root: Path, folder: Path, formats: Sequence[str], options: dict[str, Any],
    image_cache: ImageCache | None = None,
) -> dict:
    files = write_tables(dataset_dict, folder, formats) + write_split_ids(dataset_dict, folder)
    bad_rows = getattr(dataset_dict, "bad_rows", None)
    manifest = {
        "dataset": dataset,
        "root": str(Path(root).resolve()),
        "options": options,
        "rows": {split: ds.num_rows for split, ds in dataset_dict.items()},
        "bad_rows": bad_rows.summary() if bad_rows is not None else {"skipped": 0},
        "columns": list(next(iter(dataset_dict.values())).column_names),
        "files": files,
    }
    if image_cache is not None:
        # null cells, counted from the Arrow column without reading the encoded images
        unreadable = {split: ds.data.column("image").null_count for split, ds in dataset_dict.items()}
        manifest["image_cache"] = {**asdict(image_cache), "unreadable_images": unreadable}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _replace(staging: Path, out: Path) -> None:
    """Rename ``staging`` to ``out``; an existing ``out`` is moved aside first and deleted after the rename."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{staging.name.rsplit('-', 1)[-1]}")
        out.rename(old)
    try:
        staging.rename(out)
    except OSError:
        if old is not None:
            old.rename(out)  # put the previous result back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the exit code (0 success, 2 user error)."""
    args = build_parser().parse_args(argv)
    try:
        cache = None if args.image_cache is None else ImageCache(args.image_cache, args.image_cache_format, args.num_proc)
        manifest = prepare(args.dataset, args.root, args.out, args.format, parse_options(args.options), args.overwrite,
                           cache)
    except (FileNotFoundError, ValueError, ImportError) as error:
        message = " ".join(str(error).split())
        print(f"place-prepare: error: {message}", file=sys.stderr)
        return 2
    rows = ", ".join(f"{split}={count}" for split, count in manifest["rows"].items())
    skipped = manifest["bad_rows"]["skipped"]
    note = f" (skipped {skipped} bad row(s): {manifest['bad_rows']['by_column']})" if skipped else ""
    print(f"place-prepare: {args.dataset}: {rows} -> {args.out}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
