"""Readers for real chest X-ray datasets, behind one registry: :func:`load_dataset_by_name`.

Each reader takes the dataset's official layout (see ``docs/DATASETS.md``) and returns a
``datasets.DatasetDict`` keyed by ``train``/``validation``/``test``. One row per image; ``image_path`` is an
absolute path string decoded lazily (:func:`load_image`, :func:`with_lazy_images`); ``image_id`` is the
dataset-native image ID; label columns use canonical CheXpert-style names (:mod:`labels_place`).

Example::

    from modeling_place.data.readers_place import load_dataset_by_name
    chexpert = load_dataset_by_name("chexpert", "/data/chexpert", uncertainty="ones")
    test = load_dataset_by_name("chexpert-5x200", "/data/chexpert", split="test")
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .readers_chexpert import read_chexpert, read_chexpert_5x200, sample_chexpert_5x200
from .readers_common import BadRows, DatasetFormatError, load_image, require_columns, with_lazy_images
from .readers_covidx import read_covidx
from .readers_generic import detect_separator, read_table_dataset
from .readers_iu_xray import parse_openi_xml, read_iu_xray, read_openi, read_r2gen_annotation
from .readers_mimic import MimicReports, read_mgca_master, read_mimic_cxr
from .readers_nih import read_nih_chestxray14
from .readers_object_cxr import parse_object_cxr_annotation, read_object_cxr
from .readers_rsna import aggregate_rsna_boxes, read_rsna_pneumonia
from .readers_siim import decode_siim_mask, read_siim_pneumothorax, rle_decode, rle_encode

READERS: dict[str, Callable[..., Any]] = {
    "mimic-cxr": read_mimic_cxr,
    "mgca-master": read_mgca_master,
    "chexpert": read_chexpert,
    "chexpert-5x200": read_chexpert_5x200,
    "rsna": read_rsna_pneumonia,
    "siim": read_siim_pneumothorax,
    "covidx": read_covidx,
    "object-cxr": read_object_cxr,
    "iu-xray": read_iu_xray,
    "r2gen": read_r2gen_annotation,
    "nih": read_nih_chestxray14,
    "csv": read_table_dataset,
}
"""Dataset name -> reader. ``csv`` takes the table file as ``root``; the others take the dataset folder."""


# Readers that forward ``**options`` to others: their valid options are the union of the targets'.
_FORWARDED_OPTIONS: dict[str, tuple[Callable[..., Any], ...]] = {"iu-xray": (read_r2gen_annotation, read_openi)}


def reader_options(name: str) -> list[str]:
    """Keyword options accepted by the reader registered as ``name``."""
    functions = (_reader(name), *_FORWARDED_OPTIONS.get(name, ()))
    names = (
        parameter.name
        for function in functions
        for parameter in inspect.signature(function).parameters.values()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    )
    return list(dict.fromkeys(names))


def _reader(name: str) -> Callable[..., Any]:
    if name not in READERS:
        raise ValueError(f"Unknown dataset {name!r}; valid names: {', '.join(READERS)}")
    return READERS[name]


def load_dataset_by_name(name: str, root: str | Path, *, split: str | None = None, **options: Any):
    """Read dataset ``name`` from ``root`` with reader ``options``.

    Args:
        name: One of ``READERS`` (``"mimic-cxr"``, ``"chexpert"``, ``"siim"``...).
        root: Dataset folder (for ``"csv"``: the table file).
        split: Return only this split (a ``datasets.Dataset``) instead of the ``DatasetDict``.
        **options: Reader keyword options (see each reader's docstring; :func:`reader_options` lists them).

    Raises:
        ValueError: Unknown name, unknown option (the message lists the valid ones) or absent split.
        FileNotFoundError: A required file of the layout is missing (the message names its full path).
    """
    reader = _reader(name)
    valid = reader_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"Unknown option(s) {unknown} for dataset {name!r}; valid options: {', '.join(valid)}")
    dataset = reader(root, **options)
    if split is None:
        return dataset
    if split not in dataset:
        raise ValueError(f"Dataset {name!r} has no split {split!r}; available: {', '.join(dataset)}")
    return dataset[split]


__all__ = [
    "READERS",
    "BadRows",
    "DatasetFormatError",
    "MimicReports",
    "aggregate_rsna_boxes",
    "decode_siim_mask",
    "detect_separator",
    "load_dataset_by_name",
    "load_image",
    "parse_object_cxr_annotation",
    "parse_openi_xml",
    "read_chexpert",
    "read_chexpert_5x200",
    "read_covidx",
    "read_iu_xray",
    "read_mgca_master",
    "read_mimic_cxr",
    "read_nih_chestxray14",
    "read_object_cxr",
    "read_openi",
    "read_r2gen_annotation",
    "read_rsna_pneumonia",
    "read_siim_pneumothorax",
    "read_table_dataset",
    "reader_options",
    "require_columns",
    "rle_decode",
    "rle_encode",
    "sample_chexpert_5x200",
    "with_lazy_images",
]
