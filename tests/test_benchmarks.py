"""The benchmark scripts' quick/dry modes run end to end and write sane results; their measuring helpers are right."""

import argparse
import importlib
import json
import math
import os
import time
from pathlib import Path

import pytest
import torch

from benchmarks import data_loading, decoding, gpu, gpu_phases, inference, input_pipeline, memory, train_step
from modeling_place import PlaceConfig, PlaceModel
from tests.helpers import micro_config


@pytest.fixture(autouse=True)
def _one_thread():
    """Benchmarks measure, they need not be fast here: one thread avoids oversubscribing a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _read(path) -> dict:
    return json.loads(path.read_text())


# -- train_step ------------------------------------------------------------------------------------------------
def test_train_step_quick_with_profile(tmp_path):
    output = tmp_path / "train_step.json"
    report = train_step.main(["--presets", "tiny", "--quick", "--batch-size", "2", "--length", "16", "--profile",
                              "--output", str(output)])
    assert _read(output) == json.loads(json.dumps(report))
    assert {"machine", "threads", "dtype", "matmul_peak_flops", "rows", "profile"} <= set(report)
    rows = {row["variant"]: row for row in report["rows"]}
    assert set(rows) == set(train_step.VARIANTS)
    for row in rows.values():
        assert row["step_s"] > 0 and row["samples_per_s"] == pytest.approx(2 / row["step_s"])
        assert row["mfu"] == row["mfu_fp32_peak"] > 0 and len(row["times_s"]) == 2
    assert rows["ita_only"]["ratio_to_ita"] == 1.0 == rows["ita_only"]["flop_ratio_to_ita"]
    assert rows["place_dense"]["flop_ratio_to_ita"] == pytest.approx(
        rows["place_dense"]["gflop_per_step"] / rows["ita_only"]["gflop_per_step"])
    assert rows["place_dense"]["gflop_per_step"] > rows["ita_only"]["gflop_per_step"]  # PLACE adds work
    profile = report["profile"]
    assert profile["preset"] == "tiny" and profile["sorted_by"] == "self_cpu_ms"
    for name in ("place_dense", "ita_only"):
        times = [row["self_cpu_ms"] for row in profile[name]]
        assert 0 < len(times) <= train_step.PROFILE_ROWS and times == sorted(times, reverse=True)
    assert any(row["name"] == "aten::mm" for row in profile["place_dense"])
    extra = [row["extra_ms"] for row in profile["extra"]]
    assert extra == sorted(extra, reverse=True) and extra[0] > 0


def test_mfu_is_reported_against_every_measured_peak():
    variants = train_step.build_variants("tiny", torch.device("cpu"), batch_size=1, length=8, names=("ita_only",))
    train_step.time_variants(variants, 1, torch.device("cpu"))
    (row,) = train_step.summarise("tiny", variants, {"fp32": 1e11, "bf16": 4e11}, "bf16", batch=1)
    assert row["mfu"] == row["mfu_bf16_peak"]
    assert row["mfu_fp32_peak"] == pytest.approx(4 * row["mfu_bf16_peak"])


# -- data_loading ----------------------------------------------------------------------------------------------
def test_data_loading_quick_measures_worker_and_step(tmp_path):
    output = tmp_path / "data_loading.json"
    report = data_loading.main(["--quick", "--output", str(output)])
    assert _read(output)["rows"] == report["rows"]
    collator = report["collator"]
    assert collator["images_per_s"] > 0 and collator["batches"] == 2 and 0 < collator["max_report_tokens"] <= 128
    (row,) = report["rows"]
    assert row["preset"] == "tiny" and row["step_source"] == "measured" and row["step_samples_per_s"] > 0
    assert row["worker_to_step_ratio"] == pytest.approx(collator["images_per_s"] / row["step_samples_per_s"])
    assert row["workers_needed"] == math.ceil(row["step_samples_per_s"] / collator["images_per_s"])
    assert report["goal"]["met"] == (row["worker_to_step_ratio"] >= 2)


def test_data_loading_reads_step_rates_from_a_results_file(tmp_path):
    rows = [{"preset": "tiny", "variant": "ita_only", "batch": 32, "samples_per_s": 1.0},
            {"preset": "tiny", "variant": "place_dense", "batch": 32, "samples_per_s": 1e5}]
    results = tmp_path / "train_step.json"
    results.write_text(json.dumps({"dtype": "fp32", "rows": rows}))
    report = data_loading.main(["--quick", "--step-results", str(results), "--output", str(tmp_path / "d.json")])
    (row,) = report["rows"]
    assert row["step_samples_per_s"] == 1e5 and row["step_source"] == str(results)
    assert row["workers_needed"] == math.ceil(1e5 / report["collator"]["images_per_s"]) > 1
    assert report["goal"]["met"] is False
    with pytest.raises(FileNotFoundError, match=r"missing\.json"):
        data_loading.steps_from_file(tmp_path / "missing.json", ["tiny"])
    with pytest.raises(ValueError, match="base"):
        data_loading.steps_from_file(results, ["tiny", "base"])


# -- input_pipeline --------------------------------------------------------------------------------------------
def test_input_pipeline_quick_measures_every_path_and_the_gpu_demand(tmp_path):
    rows = [{"preset": "base", "variant": "place_dense", "batch": 256, "samples_per_s": 1000.0}]
    steps = tmp_path / "benchmarks" / "results" / "train_step_gpu.json"
    steps.parent.mkdir(parents=True)
    steps.write_text(json.dumps({"machine": "NVIDIA H200", "dtype": "bf16", "rows": rows}))
    output = tmp_path / "input.json"
    report = input_pipeline.main(["--quick", "--gpu-steps", str(steps), "--output", str(output)])
    assert _read(output)["rows"] == report["rows"]
    rates = {row["path"]: row for row in report["rows"]}
    assert list(rates) == ["full_jpeg", "draft_jpeg", "cache_jpeg", "cache_png", "cache_jpeg_half"]
    for row in rates.values():
        assert row["images"] == 8 and row["images_per_s_per_core"] == pytest.approx(8 / row["cpu_s"])
    assert rates["full_jpeg"]["mean_abs_grey_levels"] == 0 and rates["cache_jpeg"]["mean_abs_grey_levels"] < 3
    gpu_side = report["gpu"]
    assert gpu_side["samples_per_s"] == 1000.0 and gpu_side["source"] == "benchmarks/results/train_step_gpu.json"
    assert gpu_side["cores_needed"]["cache_jpeg"] == math.ceil(1000.0 / rates["cache_jpeg"]["images_per_s_per_core"])
    assert report["goal"]["met"] == (rates["cache_jpeg"]["images_per_s_per_core"] >= 95)


def test_paper_schedule_gpu_hours():
    schedule = input_pipeline.paper_schedule_hours(1000.0)
    assert schedule["steps"] == 217_000 // 144 * 50 == 75_300 and schedule["samples"] == 75_300 * 144
    assert schedule["gpu_hours"] == pytest.approx(75_300 * 144 / 1000.0 / 3600)


# -- memory ----------------------------------------------------------------------------------------------------
def test_memory_quick_measures_each_configuration_in_a_fresh_process(tmp_path):
    output = tmp_path / "memory.json"
    report = memory.main(["--quick", "--dtypes", "fp32", "bf16", "--threads", "1", "--output", str(output)])
    assert _read(output)["rows"] == report["rows"]
    assert report["preset"] == "tiny" and report["batch"] == 2
    configurations = [(row["dtype"], row["checkpointing"]) for row in report["rows"]]
    assert configurations == [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]
    pids = {row["pid"] for row in report["rows"]}
    assert len(pids) == 4 and os.getpid() not in pids
    for row in report["rows"]:
        assert row["peak_mb"] >= row["baseline_mb"] > 100  # torch alone is > 100 MB resident
        assert row["step_mb"] == pytest.approx(row["peak_mb"] - row["baseline_mb"]) and row["step_mb"] > 0
    assert set(report["checkpointing_saves"]) == {"fp32", "bf16"}
    assert report["goal"]["met"] == (report["checkpointing_saves"]["fp32"]["step_memory"] >= 0.4)


def test_optimizer_state_is_materialised_without_changing_weights():
    model = PlaceModel(PlaceConfig(**micro_config()))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    memory.materialise_optimizer_state(model, optimizer)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert all("exp_avg_sq" in optimizer.state[p] for p in model.parameters())
    assert all(p.grad is None for p in model.parameters()) and optimizer.param_groups[0]["lr"] == 1e-3


# -- inference -------------------------------------------------------------------------------------------------
def test_inference_quick(tmp_path):
    output = tmp_path / "inference.json"
    report = inference.main(["--quick", "--output", str(output)])
    assert _read(output)["goals"] == report["goals"]
    (embedding,) = report["embedding"]
    assert embedding["images_per_s"] > 0 and embedding["embedding_dim"] == report["retrieval"]["dim"] == 128
    rows = report["retrieval"]["rows"]
    exact = [row for row in rows if row["method"] == "exact"]
    assert [row["gallery_size"] for row in exact] == [10**3, 10**4]
    for row in exact:
        assert row["planted_top1_accuracy"] == 1.0 and row["batched_ms_per_query"] > 0 and row["single_query_ms"] > 0
    approximate = [row for row in rows if row["method"] == "faiss"]
    if report["faiss"]["available"]:
        assert approximate and all(0.0 <= row["recall_at_10"] <= 1.0 for row in approximate)
    else:  # a plain `pip install -e ".[test]"` has no faiss: the report says why instead of failing
        assert not approximate and "faiss-cpu" in report["faiss"]["reason"]
        assert report["goals"]["faiss_met"] is None


def test_faiss_unavailable_is_reported(monkeypatch):
    real_import = importlib.import_module

    def no_faiss(name, *args):
        if name == "faiss":
            raise ImportError("No module named 'faiss'")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_faiss)
    module, reason = inference.load_faiss()
    assert module is None and "pip install faiss-cpu" in reason


def test_exact_search_finds_planted_neighbours_in_chunks(monkeypatch):
    gallery = inference.random_gallery(500, 16, seed=0, clusters=None)
    assert torch.allclose(gallery.norm(dim=1), torch.ones(500))
    queries, targets = inference.planted_queries(gallery, 40, seed=0)
    monkeypatch.setattr(inference, "SCORE_BLOCK", 500 * 7)  # 7 queries per chunk: 6 chunks
    scores, indices = inference.exact_search(queries, gallery, k=5)
    assert torch.equal(indices[:, 0], targets)
    reference = torch.topk(queries @ gallery.T, 5, dim=1)
    assert torch.equal(indices, reference.indices) and torch.allclose(scores, reference.values)


def test_recall_at_k_counts_shared_neighbours():
    found = torch.tensor([[1, 2, 3], [7, 8, 9]])
    exact = torch.tensor([[3, 2, 4], [7, 8, 9]])
    assert inference.recall_at_k(found, exact) == pytest.approx((2 / 3 + 1) / 2)


# -- gpu (dry mode on CPU) -------------------------------------------------------------------------------------
def test_gpu_script_dry_run_of_every_phase(tmp_path):
    output = tmp_path / "gpu.json"
    report = gpu.main(["--device", "cpu", "--tiny", "--output", str(output), "--work-dir", str(tmp_path / "work"),
                       "--phases", *gpu.DEFAULT_PHASES, "batch_search",
                       "--command", 'probe=test -f "$PLACE_GPU_MODEL/config.json" && echo found', "--command", "fails=exit 3"])
    assert _read(output)["status"] == report["status"] == "complete" and report["preset"] == "tiny"
    assert set(report["matmul_peak_flops"]) == {"fp32", "bf16"} and report["spec_bf16_peak_flops"] is None
    assert report["attention"]["text"] == "sdpa" and report["attention"]["vision_fused_sdpa"] is True
    steps = report["eager_steps"]
    assert steps["status"] == "ok" and [row["objective"] for row in steps["rows"]] == ["ita_only", "place_dense"]
    ita, place = steps["rows"]
    assert steps["place_to_ita_ratio"] == pytest.approx(place["step_s"] / ita["step_s"])
    assert place["gflop_per_step"] > ita["gflop_per_step"] > 0 and place["mfu_bf16"] > 0 and "mfu_spec_bf16" not in place
    assert steps["goal"]["met"] == (steps["place_to_ita_ratio"] <= 1.10) and steps["flop_ratio"] > 1
    extra = [row["extra_ms"] for row in steps["extra_time_by_operator"]]
    assert extra and extra == sorted(extra, reverse=True)
    assert report["compiled_steps"]["status"].startswith("skipped: compile off")
    train = report["train"]
    assert train["status"] == "ok", train["output_tail"]
    assert "accelerate.commands.launch" in train["command"] and "base_mimic.yaml" in train["command"]
    assert train["steps"] == 3 and train["curve"]["first_train_loss"] > 0 and len(train["curve"]["train_log"]) == 3
    assert train["curve"]["loss_fell"] == (train["curve"]["last_train_loss"] < train["curve"]["first_train_loss"])
    assert train["saved"] == {**train["saved"], "loads": True, "class": "PlaceModel", "text_layers": 1}
    probe, fails = report["commands"]
    assert probe["status"] == "ok" and probe["output_tail"].strip() == "found" and probe["seconds"] >= 0
    assert fails["status"] == "failed" and fails["returncode"] == 3
    assert report["batch_search"]["largest_batch"] == 2


def test_spec_sheet_peaks_by_card_name(monkeypatch):
    cuda = torch.device("cuda")
    for name, peak in [("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H200", 989e12), ("NVIDIA H100 PCIe", 756e12),
                       ("NVIDIA GeForce GTX 1080", None)]:
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device, name=name: name)
        assert gpu.spec_bf16_peak(cuda)[0] == peak
    assert gpu.spec_bf16_peak(torch.device("cpu")) == (None, None)


def test_a_command_past_its_time_is_killed_with_its_children():
    start = time.monotonic()
    result = gpu_phases.run_timed(["bash", "-c", "sleep 30 & sleep 30; echo never"], timeout_s=1)
    assert result["status"] == "timed out" and time.monotonic() - start < 10 and "never" not in result["output_tail"]


class _RunnerThatFitsTwo(gpu.StepRunner):
    """A step runner whose steps run out of memory above batch 2 (no model)."""

    def __init__(self) -> None:
        self.device = torch.device("cpu")
        self.optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)

    def step(self, batch_size, dtype="bf16", compiled=False, attention="sdpa"):
        def run() -> None:
            if batch_size > 2:
                raise torch.cuda.OutOfMemoryError(f"CUDA out of memory at batch {batch_size}.\nmore")

        return run

    def flops_per_step(self, batch_size: int) -> int:
        return 10**9 * batch_size


def test_largest_batch_search_and_variants_back_off_on_out_of_memory():
    runner = _RunnerThatFitsTwo()
    args = argparse.Namespace(start_batch=1, max_batch=64, steps=2, warmup=0)
    search = gpu.largest_batch(runner, args, deadline=float("inf"))
    assert search["largest_batch"] == 2 and search["stopped_by"] == "out of memory"
    assert [trial["fits"] for trial in search["trials"]] == [True, True, False]
    assert search["trials"][-1]["error"] == "CUDA out of memory at batch 4."
    row = gpu.measure_variant(runner, gpu.VARIANTS[0], 8, args, {"bf16": 1e12}, deadline=float("inf"))
    assert row["status"] == "ok" and row["batch"] == 2 and row["oom_batches"] == [8, 4]
    assert len(row["times_s"]) == 2 and row["mfu_bf16_peak"] > 0


# -- decoding --------------------------------------------------------------------------------------------------
def test_decoding_quick_compares_cached_uncached_and_another_checkout(tmp_path):
    """This checkout stands in for the old one (imported again under another package name)."""
    output = tmp_path / "decoding.json"
    checkout = Path(decoding.__file__).resolve().parents[1]
    report = decoding.main(["--quick", "--old-checkout", str(checkout), "--output", str(output)])
    assert _read(output) == json.loads(json.dumps(report))
    rows = report["rows"]
    assert [row["decoder"] for row in rows[:3]] == ["new, use_cache=False", "new, use_cache=True",
                                                    "old (hand-written, no cache)"]
    assert [(row["setting"], row["batch"], row["beams"]) for row in rows[::3]] == list(decoding.SETTINGS)
    for row in rows:
        assert row["tokens"] == row["batch"] * 8 and row["tokens_per_s"] == pytest.approx(row["tokens"] / row["seconds"])
        assert row["same_tokens"] is (True if row["decoder"].startswith("new") else None)
    assert [row["speedup_vs_uncached"] for row in rows[::3]] == [1.0] * len(decoding.SETTINGS)
    parameters = report["decoder_parameters"]
    assert parameters["new"] == parameters["old"] > 0 and report["old_checkout"] == str(checkout)
