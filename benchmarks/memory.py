"""Peak memory of one full PLACE training step, with and without gradient checkpointing, fp32 and bf16 autocast.

    python benchmarks/memory.py                          # base, batch 16, CPU: each configuration in a fresh process
    python benchmarks/memory.py --quick                  # tiny, batch 2, report length 32
    python benchmarks/memory.py --device cuda            # torch.cuda.max_memory_allocated, in this process

CPU: each configuration runs in its own fresh process (a forkserver that has only imported the libraries forks
one child per configuration), so allocator caches and freed-but-resident pages of one cannot inflate another.
The child builds model, batch and AdamW (optimizer state materialised), records its RSS (the baseline), runs one
step and reads its peak RSS (`resource.getrusage` ru_maxrss). `step_mb` = peak - baseline is what the step itself
adds (activations, gradients, autocast weight copies); both absolute figures are reported too. CUDA: the same
step per configuration with `torch.cuda.reset_peak_memory_stats` / `max_memory_allocated`.
Goal: checkpointing cuts the base step's memory (`step_mb`) by >= 40 %. Writes benchmarks/results/memory.json.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make the repo root importable

from benchmarks.common import (
    autocast_dtype,
    machine_info,
    peak_rss_bytes,
    print_table,
    results_path,
    rss_bytes,
    timed,
    write_report,
)
from benchmarks.train_step import build_model, make_step, synthetic_batch
from modeling_place import PlaceModel
from modeling_place.training.trainer import resolve_mixed_precision

RESULTS = results_path("memory")
GOAL_REDUCTION = 0.40
MB = 2**20


def configurations(dtypes: list[str]) -> list[dict[str, Any]]:
    """Every (dtype, checkpointing) pair, checkpointing off first."""
    return [{"dtype": dtype, "checkpointing": checkpointing} for dtype in dtypes for checkpointing in (False, True)]


def materialise_optimizer_state(model: PlaceModel, optimizer: torch.optim.Optimizer) -> None:
    """Allocate AdamW's moment buffers now (a zero-gradient step at lr 0 changes no weight), so the baseline
    holds everything that lives across steps and the step's peak holds only what one step adds."""
    learning_rates = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    for group, lr in zip(optimizer.param_groups, learning_rates, strict=True):
        group["lr"] = lr


def build_training_state(preset: str, batch_size: int, length: int, checkpointing: bool, dtype: str,
                         device: torch.device) -> tuple[PlaceModel, Any]:
    """Model, batch, AdamW with state, and the step closure (trainer defaults: dense CE, every weight 1)."""
    model = build_model(preset, device, checkpointing)
    batch = synthetic_batch(model.config, batch_size, length, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    materialise_optimizer_state(model, optimizer)
    return model, make_step(model, {}, batch, optimizer, autocast_dtype(dtype))


def measure_cpu(preset: str, batch_size: int, length: int, checkpointing: bool, dtype: str,
                threads: int | None = None) -> dict[str, Any]:
    """One configuration's baseline and peak RSS; meant to run in a fresh process (see `run_in_fresh_processes`)."""
    if threads:
        torch.set_num_threads(threads)
    device = torch.device("cpu")
    _, step = build_training_state(preset, batch_size, length, checkpointing, dtype, device)
    gc.collect()
    baseline = rss_bytes()
    seconds = timed(step, device)
    peak = peak_rss_bytes()
    return {"baseline_mb": baseline / MB, "peak_mb": peak / MB, "step_mb": (peak - baseline) / MB, "step_s": seconds,
            "pid": os.getpid()}


def measure_cuda(preset: str, batch_size: int, length: int, checkpointing: bool, dtype: str,
                 device: torch.device) -> dict[str, Any]:
    """One configuration's allocated-memory baseline and step peak on a GPU (in this process)."""
    model, step = build_training_state(preset, batch_size, length, checkpointing, dtype, device)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    baseline = torch.cuda.memory_allocated(device)
    seconds = timed(step, device)
    peak = torch.cuda.max_memory_allocated(device)
    del model, step
    gc.collect()
    torch.cuda.empty_cache()
    return {"baseline_mb": baseline / MB, "peak_mb": peak / MB, "step_mb": (peak - baseline) / MB, "step_s": seconds}


def run_in_fresh_processes(settings: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """`measure_cpu` for each configuration, each in a new process forked from a server that only imported."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["benchmarks.memory"])
    results = []
    with ProcessPoolExecutor(max_workers=1, mp_context=context, max_tasks_per_child=1) as pool:
        for setting in settings:  # one at a time: measurements must not compete for memory or cores
            future = pool.submit(measure_cpu, args.preset, args.batch_size, args.length, threads=args.threads,
                                 **setting)
            results.append(future.result())
    return results


def reductions(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per dtype: the fraction of step memory and of peak memory that checkpointing saves."""
    by_key = {(row["dtype"], row["checkpointing"]): row for row in rows}
    saved = {}
    for dtype in dict.fromkeys(row["dtype"] for row in rows):
        plain, checkpointed = by_key[(dtype, False)], by_key[(dtype, True)]
        saved[dtype] = {"step_memory": 1 - checkpointed["step_mb"] / plain["step_mb"],
                        "peak_memory": 1 - checkpointed["peak_mb"] / plain["peak_mb"]}
    return saved


def default_dtypes(device: torch.device) -> tuple[list[str], str | None]:
    """fp32 and bf16 where bf16 is native; on a CPU without AVX512-BF16/AMX bf16 is emulated ~50x slower
    (a base step would take minutes), so it is left out unless asked for with --dtypes."""
    if device.type == "cuda" or resolve_mixed_precision("auto") == "bf16":
        return ["fp32", "bf16"], None
    return ["fp32"], "bf16 skipped: emulated on this CPU (no AVX512-BF16/AMX); pass --dtypes fp32 bf16 to force"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="base", choices=["tiny", "base"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--length", type=int, default=128, help="report tokens")
    parser.add_argument("--dtypes", nargs="+", choices=["fp32", "bf16"], default=None,
                        help="autocast dtypes (default: fp32, plus bf16 where it is native)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads in each CPU child")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny preset, batch 2, 32 report tokens")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.preset, args.batch_size, args.length = "tiny", 2, 32
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    dtypes, note = (args.dtypes, None) if args.dtypes else default_dtypes(device)
    settings = configurations(dtypes)
    if device.type == "cuda":
        measured = [measure_cuda(args.preset, args.batch_size, args.length, device=device, **s) for s in settings]
        method = "torch.cuda.max_memory_allocated - memory_allocated before the step"
    else:
        measured = run_in_fresh_processes(settings, args)
        method = "fresh process per configuration; ru_maxrss - RSS after model+batch+AdamW state"
    rows = [{**setting, **result} for setting, result in zip(settings, measured, strict=True)]
    saved = reductions(rows)
    report = {**machine_info(device), "preset": args.preset, "batch": args.batch_size, "length": args.length,
              "method": method, "note": note, "rows": rows, "checkpointing_saves": saved,
              "goal": {"step_memory_reduction": GOAL_REDUCTION,
                       "met": saved["fp32"]["step_memory"] >= GOAL_REDUCTION if "fp32" in saved else None}}
    _print_report(report)
    write_report(report, args.output)
    return report


def _print_report(report: dict[str, Any]) -> None:
    print(f"{report['machine']}: {report['preset']} step, batch {report['batch']}, {report['length']} tokens; "
          f"{report['method']}")
    print_table(report["rows"], [("dtype", "dtype", ""), ("checkpointing", "checkpointing", ""),
                                 ("baseline_mb", "baseline MB", ".0f"), ("peak_mb", "peak MB", ".0f"),
                                 ("step_mb", "step MB", ".0f"), ("step_s", "step s", ".2f")])
    for dtype, saved in report["checkpointing_saves"].items():
        print(f"{dtype}: checkpointing saves {saved['step_memory']:.1%} of the step's memory, "
              f"{saved['peak_memory']:.1%} of the peak")
    if report["note"]:
        print(report["note"])
    print(f"goal: checkpointing cuts step memory by >= {GOAL_REDUCTION:.0%}: {report['goal']['met']}")


if __name__ == "__main__":
    main()
