"""The grounding protocol: CNR, the mIoU sweep, pointing game and pixel AUROC against loop references and maps
with an answer computed by hand; the readouts; and examples/evaluate_grounding.py's rows end to end."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from modeling_place import PlaceConfig, PlaceModel
from modeling_place.evaluation import load_metric
from modeling_place.evaluation.grounding import (
    contrast_to_noise, grounding_metrics, iou_sweep, location_prior, per_finding_mean, pixel_auroc, smooth_grid,
)
from modeling_place.evaluation.tasks import cosine_grounding_maps
from tests.helpers import micro_config, synthetic_report_tokenizer

REPO = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(0)


def _square_mask(size: int = 16, start: int = 4, stop: int = 12) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[start:stop, start:stop] = True
    return mask


def test_cnr_and_sweep_have_the_answers_computed_by_hand():
    mask = _square_mask()
    two_levels = np.zeros((16, 16))
    two_levels[4:12, 4:8], two_levels[4:12, 8:12] = 1.0, 0.3  # inside: mean 0.65, variance 0.35**2; outside 0
    assert contrast_to_noise(two_levels, mask)[0] == pytest.approx(0.65 / 0.35)
    # thresholds 0.1, 0.2, 0.3 keep the whole lesion (IoU 1); 0.4 and 0.5 keep half of it (IoU 0.5)
    assert iou_sweep(two_levels, mask)[0] == pytest.approx((1 + 1 + 1 + 0.5 + 0.5) / 5)
    assert contrast_to_noise(-two_levels, mask)[0] == pytest.approx(-0.65 / 0.35)  # signed: lower on the lesion
    assert contrast_to_noise(np.full((16, 16), 0.7), mask)[0] == 0.0  # a flat map has no contrast
    assert iou_sweep(np.full((16, 16), 2.0), mask)[0] == pytest.approx(mask.mean())  # clamped: all predicted


def test_a_gaussian_blob_on_the_lesion_points_inside_and_ranks_its_pixels_first():
    mask = _square_mask()
    rows, cols = np.mgrid[:16, :16]
    blob = np.exp(-((rows - 7.5) ** 2 + (cols - 7.5) ** 2) / (2 * 2.0**2))
    metrics = grounding_metrics(blob, mask)
    inside, outside = blob[mask], blob[~mask]
    assert metrics["cnr"][0] == pytest.approx((inside.mean() - outside.mean()) / math.sqrt(inside.var() + outside.var()))
    assert metrics["pointing"][0] == 1.0 and metrics["pixel_auroc"][0] > 0.95
    moved = np.roll(blob, (7, 7), axis=(0, 1))  # the peak leaves the lesion
    assert grounding_metrics(moved, mask)["pointing"][0] == 0.0


def test_metrics_match_loop_references_on_random_maps():
    maps, masks = RNG.normal(size=(5, 9, 9)), RNG.random((5, 9, 9)) > 0.6
    masks[:, 0, 0], masks[:, 0, 1] = True, False  # inside and outside pixels in every pair
    for value, m, mask in zip(contrast_to_noise(maps, masks), maps, masks):
        inside, outside = m[mask], m[~mask]
        assert value == pytest.approx((inside.mean() - outside.mean()) / math.sqrt(inside.var() + outside.var()))
    for value, m, mask in zip(iou_sweep(maps, masks), maps, masks):
        ious = [((np.clip(m, 0, 1) >= t) & mask).sum() / ((np.clip(m, 0, 1) >= t) | mask).sum()
                for t in (0.1, 0.2, 0.3, 0.4, 0.5)]
        assert value == pytest.approx(np.mean(ious))
    for value, m, mask in zip(pixel_auroc(maps, masks), maps, masks):
        assert value == pytest.approx(roc_auc_score(mask.ravel(), m.ravel()))


def test_findings_are_averaged_first_so_a_common_one_does_not_dominate():
    values = {"pointing": np.array([1.0, 1.0, 1.0, 0.0])}
    summary = per_finding_mean(values, ["Effusion", "Effusion", "Effusion", "Pneumothorax"])
    assert summary["pointing"] == pytest.approx(0.5) and summary["by_finding"]["Effusion"]["pointing"] == 1.0


@pytest.mark.parametrize("bad, message", [
    (lambda m, k: (m, np.zeros_like(k)), "all background"),
    (lambda m, k: (np.full_like(m, np.nan), k), "NaN"),
    (lambda m, k: (m[:, :4], k), "must both be"),
])
def test_bad_grounding_input_is_refused_clearly(bad, message):
    maps, masks = bad(RNG.random((2, 8, 8)), np.stack([_square_mask(8, 2, 5)] * 2))
    with pytest.raises(ValueError, match=message):
        grounding_metrics(maps, masks)


def test_grounding_metric_modules_match_the_functions():
    maps = RNG.random((3, 8, 8)).astype(np.float32)
    masks = np.stack([_square_mask(8, 1, 5), _square_mask(8, 3, 7), _square_mask(8, 0, 2)]).astype(np.uint8)
    cnr = load_metric("cnr").compute(predictions=maps.tolist(), references=masks.tolist())
    assert cnr["signed_cnr"] == pytest.approx(contrast_to_noise(maps, masks).mean(), rel=1e-5)
    sweep = load_metric("miou_sweep").compute(predictions=maps.tolist(), references=masks.tolist())["miou_sweep"]
    assert sweep == pytest.approx(iou_sweep(maps, masks).mean(), rel=1e-5)
    auroc = load_metric("pixel_auroc").compute(predictions=maps.tolist(), references=masks.tolist())["pixel_auroc"]
    assert auroc == pytest.approx(pixel_auroc(maps, masks).mean(), rel=1e-5)


def test_location_prior_is_the_mean_mask_per_finding_and_overall():
    masks = np.stack([_square_mask(8, 0, 4), _square_mask(8, 4, 8), _square_mask(8, 0, 8)]).astype(float)
    priors = location_prior(masks, ["A", "A", "B"])
    np.testing.assert_allclose(priors["A"], masks[:2].mean(0))
    np.testing.assert_allclose(priors["*"], masks.mean(0))


def test_cosine_readout_is_the_smoothed_upsampled_sentence_patch_cosine():
    from modeling_place.training.data import build_processor

    tokenizer = synthetic_report_tokenizer()
    config = PlaceConfig(**micro_config())
    config.text_config.vocab_size = len(tokenizer)
    torch.manual_seed(0)
    model = PlaceModel(config).eval()
    processor = build_processor(tokenizer, config.image_size, config.max_sentences, 48)
    pixels = torch.randn(2, 3, 32, 32)
    sentences = ["Small left pleural effusion.", "Right apical pneumothorax."]
    maps = cosine_grounding_maps(model, processor, pixels, sentences, batch_size=1, sigma=1.5)
    with torch.no_grad():
        batch = processor(text=sentences, return_tensors="pt")
        text = model.get_text_features(batch["input_ids"], batch["attention_mask"]).pooler_output
        patches = model.get_patch_embeddings(pixels)
    grid = torch.einsum("bnd,bd->bn", patches, text).view(2, 4, 4).numpy()
    expected = torch.nn.functional.interpolate(torch.from_numpy(smooth_grid(grid, 1.5)).float()[:, None], size=(32, 32),
                                               mode="bilinear", align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(maps, expected, atol=1e-5)
    assert maps.shape == (2, 32, 32) and np.abs(maps).max() <= 1.0


def test_evaluate_grounding_writes_every_row_of_the_protocol(tmp_path):
    from modeling_place.training.data import build_processor

    tokenizer = synthetic_report_tokenizer()
    folders = []
    for name, overrides in (("place", {"pcma_space": "joint"}), ("ita", {"lambda_pcma": 0.0, "lambda_ce": 0.0})):
        config = PlaceConfig(**micro_config(**overrides))
        config.text_config.vocab_size = len(tokenizer)
        torch.manual_seed(0)
        PlaceModel(config).save_pretrained(tmp_path / name)
        build_processor(tokenizer, config.image_size, config.max_sentences, 48).save_pretrained(tmp_path / name)
        folders.append(str(tmp_path / name))
    output = tmp_path / "grounding.json"
    command = [sys.executable, str(REPO / "examples" / "evaluate_grounding.py"), "--model", folders[0], "--ita_only",
               folders[1], "--size", "12", "--image_size", "64", "--data_cache", str(tmp_path / "cache"),
               "--output_json", str(output), "--batch_size", "8"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(output.read_text())
    kinds = {(row["encoder"], row["readout"]) for row in payload["rows"]}
    assert kinds == {("place", "cosine"), ("place", "observation"), ("random_init", "cosine"),
                     ("random_init", "observation"), ("ita_only", "cosine"), ("prior", "prior")}
    for row in payload["rows"]:
        assert {"seed", "cnr", "miou_sweep", "pointing", "pixel_auroc"} <= set(row)
        assert 0 <= row["miou_sweep"] <= 1 and 0 <= row["pointing"] <= 1 and 0 <= row["pixel_auroc"] <= 1
    assert payload["protocol"]["miou_thresholds"] == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert {row["prior"] for row in payload["rows"] if row["encoder"] == "prior"} == {"finding", "all"}
