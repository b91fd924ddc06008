"""The evaluation protocols (evaluation/tasks.py) against naive references, and examples/evaluate.py end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from evaluation.tasks import (
    grounding_scores,
    image_text_similarity,
    retrieval_precision,
    sentence_embedding,
    zero_shot_scores,
)
from modeling_place import PlaceConfig, PlaceModel
from tests.helpers import micro_config, random_batch, synthetic_report_tokenizer

REPO = Path(__file__).resolve().parents[1]
REPORTS = [
    "FINDINGS: Small left pleural effusion. No pneumothorax. IMPRESSION: Left effusion.",
    "FINDINGS: The heart is enlarged. Lungs are clear.",
    "FINDINGS: No acute cardiopulmonary process.",
]


@pytest.fixture(scope="module")
def micro_folder(tmp_path_factory) -> Path:
    """A saved micro PLACE model with a processor whose tokenizer is trained on synthetic reports."""
    from training.data import build_processor

    folder = tmp_path_factory.mktemp("micro-place")
    tokenizer = synthetic_report_tokenizer()
    config = PlaceConfig(**micro_config())
    config.text_config.vocab_size = len(tokenizer)
    torch.manual_seed(0)
    PlaceModel(config).save_pretrained(folder)
    build_processor(tokenizer, config.image_size, config.max_sentences, 48).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model_and_processor(micro_folder):
    from transformers import AutoProcessor

    return PlaceModel.from_pretrained(micro_folder).eval(), AutoProcessor.from_pretrained(micro_folder)


def _pixels(model: PlaceModel, count: int) -> torch.Tensor:
    return random_batch(model.config, count, seed=1)["pixel_values"]


def test_similarity_with_observations_matches_a_loop_over_reports(model_and_processor):
    model, processor = model_and_processor
    pixels = _pixels(model, 2)
    mixed = image_text_similarity(model, processor, pixels, REPORTS, observation_weight=0.25)
    glob = image_text_similarity(model, processor, pixels, REPORTS)
    with torch.no_grad():
        observed = model.get_observation_features(pixels)
        for j, report in enumerate(REPORTS):
            batch = processor(text=[report], return_tensors="pt")
            sentences = model.get_sentence_features(batch["input_ids"], batch["attention_mask"], batch["sentence_ids"])
            valid = sentences.sentence_embeds[0][sentences.sentence_mask[0]]
            per_image = model.observation_scores(valid, observation_embeds=observed.observation_embeds).mean(0)
            np.testing.assert_allclose(mixed[:, j], 0.75 * glob[:, j] + 0.25 * per_image.numpy(), atol=1e-5)


def test_zero_shot_scores_are_positive_minus_negative(model_and_processor):
    model, processor = model_and_processor
    pixels = _pixels(model, 3)
    scores = zero_shot_scores(model, processor, pixels, {"Effusion": ["Left pleural effusion."]},
                              {"Effusion": ["No pleural effusion."]}, observation_weight=0.5)
    assert {k: v.shape for k, v in scores.items()} == {k: (3, 1) for k in ("global", "observation", "combined")}
    sim = image_text_similarity(model, processor, pixels, ["Left pleural effusion.", "No pleural effusion."])
    np.testing.assert_allclose(scores["global"][:, 0], sim[:, 0] - sim[:, 1], atol=1e-5)
    np.testing.assert_allclose(scores["combined"], 0.5 * scores["global"] + 0.5 * scores["observation"], atol=1e-6)
    with pytest.raises(ValueError, match="same classes"):
        zero_shot_scores(model, processor, pixels, {"A": ["a."]}, {"B": ["b."]})


def test_sentence_embedding_averages_valid_slots_only():
    embeds = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    mask = torch.tensor([[True, True, False]])
    torch.testing.assert_close(sentence_embedding(embeds, mask), torch.tensor([[0.5**0.5, 0.5**0.5]]))


def test_retrieval_precision_and_grounding_on_planted_answers():
    labels = [0, 1, 2]
    assert retrieval_precision(np.eye(3), labels, labels, ks=(1,)) == {"precision_at_1": 1.0}
    assert retrieval_precision(np.eye(3)[::-1].copy(), labels, labels, ks=(1,))["precision_at_1"] == pytest.approx(1 / 3)
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[0, :4, :4], masks[1, 4:, 4:] = True, True
    assert grounding_scores(masks.astype(float), masks) == {"pointing_game": 1.0, "miou": 1.0}
    assert grounding_scores(masks[::-1].astype(float), masks) == {"pointing_game": 0.0, "miou": 0.0}


def _run_evaluate(*args: str) -> dict:
    """examples/evaluate.py as a user runs it (a subprocess: the script puts examples/ on sys.path, where its own
    name would shadow the `evaluate` library for the rest of an in-process test session)."""
    command = [sys.executable, str(REPO / "examples" / "evaluate.py"), *args]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(Path(args[args.index("--output_dir") + 1], "results.json").read_text())


def test_evaluate_script_quick_writes_every_task_and_random_init_baseline(micro_folder, tmp_path):
    common = ["--quick", "--image_size", "64", "--data_cache", str(tmp_path / "data")]
    saved = _run_evaluate("--model", str(micro_folder), "--output_dir", str(tmp_path / "pre"), *common)
    baseline = _run_evaluate("--model", str(micro_folder), "--output_dir", str(tmp_path / "rand"), "--random_init",
                             "--seed", "3", *common)
    tasks = {"classification", "zero_shot", "retrieval", "segmentation", "detection", "report_generation"}
    assert set(saved["table"]) == set(baseline["table"]) == tasks and saved["quick"] is True
    values = [value for row in saved["table"].values() for value in row.values()]
    assert all(np.isfinite(values))
    assert all(0.0 <= value <= 1.0 for task in ("classification", "retrieval", "segmentation")
               for value in saved["table"][task].values())
    assert "| classification |" in (tmp_path / "pre" / "results.md").read_text()
    random_dir = tmp_path / "rand" / "random-init-encoder"
    assert baseline["model"] == str(random_dir)
    assert PlaceConfig.from_pretrained(random_dir).to_dict()["num_queries"] == 4
    pretrained, random = load_file(micro_folder / "model.safetensors"), load_file(random_dir / "model.safetensors")
    assert pretrained.keys() == random.keys()
    assert any(not torch.equal(pretrained[key], random[key]) for key in pretrained if key.endswith("weight"))


def test_observation_diagnostics_reports_collapse_and_grounding(micro_folder, tmp_path):
    from safetensors.torch import save_file

    checkpoint = tmp_path / "checkpoint_0"
    checkpoint.mkdir()
    model = PlaceModel.from_pretrained(micro_folder)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, checkpoint / "model.safetensors")
    command = [sys.executable, str(REPO / "examples" / "observation_diagnostics.py"), "--model", str(micro_folder),
               "--checkpoints", str(checkpoint), "--pairs", "6", "--images", "4", "--image_size", "64",
               "--data_cache", str(tmp_path / "data")]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    blind, *rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")][1:]
    assert blind["weights"] == "sentence-blind: mean mask" and 0.0 < blind["pointing_game"] <= 1.0
    assert [row["weights"] for row in rows] == [str(micro_folder), str(checkpoint)]
    assert rows[0] == {**rows[1], "weights": rows[0]["weights"]}  # the same weights give the same numbers
    assert -1.0 <= rows[0]["vpor_cosine"] <= 1.0 and 1 <= rows[0]["distinct_peaks"] <= 4
    assert 0.0 <= rows[0]["pointing_game"] <= 1.0 and 0.0 <= rows[0]["miou"] <= 1.0
