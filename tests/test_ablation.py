"""examples/ablation.py and examples/ablation_report.py end to end on a micro model (a few steps, quick budget)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import micro_config, synthetic_report_tokenizer

REPO = Path(__file__).resolve().parents[1]


def _load_script(name: str):
    """Import an example script by path; `examples/` stays off sys.path (its evaluate.py would shadow the
    `evaluate` library for the rest of the session)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # ablation_report imports ablation by name
    spec.loader.exec_module(module)
    return module


ablation = _load_script("ablation")
VARIANTS, parse_run = ablation.VARIANTS, ablation.parse_run
read_jsonl = _load_script("ablation_report").read_jsonl


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "examples" / name), *args]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def test_parse_run_names_and_rejects_typos():
    assert parse_run("ita_only") == ("ita_only", 0) and parse_run("place_dense-seed2") == ("place_dense", 2)
    assert parse_run("random_init") == ("random_init", 0)
    assert VARIANTS["ita_only"] == {"lambda_pcma": 0.0, "lambda_ce": 0.0}
    with pytest.raises(ValueError, match="unknown run 'ita-only'"):
        parse_run("ita-only")


def test_read_jsonl_keeps_the_last_record_of_a_relogged_step(tmp_path):
    records = [{"kind": "train", "step": 2, "loss": 3.0}, {"kind": "validation", "step": 2, "val_loss": 5.0},
               {"kind": "train", "step": 2, "loss": 2.0}, {"kind": "train", "step": 1, "loss": 4.0}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    kept = read_jsonl(tmp_path / "m.jsonl")
    assert [(r["kind"], r["step"]) for r in kept] == [("train", 1), ("train", 2), ("validation", 2)]
    assert kept[1]["loss"] == 2.0


def test_study_runs_resumes_and_reports(tmp_path):
    tokenizer = tmp_path / "tokenizer"
    synthetic_report_tokenizer().save_pretrained(tokenizer)
    root, data = tmp_path / "study", tmp_path / "data"
    study = ["--root", str(root), "--steps", "2", "--eval_every", "2", "--budget", "quick", "--tokenizer", str(tokenizer),
             "--jobs", "2", "--threads", "1", "--model_base", json.dumps(micro_config()),
             "--pretrain_args", "--synthetic_size=16 --batch_size=4 --max_length=48 --num_workers=0 --validation_pairs=8",
             "--evaluate_args", f"--image_size 64 --data_cache {data} --tasks zero_shot retrieval"]
    _script("ablation.py", "--runs", "ita_only", "random_init", *study)
    ita = json.loads((root / "ita_only" / "model" / "config.json").read_text())
    assert ita["lambda_pcma"] == 0.0 and ita["lambda_ce"] == 0.0 and ita["num_queries"] == 4
    assert (root / "place_dense" / "model" / "training_summary.json").exists()  # random_init's architecture source
    assert json.loads((root / "random_init" / "eval" / "results.json").read_text())["model"].endswith("random-init-encoder")
    validation = [r for r in read_jsonl(root / "ita_only" / "train" / "metrics.jsonl") if r["kind"] == "validation"]
    assert [r["step"] for r in validation] == [0, 2]
    log = (root / "ita_only" / "pretrain.log").read_text()
    _script("ablation.py", "--runs", "ita_only", *study)  # finished parts are not redone
    assert (root / "ita_only" / "pretrain.log").read_text() == log
    out = tmp_path / "report"
    _script("ablation_report.py", "--root", str(root), "--output_dir", str(out), "--grounding_model",
            str(root / "place_dense" / "model"), "--image_size", "64", "--data_cache", str(data))
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["runs"]) == {"ita_only", "random_init"}
    saved = json.loads((root / "ita_only" / "eval" / "results.json").read_text())["table"]
    assert summary["variants"]["ita_only"]["retrieval"]["global P@5"]["mean"] == saved["retrieval"]["global P@5"]
    assert "| ita_only |" in (out / "table.md").read_text()
    assert "pointing game" in (out / "sweep.md").read_text()
    for plot in ("headline.png", "training_curves.png", "label_fractions.png", "grounding.png"):
        assert (out / plot).stat().st_size > 1000
