"""One GPU session, one script, a hard time budget: PLACE training steps with bf16 autocast and SDPA, the largest
batch that fits, torch.compile off and on, MFU against the bf16 matmul peak measured in the same run.

    python benchmarks/gpu.py                       # GPU machine: base preset, done in < 8 min (--budget-s 400)
    python benchmarks/gpu.py --device cpu          # dry mode: tiny preset, batch 1..2, no compile (for tests)

Phases, each written to the JSON as soon as it is done (a run cut short still leaves its results):
1. matmul peaks (fp32, bf16) at 8192^2; the attention kernels in use (BERT `_attn_implementation`, timm
   `fused_attn`: both SDPA).
2. the largest batch: one full step (bf16 autocast, eager) at batch 32, 64, ... until
   `torch.cuda.OutOfMemoryError` (caught, cache emptied) or --max-batch.
3. variants at that batch (halved on OOM): bf16 eager SDPA; bf16 with SDPA restricted to the math kernel (what
   the fused kernels save); fp32 eager; bf16 torch.compile. Each: median step time, samples/s, peak memory, MFU
   (FLOPs of the step from torch.utils.flop_counter over the step time, against each measured matmul peak).
A variant starts only if the time left covers its estimate; a watchdog writes what exists and exits when the
budget runs out (so a slow compile cannot overrun it). Writes benchmarks/results/gpu.json.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make the repo root importable

from benchmarks.common import (
    autocast_dtype,
    machine_info,
    matmul_peak,
    median,
    print_table,
    repeat_times,
    results_path,
    write_report,
)
from benchmarks.train_step import build_model, count_flops, make_step, synthetic_batch

RESULTS = results_path("gpu")
# Bounded variants first; compilation (minutes, not interruptible) last, with what the budget has left.
VARIANTS = [
    {"name": "bf16_eager_sdpa", "dtype": "bf16", "compile": False, "attention": "sdpa", "estimate_s": 30},
    {"name": "bf16_eager_math_attention", "dtype": "bf16", "compile": False, "attention": "math", "estimate_s": 30},
    {"name": "fp32_eager_sdpa", "dtype": "fp32", "compile": False, "attention": "sdpa", "estimate_s": 60},
    {"name": "bf16_compiled_sdpa", "dtype": "bf16", "compile": True, "attention": "sdpa", "estimate_s": 180},
]
GPU_DEFAULTS = {"preset": "base", "start_batch": 32, "max_batch": 8192, "length": 128, "steps": 10, "warmup": 1,
                "budget_s": 400.0, "peak_size": 8192}
DRY_DEFAULTS = {"preset": "tiny", "start_batch": 1, "max_batch": 2, "length": 16, "steps": 1, "warmup": 0,
                "budget_s": 300.0, "peak_size": 256}


class Recorder:
    """The results dictionary, written to disk after every change; thread-safe for the watchdog."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path, self.report, self.lock = path, {**header, "status": "running", "rows": []}, threading.Lock()

    def set(self, **values: Any) -> None:
        with self.lock:
            self.report.update(values)
            write_report(self.report, self.path)

    def add_row(self, row: dict[str, Any]) -> None:
        with self.lock:
            self.report["rows"].append(row)
            write_report(self.report, self.path)


def start_watchdog(recorder: Recorder, deadline: float) -> threading.Timer:
    """At `deadline` (time.monotonic), mark the report as cut short, write it and end the process."""

    def stop() -> None:
        recorder.set(status=f"stopped by the time budget during {recorder.report.get('phase')}")
        os._exit(0)

    timer = threading.Timer(max(0.0, deadline - time.monotonic()), stop)
    timer.daemon = True
    timer.start()
    return timer


class StepRunner:
    """One model and AdamW on the device; builds variant steps at any batch and survives out-of-memory errors."""

    def __init__(self, preset: str, device: torch.device, length: int) -> None:
        self.device, self.length = device, length
        self.model = build_model(preset, device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-5)
        self.compiled: torch.nn.Module | None = None
        self.flops: dict[int, int] = {}

    def step(self, batch_size: int, dtype: str = "bf16", compiled: bool = False,
             attention: str = "sdpa") -> Callable[[], None]:
        """A full PLACE step (trainer defaults) of the chosen variant at `batch_size`."""
        if compiled and self.compiled is None:
            self.compiled = torch.compile(self.model)
        model = self.compiled if compiled else self.model
        batch = synthetic_batch(self.model.config, batch_size, self.length, self.device)
        step = make_step(model, {}, batch, self.optimizer, autocast_dtype(dtype))
        if attention == "sdpa":
            return step
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def math_attention_step() -> None:
            with sdpa_kernel(SDPBackend.MATH):
                step()

        return math_attention_step

    def attempt(self, function: Callable[[], Any]) -> tuple[Any, str | None]:
        """`function()`'s result, or None and the error's first line after an out-of-memory error."""
        try:
            return function(), None
        except torch.cuda.OutOfMemoryError as error:
            message = str(error).splitlines()[0]
        # outside the except block, so the traceback and the activations it holds are already released
        self.optimizer.zero_grad(set_to_none=True)
        self.release()
        return None, message

    def release(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory_gb(self) -> float | None:
        return torch.cuda.max_memory_allocated(self.device) / 2**30 if self.device.type == "cuda" else None

    def flops_per_step(self, batch_size: int) -> int:
        """FLOPs of the eager bf16 step at `batch_size` (counted once; compile and kernels do not change them)."""
        if batch_size not in self.flops:
            self.flops[batch_size] = count_flops(self.step(batch_size))
        return self.flops[batch_size]


def largest_batch(runner: StepRunner, args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    """Double the batch from --start-batch until a step runs out of memory, passes --max-batch or time runs out."""
    trials, batch, stopped_by = [], args.start_batch, "max_batch"
    while batch <= args.max_batch:
        if time.monotonic() > deadline:
            stopped_by = "time budget"
            break
        start = time.perf_counter()
        _, error = runner.attempt(lambda size=batch: runner.step(size)())
        trials.append({"batch": batch, "fits": error is None, "seconds": time.perf_counter() - start,
                       "peak_memory_gb": runner.peak_memory_gb(), "error": error})
        runner.release()
        if error is not None:
            stopped_by = "out of memory"
            break
        batch *= 2
    fitting = [trial["batch"] for trial in trials if trial["fits"]]
    return {"largest_batch": max(fitting, default=None), "stopped_by": stopped_by, "trials": trials}


def measure_variant(runner: StepRunner, variant: dict[str, Any], batch: int, args: argparse.Namespace,
                    peaks: dict[str, float], deadline: float) -> dict[str, Any]:
    """A variant's step timings at the largest batch that fits it (halving from `batch` on OOM)."""
    row = {key: variant[key] for key in ("name", "dtype", "compile", "attention")}
    runner.release()  # peak memory counts from here
    while batch >= 1:
        step = runner.step(batch, variant["dtype"], variant["compile"], variant["attention"])
        start = time.perf_counter()
        _, error = runner.attempt(step)  # the first call: compilation, autotuning, allocator growth
        if error is None:
            break
        row.setdefault("oom_batches", []).append(batch)
        batch //= 2
    if batch < 1:
        return {**row, "status": "out of memory at batch 1"}
    first_s = time.perf_counter() - start
    times = repeat_times(step, runner.device, args.steps, args.warmup, deadline)
    step_s, peak_memory = median(times), runner.peak_memory_gb()
    del step  # its batch; counting FLOPs builds another
    flops, _ = runner.attempt(lambda: runner.flops_per_step(batch))  # None (no MFU) if counting runs out of memory
    row.update(status="ok", batch=batch, first_step_s=first_s, step_s=step_s, samples_per_s=batch / step_s,
               times_s=times, peak_memory_gb=peak_memory, gflop_per_step=flops and flops / 1e9,
               **{f"mfu_{name}_peak": flops and flops / step_s / peak for name, peak in peaks.items()})
    runner.release()
    return row


def attention_kernels(runner: StepRunner) -> dict[str, Any]:
    """Which attention implementation each tower uses (SDPA expected everywhere)."""
    blocks = runner.model.vision_model.timm_model.blocks
    return {"text": runner.model.text_model.config._attn_implementation,
            "vision_fused_sdpa": all(getattr(block.attn, "fused_attn", False) for block in blocks),
            "place_heads": "torch.nn.functional.scaled_dot_product_attention"}


def run_variants(runner: StepRunner, recorder: Recorder, batch: int, args: argparse.Namespace,
                 peaks: dict[str, float], deadline: float) -> None:
    """Each variant that the remaining time allows, in order of importance."""
    for variant in VARIANTS:
        if variant["compile"] and not args.compile:
            recorder.add_row({"name": variant["name"], "status": "skipped: compile off (--compile on to run it)"})
            continue
        if deadline - time.monotonic() < variant["estimate_s"] * args.estimate_scale:
            recorder.add_row({"name": variant["name"], "status": "skipped: time budget"})
            continue
        recorder.set(phase=variant["name"])
        variant_deadline = min(deadline, time.monotonic() + variant["estimate_s"])
        try:
            row = measure_variant(runner, variant, batch, args, peaks, variant_deadline)
        except Exception as error:  # a failing compile must not lose the other variants
            row = {"name": variant["name"], "status": f"failed: {type(error).__name__}: {str(error)[:300]}"}
            runner.release()
        recorder.add_row(row)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    for name, value in GPU_DEFAULTS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=None,
                            help=f"default {value} on a GPU, {DRY_DEFAULTS[name]} with --device cpu")
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                        help="run the torch.compile variant (auto: on a GPU only)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    defaults = GPU_DEFAULTS if args.device.startswith("cuda") else DRY_DEFAULTS
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.compile = args.compile == "on" or (args.compile == "auto" and args.device.startswith("cuda"))
    args.estimate_scale = 1.0 if args.device.startswith("cuda") else 0.0  # dry mode: tiny, never skip for time
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    deadline = time.monotonic() + args.budget_s
    device = torch.device(args.device)
    recorder = Recorder(args.output, {**machine_info(device), "preset": args.preset, "length": args.length,
                                      "budget_s": args.budget_s, "phase": "matmul peaks"})
    watchdog = start_watchdog(recorder, deadline)
    peaks = {"fp32": matmul_peak(device, torch.float32, args.peak_size),
             "bf16": matmul_peak(device, torch.bfloat16, args.peak_size)}
    runner = StepRunner(args.preset, device, args.length)
    recorder.set(matmul_peak_flops=peaks, attention=attention_kernels(runner), phase="largest batch")
    search = largest_batch(runner, args, deadline)
    recorder.set(batch_search=search)
    if search["largest_batch"] is not None:
        run_variants(runner, recorder, search["largest_batch"], args, peaks, deadline)
    watchdog.cancel()
    recorder.set(status="complete", phase=None, elapsed_s=args.budget_s - (deadline - time.monotonic()))
    _print_report(recorder.report)
    return recorder.report


def _print_report(report: dict[str, Any]) -> None:
    peaks = ", ".join(f"{name} {value / 1e12:.1f} TFLOP/s" for name, value in report["matmul_peak_flops"].items())
    search = report["batch_search"]
    print(f"{report['machine']}: {report['preset']}; matmul peaks {peaks}; attention {report['attention']}")
    print(f"largest batch {search['largest_batch']} (stopped by {search['stopped_by']}; tried "
          + ", ".join(str(trial["batch"]) for trial in search["trials"]) + ")")
    print_table(report["rows"], [("name", "variant", ""), ("batch", "batch", "d"), ("step_s", "step s", ".3f"),
                                 ("samples_per_s", "samples/s", ".1f"), ("first_step_s", "first step s", ".1f"),
                                 ("peak_memory_gb", "peak GB", ".1f"), ("mfu_bf16_peak", "MFU bf16", ".1%"),
                                 ("status", "status", "")])


if __name__ == "__main__":
    main()
