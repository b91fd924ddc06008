"""The evaluation protocols (modeling_place/evaluation/tasks.py) against naive references, and examples/evaluate.py end to end."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from modeling_place.evaluation.tasks import (
    grounding_scores,
    image_text_similarity,
    retrieval_precision,
    sentence_embedding,
    zero_shot_scores,
)
from modeling_place import PlaceConfig, PlaceModel
from modeling_place.heads_place import HEAD_DEFAULTS
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
    from modeling_place.training.data import build_processor

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


def _regression_task(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, validate) -> Any:
    """A `HeadTask` over (inputs, targets), in order, every epoch."""
    from modeling_place.evaluation.downstream import HeadTask

    rows = lambda indices: {"x": inputs[indices], "labels": targets[indices]}  # noqa: E731
    return HeadTask(model, len(inputs), lambda epoch: [range(len(inputs))], rows, validate)


def test_fit_decays_the_rate_on_a_cosine_and_restores_the_best_epoch():
    from types import SimpleNamespace

    from modeling_place.evaluation.downstream import FitConfig, epoch_learning_rate, fit

    torch.manual_seed(0)
    head = torch.nn.Linear(3, 1)
    inputs = torch.randn(64, 3)
    targets = inputs @ torch.tensor([[1.0], [-2.0], [0.5]])

    class Regressor(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = head

        def forward(self, x: torch.Tensor, labels: torch.Tensor) -> SimpleNamespace:
            return SimpleNamespace(loss=torch.nn.functional.mse_loss(self.head(x), labels))

    scores = iter([0.1, 0.9, 0.2, 0.3])  # epoch 1 is the best one
    states = []

    def validate() -> float:
        states.append(head.weight.detach().clone())
        return next(scores)

    config = FitConfig(epochs=4, lr=0.1, batch_size=64, progress_bar=False)
    result = fit(_regression_task(Regressor(), inputs, targets, validate), config, log=lambda _: None)
    assert [h["lr"] for h in result["history"]] == pytest.approx([0.1, 0.1 * 0.5 * (1 + np.cos(np.pi / 4)), 0.05,
                                                                  0.1 * 0.5 * (1 + np.cos(3 * np.pi / 4))])
    assert epoch_learning_rate(0.1, 4, 4) == pytest.approx(0.0)
    assert result["best_epoch"] == 1 and result["best_validation"] == 0.9
    assert torch.equal(head.weight, states[1]) and not torch.equal(states[1], states[-1])
    # the ablation study's light budget keeps the constant rate it was run with
    scores = iter([0.1, 0.2])
    constant = fit(_regression_task(Regressor(), inputs, targets, validate),
                   FitConfig(epochs=2, lr=0.1, batch_size=64, progress_bar=False, lr_schedule="constant"),
                   log=lambda _: None)
    assert [h["lr"] for h in constant["history"]] == [0.1, 0.1]
    with pytest.raises(ValueError, match="lr_schedule"):
        FitConfig(lr_schedule="linear")


class _AutocastRecorder(torch.nn.Module):
    """A regressor that records, at every forward, whether autocast is on and where its input lives."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(3, 1)
        self.seen: list[tuple[bool, str]] = []

    def forward(self, x: torch.Tensor, labels: torch.Tensor):
        from types import SimpleNamespace

        self.seen.append((torch.is_autocast_enabled("cpu"), x.device.type))
        return SimpleNamespace(loss=torch.nn.functional.mse_loss(self.head(x).float(), labels))


def _reset_accelerator_state() -> None:
    """accelerate keeps one process-wide precision: a test that asks for another starts from a clean state."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture
def fresh_accelerator_state():
    _reset_accelerator_state()
    yield
    _reset_accelerator_state()


def test_fit_trains_through_accelerate_fp32_numbers_unchanged_on_cpu_bf16_on_request(fresh_accelerator_state):
    from modeling_place.evaluation.downstream import FitConfig, epoch_learning_rate, fit, head_mixed_precision

    inputs, targets = torch.randn(16, 3, generator=torch.Generator().manual_seed(1)), torch.randn(16, 1)
    batches = lambda epoch: iter([{"x": inputs[:8], "labels": targets[:8]}, {"x": inputs[8:], "labels": targets[8:]}])  # noqa: E731
    torch.manual_seed(0)
    model = _AutocastRecorder()
    reference = copy.deepcopy(model.head)  # the plain PyTorch loop fit ran before, step for step
    optimizer = torch.optim.AdamW(reference.parameters(), lr=0.1, weight_decay=1e-4)
    for epoch in range(2):
        optimizer.param_groups[0]["lr"] = epoch_learning_rate(0.1, epoch, 2)
        for batch in batches(epoch):
            torch.nn.functional.mse_loss(reference(batch["x"]), batch["labels"]).backward()
            optimizer.step()
            optimizer.zero_grad()
    scores = iter([0.0, 1.0])
    config = FitConfig(epochs=2, lr=0.1, batch_size=8, progress_bar=False)
    fit(_regression_task(model, inputs, targets, lambda: next(scores)), config, log=lambda _: None)
    assert head_mixed_precision("auto") == "no" and set(model.seen) == {(False, "cpu")}
    assert torch.equal(model.head.weight, reference.weight) and torch.equal(model.head.bias, reference.bias)
    _reset_accelerator_state()
    bf16 = _AutocastRecorder()
    config = FitConfig(epochs=1, lr=0.1, batch_size=8, progress_bar=False, mixed_precision="bf16")
    fit(_regression_task(bf16, inputs, targets, lambda: 0.0), config, log=lambda _: None)
    assert set(bf16.seen) == {(True, "cpu")} and bf16.head.weight.dtype == torch.float32
    bf16.seen.clear()
    bf16(inputs, targets)  # the trained head's forward is its own again, without the autocast wrapper
    assert bf16.seen == [(False, "cpu")]


def test_evaluate_script_quick_writes_every_task_and_random_init_baseline(micro_folder, tmp_path):
    common = ["--quick", "--image_size", "64", "--data_cache", str(tmp_path / "data")]
    saved = _run_evaluate("--model", str(micro_folder), "--output_dir", str(tmp_path / "pre"), *common)
    baseline = _run_evaluate("--model", str(micro_folder), "--output_dir", str(tmp_path / "rand"), "--random_init",
                             "--seed", "3", "--repeats", "2", *common)
    tasks = {"classification", "zero_shot", "retrieval", "grounding", "segmentation", "detection", "report_generation"}
    assert set(saved["table"]) == set(baseline["table"]) == tasks and saved["quick"] is True
    values = [value for row in saved["table"].values() for value in row.values()]
    assert all(np.isfinite(values))
    assert all(0.0 <= value <= 1.0 for task in ("classification", "retrieval", "segmentation")
               for value in saved["table"][task].values())
    assert "| classification |" in (tmp_path / "pre" / "results.md").read_text()
    assert {"place cosine cnr", "place observation pointing", "random_init cosine miou_sweep"} <= set(saved["table"]["grounding"])
    # two heads per fraction: the table has their mean and std, the details each head and the one kept
    assert "mAP 1 std" in baseline["table"]["detection"] and "mAP 1 std" not in saved["table"]["detection"]
    detection = baseline["details"]["detection"]["results"]["1"]
    assert len(detection["repeats"]) == 2 and detection["kept_repeat"] in (0, 1)
    assert baseline["table"]["detection"]["mAP 1"] == pytest.approx(np.mean([r["test_map"] for r in detection["repeats"]]))
    assert detection["test_map"] == detection["repeats"][detection["kept_repeat"]]["test_map"]
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
               "--data_cache", str(tmp_path / "data"), "--matching", "soft", "--tau_match", "0.2"]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    blind, *rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")][1:]
    assert blind["weights"] == "sentence-blind: mean mask" and 0.0 < blind["pointing_game"] <= 1.0
    assert [row["weights"] for row in rows] == [str(micro_folder), str(checkpoint)]
    assert rows[0] == {**rows[1], "weights": rows[0]["weights"]}  # the same weights give the same numbers
    assert -1.0 <= rows[0]["vpor_cosine"] <= 1.0 and 1 <= rows[0]["distinct_peaks"] <= 4
    assert 0.0 <= rows[0]["pointing_game"] <= 1.0 and 0.0 <= rows[0]["miou"] <= 1.0
    assert 0.0 <= rows[0]["oracle_pointing"] <= 1.0 and 0.0 <= rows[0]["oracle_iou"] <= 1.0
    assert 0.0 <= rows[0]["queries_on_lesion"] <= 4 and 0.0 < rows[0]["map_area"] <= 1.0


def test_patch_probe_scores_every_level_of_pretrained_and_random_weights(micro_folder, tmp_path):
    command = [sys.executable, str(REPO / "examples" / "patch_probe.py"), "--model", str(micro_folder),
               "--size", "40", "--train_images", "30", "--test_images", "20", "--image_size", "64",
               "--data_cache", str(tmp_path / "data")]
    runs = [subprocess.run(command + extra, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            for extra in ([], ["--random_init"])]
    for result in runs:
        assert result.returncode == 0, result.stderr[-3000:]
    pretrained, random = ([json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")] for r in runs)
    assert [row["level"] for row in pretrained] == ["block 1", "final norm"]  # the micro ViT has one block
    assert random[0]["model"] == f"random init of {micro_folder}"
    for row in pretrained + random:
        assert row["pixel_r2"] <= 1.0 and 0.0 <= row["lesion_patch_auroc"] <= 1.0
    assert len(random) == len(pretrained)


def test_lesion_patches_marks_the_patches_a_box_overlaps():
    import importlib.util

    spec = importlib.util.spec_from_file_location("patch_probe", REPO / "examples" / "patch_probe.py")
    patch_probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(patch_probe)
    # one box over x in [0.3, 0.6), y in [0.0, 0.2) on a 4×4 grid: columns 1–2 of row 0; an image without boxes
    boxes = torch.tensor([[0.45, 0.1, 0.3, 0.2]])
    marks = patch_probe.lesion_patches([{"boxes": boxes}, {"boxes": torch.zeros(0, 4)}], grid=4).reshape(2, 4, 4)
    expected = np.zeros((4, 4), bool)
    expected[0, 1:3] = True
    assert np.array_equal(marks[0], expected) and not marks[1].any()


def test_light_budget_keeps_the_studys_rate_and_epoch_size_and_the_full_budget_changes_both():
    from modeling_place.evaluation.protocols import suite as script

    common = script.argparse.Namespace(model="place-cxr", output_dir="o", image_size=64, data_cache=None, seed=0,
                                       quick=False, budget="light", repeats=1)
    for name in ("classification", "segmentation", "detection", "report_generation"):
        assert script.task_settings(script.TASKS[name], common, name).lr_schedule == "constant"
        common.budget = "full"
        assert script.task_settings(script.TASKS[name], common, name).lr_schedule == "cosine"
        common.budget = "light"
    for name in ("segmentation", "detection"):  # small label fractions: examples per epoch (docs/RESULTS.md, 9)
        assert script.task_settings(script.TASKS[name], common, name).min_epoch_examples == 500
        common.budget = "full"
        assert script.task_settings(script.TASKS[name], common, name).min_epoch_examples == 1000
        common.budget = "light"
    # the study's detection head had two trunk convolutions; the full budget compares encoders with none (RESULTS.md, 10)
    assert script.task_settings(script.TASKS["detection"], common, "detection").trunk_layers == 2
    common.budget = "full"
    assert script.task_settings(script.TASKS["detection"], common, "detection").trunk_layers == 0
    common.quick = True  # the plumbing check builds the package's default head
    quick = script.task_settings(script.TASKS["detection"], common, "detection")
    assert quick.trunk_layers == HEAD_DEFAULTS["detection_trunk_layers"] == 2


def test_summarise_repeats_averages_test_numbers_and_keeps_the_chosen_heads_own():
    from modeling_place.evaluation.downstream import head_seed, summarise_repeats

    runs = [{"test_map": 0.2, "best_validation": 0.5, "history": [1]}, {"test_map": 0.4, "best_validation": 0.7, "history": [2]}]
    summary = summarise_repeats(runs, kept=1)
    assert summary["test_map"] == 0.4 and summary["history"] == [2] and summary["repeats"] == runs
    assert summary["mean"] == {"test_map": pytest.approx(0.3)}
    assert summary["std"] == {"test_map": pytest.approx(np.std([0.2, 0.4], ddof=1))}
    assert summarise_repeats(runs[:1], kept=0) == runs[0]  # one head: its own results, nothing added
    assert len({head_seed(seed, repeat) for seed in range(3) for repeat in range(3)}) == 9


def test_fine_tune_fractions_refuses_zero_repeats():
    from types import SimpleNamespace

    from modeling_place.evaluation.downstream import fine_tune_fractions

    settings = SimpleNamespace(repeats=0, fractions=[1.0], seed=0, output_dir="unused")
    with pytest.raises(ValueError, match="--repeats must be at least 1"):
        fine_tune_fractions(settings, [], "detection", "detection", lambda subset: None)
