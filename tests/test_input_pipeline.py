"""Full-size radiographs: JPEG draft decoding, place-prepare's resized image cache, training from the cache."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest

from modeling_place.data.prepare import cache_shape, cached_image
from modeling_place.data.prepare import main as prepare_main
from modeling_place.training.config import TrainConfig
from modeling_place.training.data import ImageReportPairs, build_processor, decode_image, load_pair_splits
from tests.helpers import synthetic_report_tokenizer


def _radiograph_jpeg(path, height: int = 1400, width: int = 1200, seed: int = 0) -> np.ndarray:
    """A smooth grey radiograph-like JPEG (quality 95) with mild noise; returns its pixels."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    lungs = np.exp(-(((cols - width * 0.3) / (width * 0.15)) ** 2 + ((rows - height * 0.5) / (height * 0.3)) ** 2))
    lungs += np.exp(-(((cols - width * 0.7) / (width * 0.15)) ** 2 + ((rows - height * 0.5) / (height * 0.3)) ** 2))
    pixels = np.clip(200 - 120 * lungs + rng.normal(0, 3, (height, width)), 0, 255).astype(np.uint8)
    PIL.Image.fromarray(pixels, mode="L").save(path, quality=95)
    return pixels


@pytest.fixture(scope="module")
def processor():
    return build_processor(synthetic_report_tokenizer(), 224, 4, 48)


def _grey(processor, images) -> np.ndarray:
    values = processor.image_processor(images, return_tensors="pt")["pixel_values"][:, 0].numpy()
    return (values * processor.image_processor.image_std[0] + processor.image_processor.image_mean[0]) * 255


def test_draft_decoding_reads_fewer_pixels_and_gives_the_same_input(tmp_path, processor):
    _radiograph_jpeg(tmp_path / "cxr.jpg")
    full, draft = decode_image(str(tmp_path / "cxr.jpg")), decode_image(str(tmp_path / "cxr.jpg"), draft_size=512)
    assert full.size == (1200, 1400) and draft.size == (600, 700)  # the 1/2 DCT scale keeps both sides >= 512
    assert decode_image(str(tmp_path / "cxr.jpg"), draft_size=650).size == (1200, 1400)  # 1/2 would give 600 < 650
    difference = np.abs(_grey(processor, [draft]) - _grey(processor, [full]))
    assert difference.mean() < 0.5 and np.quantile(difference, 0.99) < 3  # grey levels of 255
    table = {"image_path": [str(tmp_path / "cxr.jpg")], "text": ["FINDINGS: Clear lungs."]}
    from datasets import Dataset

    pairs = ImageReportPairs(Dataset.from_dict(table), "image_path", "text", processor)
    assert pairs.draft_size == 2 * 256 and pairs[0]["image"].size == (600, 700)
    exact = ImageReportPairs(Dataset.from_dict(table), "image_path", "text", processor, jpeg_draft=False)
    assert exact.draft_size is None and exact[0]["image"].size == (1200, 1400)


def test_cache_shape_keeps_the_processor_geometry():
    assert cache_shape(2500, 3000, 512) == (426, 512)  # -> 213 x 256, as a fit of the original rounds
    assert cache_shape(2500, 3000, 256) == (213, 256)
    assert cache_shape(3000, 2500, 300) == (300, 250)  # not a multiple of 256: plain rounding
    assert cache_shape(400, 300, 512) == (400, 300)  # never enlarged


def test_prepare_writes_an_image_cache_that_training_reads(tmp_path, processor):
    for number in range(2):
        _radiograph_jpeg(tmp_path / f"cxr{number}.jpg", seed=number)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    rows = {"image_path": ["cxr0.jpg", "broken.jpg", "cxr1.jpg"],
            "text": ["FINDINGS: Small effusion.", "FINDINGS: Clear.", "IMPRESSION: No pneumothorax."]}
    import pandas as pd

    pd.DataFrame({**rows, "split": "train"}).to_csv(tmp_path / "pairs.csv", index=False)
    out = tmp_path / "prepared"
    code = prepare_main(["csv", "--root", str(tmp_path / "pairs.csv"), "--out", str(out), "--format", "arrow", "csv",
                         "--image-cache", "256", "--image-cache-format", "png"])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["image_cache"] == {"size": 256, "image_format": "png", "num_proc": 1,
                                       "unreadable_images": {"train": 1}}
    assert "image" not in pd.read_csv(out / "tables" / "train.csv").columns  # bytes stay in the Arrow shards
    splits = load_pair_splits(TrainConfig(dataset="prepared", data_root=str(out), validation_pairs=0))
    assert splits.image_column == "image" and splits.text_column == "text" and len(splits.train) == 3
    pairs = ImageReportPairs(splits.train, splits.image_column, splits.text_column, processor)
    first, second = pairs[0], pairs[1]
    assert first["image"].size == cache_shape(1200, 1400, 256) == (219, 256) and first["image"].mode == "L"
    assert first["skipped"] == 0
    assert second["index"] == 2 and second["skipped"] == 1  # the unreadable image is skipped and counted
    original = PIL.Image.open(tmp_path / "cxr0.jpg")
    difference = np.abs(_grey(processor, [first["image"]]) - _grey(processor, [original]))
    assert difference.mean() < 1.5  # grey levels: the cache is what the full image gives, up to resampling


def test_image_cache_needs_arrow_and_unreadable_files_give_none(tmp_path, capsys):
    (tmp_path / "pairs.csv").write_text("image_path,text\nmissing.jpg,FINDINGS: Clear.\n")
    code = prepare_main(["csv", "--root", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "out"),
                         "--format", "csv", "--image-cache", "256", "--set", "missing_images=keep"])
    assert code == 2 and "add --format arrow" in capsys.readouterr().err
    assert cached_image(str(tmp_path / "missing.jpg"), 256, "jpeg") is None
