"""Tests of the synthetic chest X-ray benchmark generator (tiny sizes, seconds)."""
import hashlib
import re

import numpy as np
import pytest

from modeling_place.data.synthetic_cxr import (
    FINDINGS,
    GENERATOR_VERSION,
    PATHOLOGIES,
    RETRIEVAL_CLASSES,
    build_split,
    generate_case,
    label_fraction_subset,
    main,
)
from modeling_place.data.synthetic_reports import MENTION_PATTERNS, NEGATION_PATTERN, NO_FINDING_PATTERN, report_sections

SEEDS = range(60)


def _image_hashes(dataset) -> set[str]:
    return {hashlib.sha1(np.asarray(image).tobytes()).hexdigest() for image in dataset["image"]}


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=\.)\s+|(?<=;)\s+", text.lower()) if s]


def test_generate_case_is_deterministic_in_seed():
    first, again, other = generate_case(7, 96), generate_case(7, 96), generate_case(8, 96)
    assert first["image"].dtype == np.uint8 and first["image"].shape == (96, 96)
    assert first["image"].tobytes() == again["image"].tobytes()
    assert first["report"] == again["report"]
    assert first["image"].tobytes() != other["image"].tobytes()


def test_case_structure_masks_inside_boxes():
    for seed in SEEDS:
        case = generate_case(seed, 128)
        assert set(case["labels"]) == set(FINDINGS)
        for record in case["findings"]:
            mask, (x0, y0, x1, y1) = record["mask"], record["box"]
            assert mask.shape == (128, 128) and mask.dtype == bool and mask.any(), record["name"]
            assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128
            outside = mask.copy()
            outside[y0:y1, x0:x1] = False
            assert not outside.any(), record["name"]


def test_labels_match_positive_mentions_in_report():
    """A finding is labelled exactly when FINDINGS/IMPRESSION mention it without a negation cue."""
    for seed in SEEDS:
        case = generate_case(seed, 64)
        sections = report_sections(case["report"])
        text = sections["findings"] + " " + sections["impression"]
        recorded = {r["name"] for r in case["findings"]}
        for name, pattern in MENTION_PATTERNS.items():
            positive = [s for s in _sentences(text) if re.search(pattern, s) and not re.search(NEGATION_PATTERN, s)]
            assert bool(positive) == bool(case["labels"][name]) == (name in recorded), (name, case["report"])
        no_finding = bool(re.search(NO_FINDING_PATTERN, text.lower()))
        assert no_finding == bool(case["labels"]["No Finding"]) == (not recorded & set(PATHOLOGIES))


def test_subtle_instances_exist_for_every_finding():
    subtle = {r["name"] for s in range(300) for r in generate_case(s, 32)["findings"] if r["attributes"]["subtle"]}
    assert subtle == set(FINDINGS) - {"No Finding"}


def test_forced_findings_and_bad_names():
    case = generate_case(3, 64, findings=["Pneumothorax"])
    assert [r["name"] for r in case["findings"]] == ["Pneumothorax"]
    with pytest.raises(ValueError, match="Pnemothorax"):
        generate_case(3, 64, findings=["Pnemothorax"])


def test_parallel_builds_of_one_split_both_succeed(tmp_path, monkeypatch):
    """Two processes building the same split (parallel ablation runs): the one that finishes second finds
    the cache already filled when it moves its build in, and loads the winner's instead of failing."""
    import os
    import shutil

    import modeling_place.data.synthetic_cxr as synthetic

    real_replace = os.replace

    def other_process_wins(source, target):
        if str(source).endswith("final"):  # only the move of the finished build into the cache
            shutil.copytree(source, target)  # the winner lands between our check and our move
        real_replace(source, target)  # now a non-empty directory: OSError, as in the race

    monkeypatch.setattr(synthetic.os, "replace", other_process_wins)
    built = build_split("classify", tmp_path, seed=2, size=3, image_size=32)
    assert len(built["train"]) == 3
    assert not list(tmp_path.rglob("*.tmp*"))  # our staging copy is gone

    def broken_disk(source, target):
        if str(source).endswith("final"):
            raise OSError("disk full")
        real_replace(source, target)

    monkeypatch.setattr(synthetic.os, "replace", broken_disk)
    with pytest.raises(OSError, match="disk full"):  # a real failure, no winner: still an error
        build_split("classify", tmp_path, seed=3, size=3, image_size=32)


def test_build_split_num_proc_invariant_and_cached(tmp_path):
    one = build_split("classify", tmp_path / "a", seed=1, size=6, image_size=64, num_proc=1)
    two = build_split("classify", tmp_path / "b", seed=1, size=6, image_size=64, num_proc=2)
    assert {k: len(v) for k, v in one.items()} == {"train": 6, "validation": 1, "test": 2}
    for subset in one:
        assert one[subset]["case_seed"] == two[subset]["case_seed"]
        assert _image_hashes(one[subset]) == _image_hashes(two[subset])
        assert one[subset]["report"] == two[subset]["report"]
    assert len(one["train"][0]["labels"]) == len(FINDINGS)
    cached = build_split("classify", tmp_path / "a", seed=1, size=6, image_size=64)
    assert cached["train"].cache_files[0]["filename"] == one["train"].cache_files[0]["filename"]


def test_downstream_splits_never_share_images_with_pretraining(tmp_path):
    pretrain = build_split("pretrain", tmp_path, size=20, image_size=48)
    pretrain_hashes = _image_hashes(pretrain["train"]) | _image_hashes(pretrain["validation"])
    for split in ("classify", "retrieval", "segment", "detect", "report", "ground"):
        downstream = build_split(split, tmp_path, size=5, image_size=48)
        for subset in downstream.values():
            assert not _image_hashes(subset) & pretrain_hashes, split


def test_task_columns(tmp_path):
    retrieval = build_split("retrieval", tmp_path, size=10, image_size=48)["test"]
    for row in retrieval:
        assert row["labels"][FINDINGS.index(RETRIEVAL_CLASSES[row["class_label"]])] == 1
        assert sum(row["labels"][FINDINGS.index(n)] for n in PATHOLOGIES) == 1
    segment = build_split("segment", tmp_path, size=6, image_size=48)["train"][0]
    assert set(np.unique(np.asarray(segment["pneumothorax_mask"]))) <= {0, 1}
    detect = build_split("detect", tmp_path, size=8, image_size=48)["train"]
    assert any(detect["device_boxes"]) and all(len(b) == len(c) for b, c in
                                                zip(detect["opacity_boxes"], detect["opacity_categories"]))
    ground = build_split("ground", tmp_path, size=4, image_size=48)["test"]
    for row in ground:
        assert np.asarray(row["mask"]).any() and row["sentence"].lower() in row["report"].lower()


def test_label_fraction_subset():
    import datasets

    data = datasets.Dataset.from_dict({"x": list(range(200))})
    subset = label_fraction_subset(data, 0.1, seed=3)
    assert len(subset) == 20 and subset["x"] == sorted(subset["x"])
    assert label_fraction_subset(data, 0.1, seed=3)["x"] == subset["x"]
    with pytest.raises(ValueError, match="fraction"):
        label_fraction_subset(data, 0.0)


def test_cli_writes_contact_sheet(tmp_path):
    sheet = tmp_path / "sheet.png"
    assert main(["--splits", "report", "--out", str(tmp_path), "--size-scale", "0.001", "--image-size", "48",
                 "--contact-sheet", str(sheet)]) == 0
    assert sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / f"v{GENERATOR_VERSION}").is_dir()
