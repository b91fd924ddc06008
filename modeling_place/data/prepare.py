"""``place-prepare``: read a real dataset from its official layout and write the table a run needs.

Usage::

    place-prepare DATASET --root ROOT --out OUT [--format arrow csv parquet] [--set KEY=VALUE ...] [--overwrite]

Writes into OUT:

* ``dataset/`` -- the ``DatasetDict`` (``save_to_disk``; reload with ``datasets.load_from_disk``) [arrow]
* ``tables/{split}.csv`` / ``tables/{split}.parquet`` -- the same rows (list cells as JSON in CSV) [csv/parquet]
* ``splits/{split}.txt`` -- the ``image_id`` of every row, one per line (IDs only: no text, no pixels)
* ``manifest.json`` -- dataset name, root, options, rows per split, columns and the files written

User errors (missing files, wrong columns, bad options) print one line ``place-prepare: error: ...`` and exit 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .readers_place import READERS, load_dataset_by_name

FORMATS = ("arrow", "csv", "parquet")


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
        dataset_dict.save_to_disk(str(out / "dataset"))
        written.append("dataset")
    for split, dataset in dataset_dict.items():
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
    """numpy arrays (as pandas returns nested lists) -> plain Python lists."""
    return [_plain(v) for v in value] if hasattr(value, "__len__") and not isinstance(value, str) else value


def prepare(
    dataset: str, root: Path, out: Path, formats: Sequence[str], options: dict[str, Any], overwrite: bool
) -> dict:
    """Read, write tables, split-ID files and ``manifest.json``; returns the manifest."""
    manifest_path = out / "manifest.json"
    if manifest_path.exists() and not overwrite:
        raise ValueError(f"{manifest_path} already exists; pass --overwrite to replace it")
    dataset_dict = load_dataset_by_name(dataset, root, **options)
    out.mkdir(parents=True, exist_ok=True)
    files = write_tables(dataset_dict, out, formats) + write_split_ids(dataset_dict, out)
    manifest = {
        "dataset": dataset,
        "root": str(Path(root).resolve()),
        "options": options,
        "rows": {split: ds.num_rows for split, ds in dataset_dict.items()},
        "columns": list(next(iter(dataset_dict.values())).column_names),
        "files": files,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the exit code (0 success, 2 user error)."""
    args = build_parser().parse_args(argv)
    try:
        manifest = prepare(args.dataset, args.root, args.out, args.format, parse_options(args.options), args.overwrite)
    except (FileNotFoundError, ValueError, ImportError) as error:
        message = " ".join(str(error).split())
        print(f"place-prepare: error: {message}", file=sys.stderr)
        return 2
    rows = ", ".join(f"{split}={count}" for split, count in manifest["rows"].items())
    print(f"place-prepare: {args.dataset}: {rows} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
