"""The synthetic benchmark as a Hub dataset: one config per task split, Hub-idiomatic features, a dataset card.

`build_split` keeps the columns the package's protocols read (a 0/1 `labels` vector, `findings` as a JSON
string, parallel box/category lists). On the Hub a user expects named labels and structured columns instead, so
`hub_split` converts a built split:

* `labels`: the positive findings as `List(ClassLabel(FINDINGS))` (multi-label, every label named);
* `findings`: one struct per finding instance: `name` (ClassLabel), `box` [x0, y0, x1, y1] and every attribute
  as its own typed field (None where a finding has no such attribute);
* detect: a COCO-style `objects` column (`id`, `area`, `bbox` [x, y, width, height], `category` ClassLabel over
  the opacity findings and the devices) instead of `opacity_boxes` / `device_boxes` lists;
* ground: `finding` as a ClassLabel and its `bbox` in COCO form; retrieval keeps its `class_label` ClassLabel;
  segment keeps its 0/1 mask images.

`push_benchmark(repo_id, ...)` (`place-synth --push-to-hub REPO`) uploads the dataset card
(`model_cards/synthetic_dataset.md`) first, then every split as a config of the same name; `datasets` merges
each config's `dataset_info` into that card, so `load_dataset(repo_id, "classify")` works.
"""

from __future__ import annotations

import importlib.resources
import json
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .synthetic_cxr import DEVICES, FINDINGS, OPACITY_FINDINGS, RETRIEVAL_CLASSES, build_split

#: Every attribute a finding record can carry (docs/BENCHMARK.md, section 2), with its `datasets` dtype.
ATTRIBUTE_TYPES: dict[str, str] = {
    "subtle": "bool", "side": "string", "size": "string", "severity": "string", "zone": "string",
    "kind": "string", "density": "string", "device": "string", "ctr": "float32", "diameter_mm": "int32",
    "rib": "int32", "tip_cm_above_carina": "int32",
}
#: Detection categories of the `objects` column: the opacity findings, then the devices.
OBJECT_CATEGORIES: tuple[str, ...] = OPACITY_FINDINGS + DEVICES
TASK_CATEGORIES = ["image-classification", "zero-shot-image-classification", "image-feature-extraction",
                   "image-segmentation", "object-detection", "image-text-to-text"]
_DROPPED = {"detect": ["opacity_boxes", "opacity_categories", "device_boxes", "device_categories"], "ground": ["box"]}


def hub_features(split: str):
    """`datasets.Features` of `split` on the Hub (see the module docstring)."""
    from datasets import ClassLabel, Features, Image, List, Value

    finding = {"name": ClassLabel(names=list(FINDINGS)), "box": List(Value("int32"), length=4),
               **{key: Value(dtype) for key, dtype in ATTRIBUTE_TYPES.items()}}
    columns: dict[str, Any] = {"image": Image(), "report": Value("string"),
                               "labels": List(ClassLabel(names=list(FINDINGS))), "case_seed": Value("int64"),
                               "findings": List(finding)}
    bbox = List(Value("float32"), length=4)
    if split == "retrieval":
        columns["class_label"] = ClassLabel(names=list(RETRIEVAL_CLASSES))
    elif split == "segment":
        columns.update(pneumothorax_mask=Image(), opacity_mask=Image())
    elif split == "detect":
        columns["objects"] = {"id": List(Value("int64")), "area": List(Value("float32")), "bbox": List(bbox),
                              "category": List(ClassLabel(names=list(OBJECT_CATEGORIES)))}
    elif split == "ground":
        columns.update(sentence=Value("string"), finding=ClassLabel(names=list(FINDINGS)), mask=Image(), bbox=bbox)
    return Features(columns)


def _coco_box(box: Sequence[int]) -> list[float]:
    """[x0, y0, x1, y1] (ends exclusive) as COCO's [x, y, width, height]."""
    x0, y0, x1, y1 = box
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def _finding(record: dict) -> dict:
    unknown = set(record["attributes"]) - set(ATTRIBUTE_TYPES)
    if unknown:  # a new generator attribute must be added to the schema, not silently dropped
        raise ValueError(f"finding {record['name']!r} has attributes {sorted(unknown)} missing from ATTRIBUTE_TYPES")
    return {"name": FINDINGS.index(record["name"]), "box": record["box"],
            **{key: record["attributes"].get(key) for key in ATTRIBUTE_TYPES}}


def _objects(row: dict) -> dict:
    """The detect split's two box lists as one COCO-style `objects` column."""
    boxes = list(row["opacity_boxes"]) + list(row["device_boxes"])
    categories = list(row["opacity_categories"]) + [len(OPACITY_FINDINGS) + c for c in row["device_categories"]]
    coco = [_coco_box(box) for box in boxes]
    return {"id": list(range(len(boxes))), "area": [w * h for _, _, w, h in coco], "bbox": coco,
            "category": categories}


def _hub_row(row: dict, split: str) -> dict:
    converted = {"labels": [i for i, value in enumerate(row["labels"]) if value],
                 "findings": [_finding(record) for record in json.loads(row["findings"])]}
    if split == "detect":
        converted["objects"] = _objects(row)
    elif split == "ground":
        converted.update(finding=FINDINGS.index(row["finding"]), bbox=_coco_box(row["box"]))
    return converted


def hub_split(split: str, cache_dir: str | Path | None = None, seed: int = 0, size: int | None = None,
              image_size: int = 256, num_proc: int = 1):
    """`build_split(...)` with the Hub features of `hub_features(split)`: a `DatasetDict` ready to push."""
    from datasets import Image

    built = build_split(split, cache_dir, seed, size, image_size, num_proc)
    features = hub_features(split)
    for column, feature in built["test" if "test" in built else "train"].features.items():
        if isinstance(feature, Image):  # pass the PNG bytes through: decoding and re-encoding would cost time only
            built = built.cast_column(column, Image(decode=False))
    return built.map(_hub_row, fn_kwargs={"split": split}, features=features,
                     remove_columns=["findings", *_DROPPED.get(split, [])])


def dataset_card(repo_id: str, sizes: dict[str, dict[str, int]], seed: int, image_size: int):
    """The dataset card (`huggingface_hub.DatasetCard`) of a pushed benchmark with these split sizes."""
    from huggingface_hub import DatasetCard, DatasetCardData

    total = sum(sum(subsets.values()) for subsets in sizes.values())
    data = DatasetCardData(
        license="apache-2.0", pretty_name="PLACE synthetic chest X-ray benchmark", language=["en"],
        task_categories=TASK_CATEGORIES, tags=["medical-imaging", "chest-x-ray", "radiology", "synthetic", "place"],
        annotations_creators=["machine-generated"], source_datasets=["original"],
        size_categories=["n<1K" if total < 1_000 else "1K<n<10K" if total < 10_000 else "10K<n<100K"],
    )
    rows = [f"| `{split}` | {', '.join(f'{name} {count:,}' for name, count in subsets.items())} |"
            for split, subsets in sizes.items()]
    fields = {"card_data": data.to_yaml(), "repo_id": repo_id, "seed": seed, "image_size": image_size,
              "configs": "\n".join(["| config | subsets (rows) |", "|---|---|", *rows]),
              "findings": ", ".join(FINDINGS), "objects": ", ".join(OBJECT_CATEGORIES)}
    # the card templates are package data (`model_cards/` installs as `modeling_place.model_cards`)
    template = importlib.resources.files("modeling_place.model_cards").joinpath("synthetic_dataset.md")
    return DatasetCard(string.Template(template.read_text(encoding="utf-8")).substitute(fields))


def push_benchmark(repo_id: str, sizes: Mapping[str, int | None], *, cache_dir: str | Path | None = None,
                   seed: int = 0, image_size: int = 256, num_proc: int = 1, private: bool = False,
                   token: str | None = None) -> dict[str, dict[str, int]]:
    """Push each split of `sizes` ({split: rows of its first subset, None for the defaults}) as a config of the
    dataset `repo_id`, after the dataset card; returns the rows of every subset pushed."""
    from huggingface_hub import HfApi

    converted = {split: hub_split(split, cache_dir, seed, size, image_size, num_proc) for split, size in sizes.items()}
    rows = {split: {name: len(subset) for name, subset in dataset.items()} for split, dataset in converted.items()}
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    # the card goes first: each config's push then adds its `dataset_info` and `configs` entry to it
    card = dataset_card(repo_id, rows, seed, image_size)
    api.upload_file(path_or_fileobj=str(card).encode("utf-8"), path_in_repo="README.md", repo_id=repo_id,
                    repo_type="dataset", commit_message="Dataset card")
    for split, dataset in converted.items():
        dataset.push_to_hub(repo_id, config_name=split, private=private, token=token,
                            commit_message=f"Add the {split} config")
    return rows
