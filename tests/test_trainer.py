"""PlaceTrainer and examples/pretrain.py: end to end, exact resume, 2-process DDP, bad samples, NaN guard."""

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset, Image
from PIL import Image as PILImage
from transformers import AutoModel

from tests.helpers import micro_config, synthetic_report_tokenizer
from modeling_place.training import (
    NonFiniteLossError,
    PairSplits,
    PlaceTrainer,
    TrainConfig,
    build_model_and_processor,
    load_pair_splits,
    load_train_config,
    recall_at_k,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> str:
    """One tokenizer for the runs of this module (built once: faster than a vocabulary per run)."""
    folder = tmp_path_factory.mktemp("tokenizer")
    synthetic_report_tokenizer().save_pretrained(folder)
    return str(folder)


def micro_train_config(folder: Path, **overrides) -> TrainConfig:
    values = dict(
        model=micro_config(), synthetic_size=16, batch_size=4, max_steps=4, warmup_steps=1, eval_every=2,
        checkpoint_every=2, log_every=1, num_workers=0, validation_pairs=8, vocab_size=300, max_length=48,
        run_dir=str(folder / "run"), output_dir=str(folder / "out"), progress_bar=False, mixed_precision="no",
    )
    values.update(overrides)
    return TrainConfig(**values)


def run_training(config: TrainConfig, splits: PairSplits | None = None) -> tuple[PlaceTrainer, dict]:
    splits = splits or load_pair_splits(config)
    model, processor = build_model_and_processor(config, splits)
    trainer = PlaceTrainer(config, model, processor, splits)
    return trainer, trainer.train()


def _weights(trainer: PlaceTrainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.accelerator.unwrap_model(trainer.model).state_dict().items()}


def test_pretrain_script_few_steps_gives_loadable_folder(tmp_path):
    command = [sys.executable, str(REPO / "examples" / "pretrain.py"), f"--model={json.dumps(micro_config())}",
               "--synthetic_size=16", "--batch_size=4", "--max_steps=3", "--num_workers=1", "--eval_every=3",
               "--vocab_size=300", "--max_length=48", f"--run_dir={tmp_path / 'run'}", f"--output_dir={tmp_path / 'out'}",
               "--progress_bar=false"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env={**os.environ})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "PLACE pretraining configuration" in result.stdout and "lambda" not in result.stderr
    model = AutoModel.from_pretrained(tmp_path / "out")
    assert type(model).__name__ == "PlaceModel" and model.config.max_sentences == 4
    saved = json.loads((tmp_path / "out" / "train_config.json").read_text())
    assert saved["max_steps"] == 3 and (tmp_path / "out" / "processor_config.json").exists()
    assert json.loads((tmp_path / "run" / "train_config.json").read_text()) == saved
    card = (tmp_path / "out" / "README.md").read_text()  # rewritten once the data and the processor are saved
    assert "license: apache-2.0" in card and "- Data: the package's synthetic" in card and "- Images: grey level" in card
    records = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in records if r["kind"] == "validation"] == [("validation", 0), ("validation", 3)]
    train = [r for r in records if r["kind"] == "train"]
    assert train[-1]["step"] == 3 and {"loss", "loss_ita", "lr", "samples_per_s"} <= set(train[-1])


def kill_after_checkpoint(monkeypatch, step: int) -> None:
    """Make the next training raise right after it saved its checkpoint of `step` (a kill between steps)."""
    original_save = PlaceTrainer.save_checkpoint

    def save_then_die(self):
        original_save(self)
        if self.progress.step == step:
            raise KeyboardInterrupt(f"killed after the checkpoint of step {step}")

    monkeypatch.setattr(PlaceTrainer, "save_checkpoint", save_then_die)


@pytest.fixture(scope="module")
def two_epoch_straight_run(tmp_path_factory, tokenizer_dir) -> dict[str, torch.Tensor]:
    """The final weights of an uninterrupted 8-step run: 2 epochs of 4 batches (16 pairs, batch 4)."""
    folder = tmp_path_factory.mktemp("straight")
    trainer, summary = run_training(micro_train_config(folder, tokenizer=tokenizer_dir, max_steps=8))
    assert summary["steps"] == 8 and summary["samples"] == 32
    return _weights(trainer)


@pytest.mark.parametrize("kill_step", [2, 4, 6], ids=["inside-epoch-0", "epoch-boundary", "inside-epoch-1"])
def test_kill_and_resume_is_bit_exact_across_epochs(tmp_path, monkeypatch, tokenizer_dir, two_epoch_straight_run, kill_step):
    config = micro_train_config(tmp_path, tokenizer=tokenizer_dir, max_steps=8)
    kill_after_checkpoint(monkeypatch, kill_step)
    with pytest.raises(KeyboardInterrupt):
        run_training(config)
    monkeypatch.undo()
    resumed, summary = run_training(config)
    assert summary["samples"] == 32 and [p.name for p in resumed.checkpoints()] == ["checkpoint_6", "checkpoint_8"]
    got = _weights(resumed)
    for name, value in two_epoch_straight_run.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=0, msg=name)


def test_a_save_killed_half_way_is_skipped_with_a_warning_and_the_run_resumes_from_the_previous_one(
        tmp_path, monkeypatch, capsys, tokenizer_dir):
    from modeling_place.training import checkpoint as checkpointing

    config = micro_train_config(tmp_path, tokenizer=tokenizer_dir)  # checkpoints at steps 2 and 4
    original_save_file = checkpointing.save_file

    def die_in_second_save(tensors, path):
        if "checkpoint_4" in str(path):
            raise KeyboardInterrupt("killed while writing the optimizer of checkpoint_4")
        original_save_file(tensors, path)

    monkeypatch.setattr(checkpointing, "save_file", die_in_second_save)
    with pytest.raises(KeyboardInterrupt):
        run_training(config)
    monkeypatch.undo()
    folder = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == [".tmp-checkpoint_4", "checkpoint_2"]
    # what a writer without the rename leaves: the newest checkpoint's folder, half-written
    shutil.copytree(folder / ".tmp-checkpoint_4", folder / "checkpoint_4")
    with pytest.warns(UserWarning, match=r"incomplete checkpoint .*checkpoint_4 "):
        trainer, summary = run_training(config)
    assert "checkpoint_2 at step 2" in capsys.readouterr().out and summary["steps"] == 4
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint_2", "checkpoint_4"]
    assert [p.name for p in trainer.checkpoints()] == ["checkpoint_2", "checkpoint_4"]


class _RunsCode:
    """A pickle that would create a file when unpickled: what a tampered run_dir could hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_resume_never_unpickles_anything(tmp_path, monkeypatch, tokenizer_dir):
    import pickle

    from modeling_place.training.checkpoint import LegacyCheckpointError

    config = micro_train_config(tmp_path, tokenizer=tokenizer_dir, max_steps=2)
    run_training(config)
    newest = tmp_path / "run" / "checkpoints" / "checkpoint_2"
    assert {p.suffix for p in newest.iterdir()} <= {".json", ".safetensors"}  # nothing pickled is written
    marker = tmp_path / "code-ran"
    for name in ("random_states_0.pkl", "custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl", "optimizer.bin"):
        (newest / name).write_bytes(pickle.dumps(_RunsCode(marker)))

    def refuse(*args, **kwargs):
        raise AssertionError("the resume path must not unpickle")

    for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads")):
        monkeypatch.setattr(module, name, refuse)
    _, summary = run_training(micro_train_config(tmp_path, tokenizer=tokenizer_dir, max_steps=4))
    assert summary["steps"] == 4 and not marker.exists()
    # accelerate's pickled format (save_state) is refused, never loaded
    legacy = tmp_path / "run" / "checkpoints" / "checkpoint_9"
    legacy.mkdir()
    for name in ("model.safetensors", "optimizer.bin", "custom_checkpoint_0.pkl", "random_states_0.pkl"):
        (legacy / name).write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(LegacyCheckpointError, match="checkpoint_9"):
        run_training(micro_train_config(tmp_path, tokenizer=tokenizer_dir, max_steps=12))
    assert not marker.exists()


def test_engine_sharded_runs_are_refused_at_start_not_at_the_first_save():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from modeling_place.training.checkpoint import require_supported

    require_supported(SimpleNamespace(distributed_type=DistributedType.MULTI_CPU))  # DDP: whole tensors
    require_supported(SimpleNamespace(distributed_type=DistributedType.FSDP))  # gathered: tests/test_fsdp.py
    with pytest.raises(NotImplementedError, match="DEEPSPEED"):
        require_supported(SimpleNamespace(distributed_type=DistributedType.DEEPSPEED))


def test_resume_refuses_checkpoints_of_another_model(tmp_path, tokenizer_dir):
    def config(matching: str, steps: int) -> TrainConfig:
        return micro_train_config(tmp_path, max_steps=steps, tokenizer=tokenizer_dir,
                                  model=micro_config(pcma_matching=matching))

    run_training(config("hard", 2))
    with pytest.raises(ValueError, match="different model.*pcma_matching: checkpoint 'hard', now 'soft'"):
        run_training(config("soft", 4))  # e.g. a default changed between the two starts
    _, summary = run_training(config("hard", 4))  # the same model resumes
    assert summary["steps"] == 4


def test_a_run_dir_from_before_the_declared_head_options_and_retired_options_resumes(tmp_path, tokenizer_dir):
    """model_config.json as written before: no head options, the retired options at their neutral values."""
    from modeling_place.configuration_place import HEAD_OPTION_NAMES, RETIRED_OPTIONS

    def config(steps: int) -> TrainConfig:
        return micro_train_config(tmp_path, max_steps=steps, tokenizer=tokenizer_dir, model=micro_config())

    run_training(config(2))
    record = tmp_path / "run" / "model_config.json"
    old = {k: v for k, v in json.loads(record.read_text()).items() if k not in HEAD_OPTION_NAMES}
    record.write_text(json.dumps({**old, **RETIRED_OPTIONS}))
    _, summary = run_training(config(4))
    assert summary["steps"] == 4
    record.write_text(json.dumps({**old, "vpoe_input_block": 1}))  # a retired option that changed the model
    with pytest.raises(ValueError, match="different model.*vpoe_input_block"):
        run_training(config(6))


def test_two_process_ddp_matches_one_process_double_batch(tmp_path, tokenizer_dir):
    common = [f"--model={json.dumps(micro_config())}", "--synthetic_size=16", "--max_steps=3", "--log_every=1",
              "--eval_every=100", "--checkpoint_every=100", "--num_workers=0", "--vocab_size=300", "--max_length=48",
              "--augment=false", "--progress_bar=false", "--mixed_precision=no", "--validation_pairs=0",
              f"--tokenizer={tokenizer_dir}"]
    no_dropout = micro_config(text_config={**micro_config()["text_config"], "hidden_dropout_prob": 0.0,
                                           "attention_probs_dropout_prob": 0.0})
    common[0] = f"--model={json.dumps(no_dropout)}"
    # the shipped CPU DDP config, as the README launches it
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
              str(REPO / "examples" / "accelerate" / "cpu_ddp.yaml"), "--main_process_port", "29517"]
    script = str(REPO / "examples" / "pretrain.py")
    runs = {"ddp": launch + [script, "--batch_size=4"], "single": [sys.executable, script, "--batch_size=8"]}
    losses = {}
    for name, command in runs.items():
        folder = tmp_path / name
        result = subprocess.run(command + common + [f"--run_dir={folder}/run", f"--output_dir={folder}/out"],
                                capture_output=True, text=True, cwd=tmp_path, env={**os.environ})
        assert result.returncode == 0, result.stderr[-3000:]
        summary = json.loads((folder / "out" / "training_summary.json").read_text())
        losses[name] = summary["last_train_log"]["loss"]
        assert summary["samples"] == 3 * 8  # counted on each rank and summed: 2 ranks x 4 per step in DDP
    # float reduction order differs between gloo all-reduce and one process: equal to ~1e-4 after 3 steps
    assert losses["ddp"] == pytest.approx(losses["single"], rel=1e-3)


def test_a_launch_that_asks_for_two_processes_and_starts_one_fails_with_the_command_that_works(tmp_path):
    """`accelerate launch --cpu --num_processes 2` takes accelerate's single-process launcher: one rank."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "examples" / "pretrain.py"),
               f"--run_dir={tmp_path / 'run'}", "--max_steps=1"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env={**os.environ})
    assert result.returncode != 0 and "started 1" in result.stderr
    assert "accelerate launch --multi_gpu --num_processes 2 --num_machines 1" in result.stderr
    assert not (tmp_path / "run").exists()  # it stopped before any work


def _splits_with_bad_rows(good: int, bad_images: int, empty_reports: int) -> PairSplits:
    buffer = io.BytesIO()
    PILImage.fromarray((torch.rand(64, 64) * 255).byte().numpy()).save(buffer, format="PNG")
    png = buffer.getvalue()
    rows = [{"image": {"bytes": png, "path": None}, "report": "FINDINGS: Lungs are clear. No effusion."}] * good
    rows += [{"image": {"bytes": png[:40], "path": "broken.png"}, "report": "FINDINGS: Heart is normal."}] * bad_images
    rows += [{"image": {"bytes": png, "path": None}, "report": "   "}] * empty_reports
    table = Dataset.from_list(rows).cast_column("image", Image())
    return PairSplits(table, None, "image", "report")


def test_bad_samples_are_skipped_and_counted(tmp_path):
    splits = _splits_with_bad_rows(good=14, bad_images=1, empty_reports=1)
    config = micro_train_config(tmp_path, max_steps=4, max_bad_fraction=0.5, vocab_size=100)
    _, summary = run_training(config, splits)
    assert summary["steps"] == 4 and summary["skipped_samples"] >= 1
    with pytest.raises(RuntimeError, match="unreadable or had empty reports"):
        run_training(micro_train_config(tmp_path / "strict", max_bad_fraction=0.0, vocab_size=100), splits)


def test_nan_loss_stops_cleanly_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    from modeling_place import PlaceModel

    forward = PlaceModel.forward
    calls = {"train": 0}

    def poisoned(self, *args, **kwargs):
        output = forward(self, *args, **kwargs)
        if self.training:
            calls["train"] += 1
            if calls["train"] >= 3:  # step 3 of 4: after the checkpoint at step 2
                output.loss = output.loss * float("nan")
        return output

    monkeypatch.setattr(PlaceModel, "forward", poisoned)
    config = micro_train_config(tmp_path)
    with pytest.raises(NonFiniteLossError, match="checkpoint_2"):
        run_training(config)
    assert [p.name for p in sorted((tmp_path / "run" / "checkpoints").iterdir())] == ["checkpoint_2"]


def test_config_file_and_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("max_steps: 7\nmodel:\n  lambda_ce: 0\n")
    config = load_train_config([str(tmp_path / "c.yaml"), "--lr=1e-3", "--model", '{"tau_match": 0.2}'])
    assert config.max_steps == 7 and config.lr == 1e-3 and config.model == {"lambda_ce": 0, "tau_match": 0.2}
    with pytest.raises(ValueError, match="unknown option --lrr"):
        load_train_config(["--lrr=1"])
    with pytest.raises(ValueError, match="batch_size"):
        load_train_config(["--batch_size=0"])
    with pytest.raises(ValueError, match="expects int"):
        load_train_config(["--max_steps=ten"])


def test_options_parse_through_hf_argument_parser_in_every_spelling(tmp_path):
    from transformers import HfArgumentParser

    from modeling_place.training.config import train_config_parser

    assert isinstance(train_config_parser(), HfArgumentParser)
    (tmp_path / "c.json").write_text(json.dumps({"max_steps": 7, "trackers": ["tensorboard"]}))
    config = load_train_config(["--config", str(tmp_path / "c.json"), "--batch_size", "3", "--no_augment",
                                "--progress-bar=false", "--data_options", '{"skip_bad_rows": true}', "--tokenizer=none",
                                "--synthetic_size", "null", "--trackers", "tensorboard", "trackio"])
    assert (config.max_steps, config.batch_size, config.augment, config.progress_bar) == (7, 3, False, False)
    assert config.data_options == {"skip_bad_rows": True} and config.tokenizer is None and config.synthetic_size is None
    assert config.trackers == ["tensorboard", "trackio"]
    assert load_train_config(["--trackers=tensorboard,trackio"]).trackers == ["tensorboard", "trackio"]
    with pytest.raises(ValueError, match="--model expects a JSON mapping"):
        load_train_config(["--model={lambda_ce: 0}"])


def test_learning_rate_follows_transformers_cosine_with_min_lr_and_warmup(tmp_path, tokenizer_dir):
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    config = micro_train_config(tmp_path, tokenizer=tokenizer_dir, max_steps=4, warmup_steps=2, min_lr_ratio=0.25,
                                validation_pairs=0, checkpoint_every=100)
    trainer, _ = run_training(config)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=config.lr)
    reference = get_cosine_with_min_lr_schedule_with_warmup(optimizer, 2, 4, min_lr_rate=0.25)
    expected = []
    for _ in range(4):
        optimizer.step()
        reference.step()
        expected.append(reference.get_last_lr()[0])
    assert [record["lr"] for record in trainer.history] == pytest.approx(expected, rel=1e-12)
    assert expected[0] == pytest.approx(config.lr / 2) and expected[-1] == pytest.approx(config.lr * 0.25)


def test_help_lists_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit) as stop:
        load_train_config(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert "--max_steps" in text and "--model" in text and "default 'tiny'" in text


def test_recall_at_k():
    embeds = torch.eye(4)
    assert recall_at_k(embeds, embeds) == {"recall@1": 1.0, "recall@5": 1.0}
    shuffled = embeds[[1, 0, 2, 3]]
    assert recall_at_k(embeds, shuffled, ks=(1, 2))["recall@1"] == 0.5


@pytest.mark.parametrize("name", ["tiny_synthetic.yaml", "base_mimic.yaml"])
def test_provided_configs_parse(name):
    config = load_train_config([str(REPO / "examples" / "configs" / name)])
    assert config.preset in ("tiny", "base") and config.max_steps > 0


def test_pretraining_over_one_percent_malformed_rows_and_reports_finishes_and_counts(tmp_path, tokenizer_dir):
    """Issue 26: a real-reader run (generic JSONL table) with 1 % malformed rows (skipped by the reader) and 1 %
    bad samples (a headers-only report, a truncated PNG: skipped by the trainer) finishes with the default
    max_bad_fraction and reports both counts; a lone-surrogate report is repaired, not fatal."""
    images = tmp_path / "img"
    images.mkdir()
    for n in range(4):
        PILImage.fromarray((torch.rand(40, 40) * 255).byte().numpy()).save(images / f"{n}.png")
    full = (images / "0.png").read_bytes()
    (images / "cut.png").write_bytes(full[: len(full) // 2])
    reports = ["FINDINGS: Lungs are clear. No effusion.", "IMPRESSION: Small left pleural effusion.",
               "FINDINGS: Heart size is normal.\nIMPRESSION: No pneumothorax."]
    rows = [{"image_path": f"img/{n % 4}.png", "text": reports[n % 3], "pleural_effusion": n % 2} for n in range(197)]
    rows.insert(50, {"image_path": "img/1.png", "text": "FINDINGS:\nIMPRESSION:"})  # headers only: no sentence
    rows.insert(120, {"image_path": "img/cut.png", "text": reports[0]})  # truncated image data
    rows.insert(160, {"image_path": "img/2.png", "text": "FINDINGS: Lungs are clear \ud800."})  # lone surrogate
    malformed = [{"image_path": "img/1.png", "text": reports[1], "pleural_effusion": "yes"},
                 {"image_path": [], "text": reports[2]}]
    lines = [json.dumps(row) for row in rows[:100]] + [json.dumps(malformed[0])] + \
        [json.dumps(row) for row in rows[100:]] + [json.dumps(malformed[1])]
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = micro_train_config(
        tmp_path, dataset="csv", data_root=str(tmp_path / "pairs.jsonl"), data_options={"skip_bad_rows": True},
        tokenizer=tokenizer_dir, batch_size=20, max_steps=10, log_every=10, eval_every=10, checkpoint_every=10,
    )
    splits = load_pair_splits(config)
    assert len(splits.train) == 200 and splits.skipped_rows == 2  # 2 of 202 table rows malformed
    _, summary = run_training(config, splits)  # one epoch: every bad sample is met exactly once
    assert summary["steps"] == 10 and summary["samples"] == 200
    assert summary["skipped_samples"] == 2 and summary["skipped_rows"] == 2
