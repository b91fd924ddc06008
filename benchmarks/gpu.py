"""One GPU session, one prepared script, a hard time budget (< 8 min): what paper scale needs measured.

    python benchmarks/gpu.py                                   # GPU: the default phases below, --budget-s 450
    python benchmarks/gpu.py --command "head=python examples/finetune_classification.py --model $PLACE_GPU_MODEL"
    python benchmarks/gpu.py --device cpu --tiny               # dry run of every phase: tiny preset, a few steps

Phases (--phases), each written to the JSON as soon as it is done (a run cut short still leaves its results):
1. `peaks`: bf16 / fp32 matmul peaks measured at 8192^2, and the card's dense bf16 peak from its spec sheet
   (H100 SXM and H200: 989 TFLOP/s), which MFU is reported against.
2. `steps`: PLACE (full, dense CE) vs ITA-only, `base` preset, bf16 autocast, eager, batch 256 (the earlier
   H200 session's shape), interleaved rounds: step time, ratio (goal <= 1.10), FLOPs, MFU, and a profile of the
   operators that take PLACE's extra time (torch.profiler, device time).
3. `train`: `accelerate launch examples/pretrain.py examples/configs/base_mimic.yaml` on the synthetic benchmark at
   224 px (from scratch: the machine reaches no Hub), every GPU, bf16, --train-steps steps; the loss curve (does
   it fall?) and whether the saved folder loads with AutoModel.
4. `commands`: each `--command NAME=SHELL` (repeatable) in order, timed; $PLACE_GPU_MODEL is phase 3's folder.
5. `compiled`: phase 2 again with `torch.compile` (last: a compilation cannot be interrupted and takes minutes,
   so it gets what the budget has left; the watchdog ends the script at the deadline with what exists).
The earlier session's phases stay available: `batch_search` (largest batch, doubling until out of memory) and
`variants` (bf16 SDPA / math attention / fp32 / compiled at that batch). Writes benchmarks/results/gpu_scale.json.
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
    timed,
    write_report,
)
from benchmarks.gpu_phases import CHILDREN, command_phase, train_phase
from benchmarks.train_step import (
    FULL_PLACE,
    VARIANTS as OBJECTIVES,
    build_model,
    count_flops,
    extra_time_by_operator,
    make_step,
    profile_steps,
    synthetic_batch,
)

RESULTS = results_path("gpu_scale")
# The same head fine-tune as on CPU (a 20-step tiny encoder, then a full fine-tune): its test AUROC on the GPU (bf16)
# should match the CPU run's within noise (0.5786, best epoch 2, fp32; README "Fine-tuning heads"). Its JSON lands in
# benchmarks/results/gpu_head_check/classification.json.
HEAD_CHECK = (
    "head_check=export PLACE_DATA_CACHE=runs/gpu_head_check/data && "
    "accelerate launch --num_processes 1 --num_machines 1 --dynamo_backend no examples/pretrain.py --max_steps=20 "
    "--synthetic_size=256 --validation_pairs=0 --batch_size=16 --vocab_size=1000 --num_workers=0 "
    "--progress_bar=false --run_dir=runs/gpu_head_check/run --output_dir=runs/gpu_head_check/place && "
    "accelerate launch --num_processes 1 --num_machines 1 --dynamo_backend no examples/finetune_classification.py "
    "--model runs/gpu_head_check/place --full_finetune --fractions 1.0 --epochs 3 --size 200 --image_size 128 "
    "--batch_size 16 --output_dir benchmarks/results/gpu_head_check"
)
PHASES = ("peaks", "steps", "train", "commands", "compiled", "batch_search", "variants")
DEFAULT_PHASES = ("peaks", "steps", "train", "commands", "compiled")
STEP_GOAL = 1.10  # PLACE / ITA-only step time on a GPU (issue 27)
# Dense (no sparsity) bf16 tensor-core peaks from the vendors' spec sheets, by a substring of the device name; the
# first match wins, so the PCIe / NVL boards come before the plain H100 (SXM).
SPEC_BF16_DENSE = (("H200", 989e12), ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12),
                   ("A100", 312e12), ("L40S", 362e12))
# Bounded variants first; compilation (minutes, not interruptible) last, with what the budget has left.
VARIANTS = [
    {"name": "bf16_eager_sdpa", "dtype": "bf16", "compile": False, "attention": "sdpa", "estimate_s": 30},
    {"name": "bf16_eager_math_attention", "dtype": "bf16", "compile": False, "attention": "math", "estimate_s": 30},
    {"name": "fp32_eager_sdpa", "dtype": "fp32", "compile": False, "attention": "sdpa", "estimate_s": 60},
    {"name": "bf16_compiled_sdpa", "dtype": "bf16", "compile": True, "attention": "sdpa", "estimate_s": 180},
]
GPU_DEFAULTS = {"preset": "base", "start_batch": 32, "max_batch": 8192, "length": 128, "steps": 10, "warmup": 1,
                "budget_s": 450.0, "peak_size": 8192, "step_batch": 256, "rounds": 5, "train_steps": 400,
                "train_batch": 144, "train_pairs": 8000, "train_validation": 256, "train_workers": 8,
                "train_budget_s": 200.0}
DRY_DEFAULTS = {"preset": "tiny", "start_batch": 1, "max_batch": 2, "length": 16, "steps": 1, "warmup": 0,
                "budget_s": 300.0, "peak_size": 256, "step_batch": 2, "rounds": 1, "train_steps": 3, "train_batch": 4,
                "train_pairs": 32, "train_validation": 8, "train_workers": 0, "train_budget_s": 240.0}


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
        CHILDREN.kill()  # a training run or command still going would hold the GPU after this process ends
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
        self.flops: dict[tuple[int, str], int] = {}

    def step(self, batch_size: int, dtype: str = "bf16", compiled: bool = False, attention: str = "sdpa",
             objective: str = FULL_PLACE) -> Callable[[], None]:
        """A training step of `objective` (benchmarks/train_step.py's variants; default full PLACE, as the
        trainer) at `batch_size`, in the chosen precision, eager or compiled, with SDPA or math attention."""
        if compiled and self.compiled is None:
            self.compiled = torch.compile(self.model)
        model = self.compiled if compiled else self.model
        batch = synthetic_batch(self.model.config, batch_size, self.length, self.device)
        step = make_step(model, OBJECTIVES[objective], batch, self.optimizer, autocast_dtype(dtype))
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

    def flops_per_step(self, batch_size: int, objective: str = FULL_PLACE) -> int:
        """FLOPs of the eager bf16 step at `batch_size` (counted once; compile and kernels do not change them)."""
        if (batch_size, objective) not in self.flops:
            self.flops[batch_size, objective] = count_flops(self.step(batch_size, objective=objective))
        return self.flops[batch_size, objective]


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


def spec_bf16_peak(device: torch.device) -> tuple[float | None, str | None]:
    """The card's dense bf16 peak from its spec sheet (SPEC_BF16_DENSE) and the entry that matched."""
    if device.type != "cuda":
        return None, None
    name = torch.cuda.get_device_name(device)
    return next(((peak, key) for key, peak in SPEC_BF16_DENSE if key in name), (None, None))


def step_ratio(session: "Session", compiled: bool) -> dict[str, Any]:
    """PLACE vs ITA-only at --step-batch in bf16 (eager or compiled): interleaved rounds after one warm-up step
    each (the compilation, when compiled), median step time, ratio, FLOPs and MFU against every peak."""
    runner, args = session.runner, session.args
    steps = {name: runner.step(args.step_batch, "bf16", compiled, objective=name) for name in ("ita_only", FULL_PLACE)}
    first_s = {}
    for name, step in steps.items():
        start = time.perf_counter()
        _, error = runner.attempt(step)
        if error is not None:
            return {"compiled": compiled, "batch": args.step_batch, "status": f"out of memory: {error}"}
        first_s[name] = time.perf_counter() - start
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            times[name].append(timed(step, runner.device))
        if time.monotonic() > session.deadline:
            break
    rows = [_step_row(session, name, times[name], first_s[name]) for name in steps]
    ratio = rows[1]["step_s"] / rows[0]["step_s"]
    result = {"compiled": compiled, "batch": args.step_batch, "status": "ok", "rows": rows,
              "place_to_ita_ratio": ratio, "flop_ratio": rows[1]["gflop_per_step"] / rows[0]["gflop_per_step"],
              "goal": {"ratio": STEP_GOAL, "met": ratio <= STEP_GOAL}}
    if not compiled:  # where PLACE's extra time goes, operator by operator: what to fix next
        tables = {name: profile_steps(step, runner.device) for name, step in steps.items()}
        key = "self_device_ms" if runner.device.type == "cuda" else "self_cpu_ms"
        result["extra_time_by_operator"] = extra_time_by_operator(tables[FULL_PLACE], tables["ita_only"], key)
    runner.release()
    return result


def _step_row(session: "Session", objective: str, times: list[float], first_s: float) -> dict[str, Any]:
    step_s = median(times)
    flops = session.runner.flops_per_step(session.args.step_batch, objective)
    peaks = {**session.peaks["measured"], "spec_bf16": session.peaks["spec_bf16"]}
    return {"objective": objective, "step_s": step_s, "samples_per_s": session.args.step_batch / step_s,
            "first_step_s": first_s, "times_s": times, "gflop_per_step": flops / 1e9,
            "peak_memory_gb": session.runner.peak_memory_gb(),
            **{f"mfu_{name}": flops / step_s / peak for name, peak in peaks.items() if peak}}


class Session:
    """What the phases share: arguments, device, recorder, deadline, matmul peaks and the step runner."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.device = args, torch.device(args.device)
        self.deadline = time.monotonic() + args.budget_s
        header = {**machine_info(self.device), "preset": args.preset, "length": args.length,
                  "budget_s": args.budget_s, "phases": list(args.phases), "phase": None}
        self.recorder = Recorder(args.output, header)
        self.peaks: dict[str, Any] = {"measured": {}, "spec_bf16": None}
        self.runner: StepRunner | None = None

    def step_runner(self) -> StepRunner:
        if self.runner is None:
            self.runner = StepRunner(self.args.preset, self.device, self.args.length)
        return self.runner

    def left(self) -> float:
        return self.deadline - time.monotonic()


def peaks_phase(session: Session) -> None:
    measured = {"fp32": matmul_peak(session.device, torch.float32, session.args.peak_size),
                "bf16": matmul_peak(session.device, torch.bfloat16, session.args.peak_size)}
    spec, card = spec_bf16_peak(session.device)
    session.peaks = {"measured": measured, "spec_bf16": spec, "spec_card": card}
    session.recorder.set(matmul_peak_flops=measured, spec_bf16_peak_flops=spec, spec_card=card,
                         attention=attention_kernels(session.step_runner()))


def steps_phase(session: Session, compiled: bool = False) -> None:
    key = "compiled_steps" if compiled else "eager_steps"
    if compiled and not session.args.compile:
        session.recorder.set(**{key: {"status": "skipped: compile off (--compile on to run it)"}})
        return
    session.step_runner()
    try:
        result = step_ratio(session, compiled)
    except Exception as error:  # a failing compile must not lose the rest of the report
        result = {"compiled": compiled, "status": f"failed: {type(error).__name__}: {str(error)[:300]}"}
    session.recorder.set(**{key: result})


def train_and_commands(session: Session, phase: str) -> None:
    args, folder = session.args, Path(session.args.work_dir)
    if phase == "train":
        timeout = min(args.train_budget_s, session.left())
        session.recorder.set(train=train_phase(args, folder / "train", timeout))
    else:
        session.recorder.set(commands=command_phase(args.command, folder / "train" / "model", session.deadline))


def legacy_phase(session: Session, phase: str) -> None:
    """The earlier session's largest-batch search and precision / attention / compile variants."""
    runner = session.step_runner()
    if phase == "batch_search":
        session.recorder.set(batch_search=largest_batch(runner, session.args, session.deadline))
        return
    batch = (session.recorder.report.get("batch_search") or {}).get("largest_batch") or session.args.step_batch
    run_variants(runner, session.recorder, batch, session.args, session.peaks["measured"], session.deadline)


def run_phase(session: Session, phase: str) -> None:
    session.recorder.set(phase=phase)
    if phase == "peaks":
        peaks_phase(session)
    elif phase in ("steps", "compiled"):
        steps_phase(session, compiled=phase == "compiled")
    elif phase in ("train", "commands"):
        train_and_commands(session, phase)
    else:
        legacy_phase(session, phase)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="dry-run sizes (tiny preset, a few steps); --device cpu "
                        "implies them")
    for name, value in GPU_DEFAULTS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=None,
                            help=f"default {value} on a GPU, {DRY_DEFAULTS[name]} with --tiny / --device cpu")
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(DEFAULT_PHASES))
    parser.add_argument("--command", action="append", default=[], metavar="NAME=SHELL",
                        help="extra shell command, timed (repeatable); $PLACE_GPU_MODEL is the trained folder")
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                        help="run the torch.compile phases (auto: on a GPU only)")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/gpu_scale"), help="training run and model")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.tiny = args.tiny or not args.device.startswith("cuda")
    defaults = DRY_DEFAULTS if args.tiny else GPU_DEFAULTS
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if not args.command and not args.tiny:  # issue 24's GPU head check, unless the caller brings its own commands
        args.command = [HEAD_CHECK]
    bad = [item for item in args.command if "=" not in item or not item.partition("=")[0]]
    if bad:
        parser.error(f"--command expects NAME=SHELL COMMAND, got {bad[0]!r}")
    args.compile = args.compile == "on" or (args.compile == "auto" and args.device.startswith("cuda"))
    args.estimate_scale = 0.0 if args.tiny else 1.0  # dry mode: tiny, never skip a variant for time
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    session = Session(parse_args(argv))
    watchdog = start_watchdog(session.recorder, session.deadline)
    start = time.monotonic()
    for phase in session.args.phases:
        run_phase(session, phase)
    watchdog.cancel()
    session.recorder.set(status="complete", phase=None, elapsed_s=time.monotonic() - start)
    _print_report(session.recorder.report)
    return session.recorder.report


def _print_report(report: dict[str, Any]) -> None:
    peaks = ", ".join(f"{name} {value / 1e12:.1f}" for name, value in report.get("matmul_peak_flops", {}).items())
    spec = report.get("spec_bf16_peak_flops")
    print(f"{report['machine']}: {report['preset']}; measured matmul peaks (TFLOP/s) {peaks}; spec-sheet dense bf16 "
          + (f"{spec / 1e12:.0f} TFLOP/s ({report['spec_card']})" if spec else "none (not a known GPU)"))
    for key in ("eager_steps", "compiled_steps"):
        result = report.get(key)
        if result and result.get("status") == "ok":
            print_table(result["rows"], [("objective", "objective", ""), ("step_s", "step s", ".3f"),
                                         ("samples_per_s", "samples/s", ".1f"), ("gflop_per_step", "GFLOP", ".0f"),
                                         ("mfu_spec_bf16", "MFU spec", ".1%"), ("mfu_bf16", "MFU measured", ".1%")],
                        title=f"{key} (batch {result['batch']}): PLACE / ITA-only x{result['place_to_ita_ratio']:.3f}"
                              f" (goal <= {STEP_GOAL}; FLOPs x{result['flop_ratio']:.3f})")
        elif result:
            print(f"{key}: {result['status']}")
    _print_train(report.get("train"))
    for row in report.get("commands", []):
        print(f"command {row['name']}: {row['status']} in {row.get('seconds', 0):.1f} s")
    if "batch_search" in report:
        print(f"largest batch {report['batch_search']['largest_batch']}")
    if report.get("rows"):
        print_table(report["rows"], [("name", "variant", ""), ("batch", "batch", "d"), ("step_s", "step s", ".3f"),
                                     ("samples_per_s", "samples/s", ".1f"), ("status", "status", "")])


def _print_train(train: dict[str, Any] | None) -> None:
    if not train:
        return
    if train["status"] != "ok":
        print(f"train: {train['status']}:\n{train['output_tail'][-800:]}")
        return
    curve, saved = train["curve"], train["saved"]
    print(f"train: {train['steps']} steps in {train['train_seconds']:.0f} s ({train['samples_per_s']:.0f} samples/s); "
          f"loss {curve['first_train_loss']:.3f} -> {curve['last_train_loss']:.3f} (fell: {curve['loss_fell']}); "
          f"saved folder loads with AutoModel: {saved['loads']} ({saved['class']}, {saved['parameters_m']:.1f} M)")


if __name__ == "__main__":
    main()
