"""Synthetic chest radiographs with MIMIC-style reports, CheXpert-style labels and exact ground truth.

This is the embedded benchmark of the package (see ``docs/BENCHMARK.md``): a deterministic generator of
grayscale chest-radiograph-like images with per-patient anatomy, nine findings (each with a pixel mask, a box
and attributes that the report names) and free-text reports, plus ``datasets`` splits for pretraining and
every downstream task, cached on disk.

Labels follow CheXpert spelling and semantics: a finding is 1 exactly when its report mentions it positively
(hedged mentions such as "cannot be excluded" count as positive, negated ones are 0), and "No Finding" is 1
when no pathology is present (support devices alone do not count as a pathology, as in CheXpert).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import textwrap
import zlib
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .synthetic_render import (
    Anatomy,
    Rendered,
    build_geometry,
    expose,
    heart_field,
    render_atelectasis,
    render_consolidation,
    render_density,
    render_device,
    render_edema,
    render_effusion,
    render_fracture,
    render_lesion,
    render_pneumothorax,
    sample_anatomy,
    sample_cardiomegaly,
    upsample_mask,
    working_size,
)
from .synthetic_reports import report_sections, write_report

GENERATOR_VERSION = "4"

FINDINGS: tuple[str, ...] = (
    "No Finding",
    "Cardiomegaly",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Fracture",
    "Support Devices",
)
PATHOLOGIES: tuple[str, ...] = tuple(name for name in FINDINGS if name not in ("No Finding", "Support Devices"))
DEVICES: tuple[str, ...] = ("endotracheal tube", "central line", "pacemaker")

# Prior weight of each finding being drawn, and how much an already drawn finding multiplies another's weight
# (edema travels with cardiomegaly and effusion, effusion with basal atelectasis, ...).
_BASE_WEIGHT = {
    "Support Devices": 0.22, "Cardiomegaly": 0.16, "Pleural Effusion": 0.17, "Atelectasis": 0.13,
    "Edema": 0.09, "Consolidation": 0.11, "Lung Lesion": 0.1, "Pneumothorax": 0.08, "Fracture": 0.06,
}
_AFFINITY = {
    frozenset({"Edema", "Cardiomegaly"}): 3.0, frozenset({"Edema", "Pleural Effusion"}): 2.5,
    frozenset({"Cardiomegaly", "Pleural Effusion"}): 1.6, frozenset({"Pleural Effusion", "Atelectasis"}): 2.0,
    frozenset({"Consolidation", "Pleural Effusion"}): 1.3, frozenset({"Pneumothorax", "Support Devices"}): 1.5,
    frozenset({"Fracture", "Pneumothorax"}): 2.5,
}
_COUNT_PRIOR = (0.3, 0.32, 0.21, 0.12, 0.05)
SUBTLE_PROBABILITY = 0.2
# Global multiplier of every finding's density change: the main difficulty knob (tuned with
# benchmarks/synthetic_difficulty.py so that the docs/BENCHMARK.md targets hold).
FINDING_CONTRAST = 1.0
_PLACEMENT_ATTEMPTS = 20
_MIN_MASK_PIXELS = 3


def sample_finding_names(rng: np.random.Generator) -> list[str]:
    """Draw 0-4 distinct findings following the count prior and the co-occurrence affinities."""
    count = int(rng.choice(len(_COUNT_PRIOR), p=_COUNT_PRIOR))
    chosen: list[str] = []
    names = list(_BASE_WEIGHT)
    for _ in range(count):
        weights = np.array([0.0 if n in chosen else _BASE_WEIGHT[n] for n in names])
        for done in chosen:
            weights *= [_AFFINITY.get(frozenset({done, n}), 1.0) for n in names]
        chosen.append(names[int(rng.choice(len(names), p=weights / weights.sum()))])
    return chosen


def _render_finding(name: str, geom, rng: np.random.Generator, subtle: bool) -> list[Rendered]:
    """Dispatch one finding name to its renderer (devices may yield several instruments)."""
    if name == "Support Devices":
        count = 1 + int(rng.random() < 0.3)
        devices = rng.choice(len(DEVICES), size=count, replace=False, p=[0.4, 0.4, 0.2])
        return [render_device(geom, rng, subtle, DEVICES[i]) for i in sorted(devices)]
    renderer = {
        "Pleural Effusion": render_effusion, "Pneumothorax": render_pneumothorax,
        "Consolidation": render_consolidation, "Lung Lesion": render_lesion,
        "Atelectasis": render_atelectasis, "Edema": render_edema, "Fracture": render_fracture,
    }[name]
    # A random placement can miss the lung (e.g. behind the heart); redraw until the finding is visible.
    for _ in range(_PLACEMENT_ATTEMPTS):
        rendered = renderer(geom, rng, subtle)
        if np.count_nonzero(rendered.mask) >= _MIN_MASK_PIXELS:
            break
    return [rendered]


def box_from_mask(mask: np.ndarray) -> list[int]:
    """Tight [x0, y0, x1, y1] box (inclusive-exclusive pixel ints) of a boolean mask; zeros when empty."""
    cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    if cols.size == 0:
        return [0, 0, 0, 0]
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


def render_case(rng: np.random.Generator, image_size: int,
                names: list[str]) -> tuple[np.ndarray, list[dict], Anatomy]:
    """Render one patient with the given findings; returns the uint8 image, finding records and anatomy."""
    work = working_size(image_size)
    anatomy = sample_anatomy(rng, work)
    subtle = {name: bool(rng.random() < SUBTLE_PROBABILITY) for name in names}
    cardiomegaly, ctr = None, anatomy.ctr
    if "Cardiomegaly" in names:
        cardiomegaly, ctr = sample_cardiomegaly(rng, subtle["Cardiomegaly"])
    geom = build_geometry(anatomy, work)
    density, markings, heart = render_density(geom, ctr)
    rendered: list[Rendered] = []
    if cardiomegaly is not None:  # the enlarged heart is already in the density; only its mask is needed
        rendered.append(Rendered("Cardiomegaly", cardiomegaly, (heart > 0.5) & (geom.v < geom.dome + 0.01)))
    for name in names:
        if name != "Cardiomegaly":
            rendered.extend(_render_finding(name, geom, rng, subtle[name]))
    scale = 1.0
    for item in rendered:
        density += item.add * FINDING_CONTRAST
        scale = scale * item.marking_scale
    density += markings * scale
    image = expose(density, anatomy, rng, image_size)
    records = []
    for item in rendered:
        mask = upsample_mask(item.mask, image_size)
        records.append({"name": item.name, "attributes": {**item.attributes, "subtle": subtle[item.name]},
                        "mask": mask, "box": box_from_mask(mask)})
    return image, records, anatomy


def generate_case(seed: int, image_size: int = 256, findings: Sequence[str] | None = None) -> dict:
    """Generate one image-report pair, deterministic in ``seed``.

    Args:
        seed: any non-negative integer; the same seed gives identical image bytes and report.
        image_size: output height and width in pixels (>= 32).
        findings: force exactly these findings (names from ``FINDINGS``, "No Finding" or empty for a
            normal case) instead of drawing them from the priors.

    Returns:
        dict with ``image`` (uint8 HxW), ``report`` (str), ``labels`` (FINDINGS name -> 0/1), ``findings``
        (list of dicts: ``name``, ``attributes``, ``mask`` bool HxW, ``box`` [x0, y0, x1, y1] with exclusive
        ends) and ``sentences`` (FINDINGS/IMPRESSION sentence records, see ``write_report``).
    """
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32 pixels, got {image_size}")
    rng = np.random.default_rng(seed)
    names = sample_finding_names(rng) if findings is None else _validated_names(findings)
    image, records, anatomy = render_case(rng, image_size, names)
    report, sentences = write_report(records, anatomy.inspiration, anatomy.projection, rng)
    return {"image": image, "report": report, "labels": labels_for(records), "findings": records,
            "sentences": sentences}


def _validated_names(findings: Sequence[str]) -> list[str]:
    names = [name for name in findings if name != "No Finding"]
    unknown = sorted(set(names) - set(FINDINGS))
    if unknown:
        raise ValueError(f"findings: unknown finding names {unknown}; expected names from {FINDINGS}")
    return list(dict.fromkeys(names))


def labels_for(records: list[dict]) -> dict[str, int]:
    """CheXpert-style labels: 1 for each present finding; "No Finding" when no pathology (devices allowed)."""
    present = {record["name"] for record in records}
    labels = {name: int(name in present) for name in FINDINGS}
    labels["No Finding"] = int(not present & set(PATHOLOGIES))
    return labels


# ------------------------------------------------------------------------------------------------- splits
SPLIT_SIZES: dict[str, dict[str, int]] = {
    "pretrain": {"train": 20_000, "validation": 1_000},
    "classify": {"train": 5_000, "validation": 1_000, "test": 2_000},
    "retrieval": {"test": 1_000},
    "segment": {"train": 2_000, "validation": 400, "test": 1_000},
    "detect": {"train": 2_000, "validation": 400, "test": 1_000},
    "report": {"train": 5_000, "test": 1_000},
    "ground": {"test": 1_000},
}
# CheXpert 5x200 classes (the five CheXpert competition tasks), as used by GLoRIA/MGCA for zero-shot/retrieval.
RETRIEVAL_CLASSES: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
OPACITY_FINDINGS: tuple[str, ...] = ("Consolidation", "Lung Lesion", "Atelectasis")
GROUNDABLE_FINDINGS: tuple[str, ...] = ("Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Consolidation",
                                        "Lung Lesion", "Atelectasis", "Edema")
# Downstream splits enrich the priors so that their targets are common enough to learn and evaluate.
_ENRICHMENT: dict[str, dict[str, float]] = {
    "segment": {"Pneumothorax": 0.35, "Consolidation": 0.25, "Lung Lesion": 0.2, "Atelectasis": 0.15},
    "detect": {"Consolidation": 0.25, "Lung Lesion": 0.3, "Atelectasis": 0.15, "Support Devices": 0.35},
    "ground": {"Pleural Effusion": 0.15, "Consolidation": 0.2, "Lung Lesion": 0.2, "Pneumothorax": 0.15},
}


def case_seed(seed: int, split: str, subset: str, index: int) -> int:
    """Seed of one case, derived from (seed, split, subset, index): independent of ordering and processes.

    Different splits hash to different entropy, so pretraining and downstream cases never share a seed
    (a 63-bit collision is the only way they could).
    """
    words = [seed, zlib.crc32(split.encode()), zlib.crc32(subset.encode()), index]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> np.uint64(1))


def _split_names(split: str, index: int, seed: int) -> list[str] | None:
    """Forced finding names for a case of ``split`` (None: draw from the priors inside generate_case)."""
    if split == "retrieval":
        return [RETRIEVAL_CLASSES[index % len(RETRIEVAL_CLASSES)]]
    if split not in _ENRICHMENT:
        return None
    rng = np.random.default_rng([seed, index, 7])
    names = sample_finding_names(rng)
    names += [name for name, p in _ENRICHMENT[split].items() if name not in names and rng.random() < p]
    if split == "ground" and not set(names) & set(GROUNDABLE_FINDINGS):
        names.append(GROUNDABLE_FINDINGS[int(rng.integers(len(GROUNDABLE_FINDINGS)))])
    return names


def split_sizes(split: str, size: int | None = None) -> dict[str, int]:
    """Subset sizes of ``split``; ``size`` sets the first subset's size and scales the others with it."""
    if split not in SPLIT_SIZES:
        raise ValueError(f"split: unknown split {split!r}; expected one of {sorted(SPLIT_SIZES)}")
    defaults = SPLIT_SIZES[split]
    if size is None:
        return dict(defaults)
    if size < 1:
        raise ValueError(f"size must be a positive number of examples, got {size}")
    scale = size / next(iter(defaults.values()))
    return {subset: max(1, int(round(n * scale))) for subset, n in defaults.items()}


def _png(array: np.ndarray) -> dict:
    """Encode a uint8 array as PNG bytes for a ``datasets.Image`` column (fast compression)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return {"bytes": buffer.getvalue(), "path": None}


def _union_mask(case: dict, names: Sequence[str]) -> np.ndarray:
    mask = np.zeros(case["image"].shape, dtype=bool)
    for record in case["findings"]:
        if record["name"] in names:
            mask |= record["mask"]
    return mask


def _boxes(case: dict, names: Sequence[str], key) -> tuple[list[list[int]], list[int]]:
    """Boxes of the finding records named in ``names`` and their category indices given by ``key``."""
    chosen = [record for record in case["findings"] if record["name"] in names and any(record["box"][2:])]
    return [record["box"] for record in chosen], [key(record) for record in chosen]


def _ground_fields(case: dict, rng: np.random.Generator) -> dict:
    """One (sentence, mask) pair: a positive FINDINGS sentence about a groundable finding."""
    options = [s for s in case["sentences"] if s["instance"] is not None and s["finding"] in GROUNDABLE_FINDINGS]
    sentence = options[int(rng.integers(len(options)))]
    record = case["findings"][sentence["instance"]]
    return {"sentence": sentence["text"], "finding": record["name"], "mask": _png(record["mask"].astype(np.uint8)),
            "box": record["box"]}


def _task_fields(split: str, case: dict, index: int, seed: int) -> dict:
    """Split-specific columns: masks, boxes, class or grounding sentence."""
    if split == "retrieval":
        return {"class_label": index % len(RETRIEVAL_CLASSES)}
    if split == "segment":
        return {"pneumothorax_mask": _png(_union_mask(case, ("Pneumothorax",)).astype(np.uint8)),
                "opacity_mask": _png(_union_mask(case, OPACITY_FINDINGS).astype(np.uint8))}
    if split == "detect":
        opacity_boxes, opacity_categories = _boxes(case, OPACITY_FINDINGS, lambda r: OPACITY_FINDINGS.index(r["name"]))
        device_boxes, device_categories = _boxes(
            case, ("Support Devices",), lambda r: DEVICES.index(r["attributes"]["device"]))
        return {"opacity_boxes": opacity_boxes, "opacity_categories": opacity_categories,
                "device_boxes": device_boxes, "device_categories": device_categories}
    if split == "ground":
        return _ground_fields(case, np.random.default_rng([seed, index, 11]))
    return {}


def _case_row(split: str, subset: str, index: int, seed: int, image_size: int) -> dict:
    """Generate one dataset row of ``split``/``subset``."""
    this_seed = case_seed(seed, split, subset, index)
    case = generate_case(this_seed, image_size, _split_names(split, index, this_seed))
    summary = [{"name": r["name"], "attributes": r["attributes"], "box": r["box"]} for r in case["findings"]]
    row = {"image": _png(case["image"]), "report": case["report"],
           "labels": [case["labels"][name] for name in FINDINGS], "case_seed": this_seed,
           "findings": json.dumps(summary)}
    row.update(_task_fields(split, case, index, this_seed))
    return row


def _generate_rows(indices: list[int], split: str, subset: str, seed: int, image_size: int) -> Iterator[dict]:
    for index in indices:
        yield _case_row(split, subset, index, seed, image_size)


def split_features(split: str):
    """``datasets.Features`` of a split (``labels`` is a sequence of 0/1 ints in ``FINDINGS`` order)."""
    from datasets import ClassLabel, Features, Image as ImageFeature, List, Value

    columns = {"image": ImageFeature(), "report": Value("string"), "labels": List(Value("int8")),
               "case_seed": Value("int64"), "findings": Value("string")}
    box = List(Value("int32"), length=4)
    if split == "retrieval":
        columns["class_label"] = ClassLabel(names=list(RETRIEVAL_CLASSES))
    elif split == "segment":
        columns.update(pneumothorax_mask=ImageFeature(), opacity_mask=ImageFeature())
    elif split == "detect":
        columns.update(opacity_boxes=List(box), opacity_categories=List(ClassLabel(names=list(OPACITY_FINDINGS))),
                       device_boxes=List(box), device_categories=List(ClassLabel(names=list(DEVICES))))
    elif split == "ground":
        columns.update(sentence=Value("string"), finding=Value("string"), mask=ImageFeature(), box=box)
    return Features(columns)


def default_cache_dir() -> Path:
    """``$PLACE_DATA_CACHE`` or ``~/.cache/place/synthetic``."""
    return Path(os.environ.get("PLACE_DATA_CACHE", Path.home() / ".cache" / "place" / "synthetic"))


def _cache_path(root: Path, split: str, seed: int, sizes: dict[str, int], image_size: int) -> Path:
    counts = "-".join(f"{subset}{n}" for subset, n in sizes.items())
    return root / f"v{GENERATOR_VERSION}" / f"{split}-seed{seed}-px{image_size}-{counts}"


def build_split(split: str, cache_dir: str | Path | None = None, seed: int = 0, size: int | None = None,
                image_size: int = 256, num_proc: int = 1):
    """Build (or load from the on-disk cache) one benchmark split as a ``datasets.DatasetDict``.

    Args:
        split: one of ``SPLIT_SIZES`` ("pretrain", "classify", "retrieval", "segment", "detect", "report",
            "ground").
        cache_dir: cache root (default ``default_cache_dir()``); the dataset lives under a folder keyed by
            generator version, split, seed, subset sizes and image size, and is reused when present.
        seed: benchmark seed; each case's seed derives from (seed, split, subset, index).
        size: size of the first subset (others scaled alike); None for the defaults of docs/BENCHMARK.md.
        image_size: image height and width in pixels.
        num_proc: generation processes; the result is identical for any value.

    Columns: ``image`` (Image), ``report``, ``labels`` (0/1 int8 list in ``FINDINGS`` order), ``case_seed``,
    ``findings`` (JSON list of name/attributes/box); plus retrieval ``class_label`` (``RETRIEVAL_CLASSES``),
    segment ``pneumothorax_mask``/``opacity_mask`` (L images, 1 = foreground), detect ``opacity_boxes``/
    ``opacity_categories`` (``OPACITY_FINDINGS``) and ``device_boxes``/``device_categories`` (``DEVICES``),
    ground ``sentence``/``finding``/``mask``/``box``. Boxes are [x0, y0, x1, y1] pixels, ends exclusive.
    """
    from datasets import Dataset, DatasetDict, load_from_disk

    sizes = split_sizes(split, size)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = _cache_path(root, split, seed, sizes, image_size)
    if (target / "dataset_dict.json").exists():
        return load_from_disk(str(target))
    staging = target.with_name(f"{target.name}.tmp{os.getpid()}")
    subsets = {}
    for subset, count in sizes.items():
        subsets[subset] = Dataset.from_generator(
            _generate_rows, features=split_features(split), cache_dir=str(staging / "arrow"),
            gen_kwargs={"indices": list(range(count)), "split": split, "subset": subset, "seed": seed,
                        "image_size": image_size},
            num_proc=num_proc if num_proc > 1 and count >= num_proc else None)
    DatasetDict(subsets).save_to_disk(str(staging / "final"))
    _publish(staging / "final", target)
    shutil.rmtree(staging, ignore_errors=True)
    return load_from_disk(str(target))


def _publish(built: Path, target: Path) -> None:
    """Move a finished build into the cache, unless another process (a parallel run) got there first: the
    builds are identical, so the first one in wins and the others are discarded."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if not (target / "dataset_dict.json").exists():
            os.replace(built, target)
    except OSError:
        if not (target / "dataset_dict.json").exists():
            raise


def label_fraction_subset(dataset, fraction: float, seed: int = 0):
    """A fixed random ``fraction`` (e.g. 0.01, 0.1, 1.0) of a dataset's rows, in their original order."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    count = max(1, int(round(len(dataset) * fraction)))
    chosen = np.sort(np.random.default_rng(seed).permutation(len(dataset))[:count])
    return dataset.select(chosen.tolist())


# -------------------------------------------------------------------------------------------- contact sheet
_COLOURS = {"Cardiomegaly": (255, 80, 80), "Pleural Effusion": (80, 160, 255), "Pneumothorax": (255, 220, 0),
            "Consolidation": (255, 140, 0), "Lung Lesion": (255, 0, 255), "Atelectasis": (0, 255, 160),
            "Edema": (0, 220, 255), "Support Devices": (160, 255, 0), "Fracture": (255, 255, 255)}


def _outline(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a boolean mask (mask minus its 4-neighbour erosion)."""
    padded = np.pad(mask, 1)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def draw_case(case: dict, text_height: int = 52) -> Image.Image:
    """One contact-sheet tile: image with mask outlines and boxes, finding names and the impression."""
    rgb = np.repeat(case["image"][:, :, None], 3, axis=2)
    for record in case["findings"]:
        rgb[_outline(record["mask"])] = _COLOURS[record["name"]]
    size = rgb.shape[0]
    tile = Image.new("RGB", (size, size + text_height), (0, 0, 0))
    tile.paste(Image.fromarray(rgb), (0, 0))
    draw, font = ImageDraw.Draw(tile), ImageFont.load_default()
    for record in case["findings"]:
        draw.rectangle([record["box"][0], record["box"][1], record["box"][2] - 1, record["box"][3] - 1],
                       outline=_COLOURS[record["name"]])
    names = ", ".join(dict.fromkeys(r["name"] for r in case["findings"])) or "No Finding"
    impression = report_sections(case["report"]).get("impression", "")
    lines = [names] + textwrap.wrap(impression, width=max(20, size // 6))[:2]
    draw.multiline_text((3, size + 2), "\n".join(lines), fill=(230, 230, 230), font=font, spacing=2)
    return tile


def showcase_seeds(seed: int, count: int) -> list[int]:
    """Seeds of ``count`` cases that together show every finding (plus a couple of normals)."""
    chosen, shown, normals = [], set(), 0
    for index in range(50 * count):
        this_seed = case_seed(seed, "showcase", "sheet", index)
        names = set(sample_finding_names(np.random.default_rng(this_seed)))
        if (names - shown and len(names) <= 3) or (not names and normals < 2) or index >= 40 * count:
            chosen.append(this_seed)
            shown |= names
            normals += not names
        if len(chosen) == count:
            break
    return chosen


def write_contact_sheet(path: str | Path, seed: int = 0, image_size: int = 256, columns: int = 4,
                        rows: int = 3) -> Path:
    """Write a PNG grid of generated cases with masks, boxes, finding names and impressions."""
    tiles = [draw_case(generate_case(s, image_size)) for s in showcase_seeds(seed, columns * rows)]
    width, height = tiles[0].size
    sheet = Image.new("RGB", (columns * width, rows * height))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * width, (i // columns) * height))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


# ---------------------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="place-synth", description=__doc__.split("\n")[0])
    parser.add_argument("--splits", nargs="*", default=list(SPLIT_SIZES), choices=list(SPLIT_SIZES),
                        help="splits to build (default: all; none to only write the contact sheet)")
    parser.add_argument("--out", "--cache-dir", dest="cache_dir", default=None,
                        help="cache root (default $PLACE_DATA_CACHE or ~/.cache/place/synthetic)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size-scale", type=float, default=1.0, help="multiply every default split size")
    parser.add_argument("--size", type=int, default=None,
                        help="rows of every split's first subset (the others scaled alike); overrides --size-scale")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--num-proc", type=int, default=1)
    parser.add_argument("--contact-sheet", default=None, help="PNG path (default: <cache root>/contact_sheet.png)")
    parser.add_argument("--push-to-hub", metavar="REPO", default=None,
                        help="also push the splits as configs of the Hub dataset REPO, with its dataset card")
    parser.add_argument("--private", action="store_true", help="create the --push-to-hub repository private")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Build the requested splits into the cache and write a contact sheet."""
    args = _parser().parse_args(argv)
    if args.size_scale <= 0:
        raise SystemExit(f"--size-scale must be positive, got {args.size_scale}")
    if args.size is not None and args.size < 1:
        raise SystemExit(f"--size must be a positive number of rows, got {args.size}")
    root = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    # rows of each split's first subset (the others scale with it)
    sizes = {split: args.size or max(1, round(next(iter(SPLIT_SIZES[split].values())) * args.size_scale))
             for split in args.splits}
    for split, size in sizes.items():
        dataset = build_split(split, root, args.seed, size, args.image_size, args.num_proc)
        print(f"{split}: " + ", ".join(f"{name}={len(subset)}" for name, subset in dataset.items()))
    if args.push_to_hub:
        from .synthetic_hub import push_benchmark

        push_benchmark(args.push_to_hub, sizes, cache_dir=root, seed=args.seed, image_size=args.image_size,
                       num_proc=args.num_proc, private=args.private)  # from the cache just built
        print(f"pushed {', '.join(sizes)} to the Hub dataset {args.push_to_hub}")
    sheet = write_contact_sheet(args.contact_sheet or root / "contact_sheet.png", args.seed, args.image_size)
    print(f"contact sheet: {sheet}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
