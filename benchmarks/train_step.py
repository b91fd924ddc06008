"""Training-step cost of PLACE vs ITA-only and every ablation, measured in ONE run (same towers, same batch).

    python benchmarks/train_step.py                       # tiny and base, batch 8, CPU
    python benchmarks/train_step.py --presets tiny --quick
    python benchmarks/train_step.py --device cuda --batch-size 64 --dtype bf16
    python benchmarks/train_step.py --presets base --profile   # + where PLACE's extra time goes, op by op

Variants run interleaved round by round, so machine noise hits them alike; the table gives the median step
time, its ratio to ITA-only, the step's FLOPs (torch.utils.flop_counter) and the achieved fraction of the
matmul peaks measured in the same run (MFU; against the fp32 peak and, with --dtype bf16/fp16, that dtype's peak
too). `--profile` adds torch.profiler tables of full PLACE and ITA-only on the first preset and the operators
that account for PLACE's extra time. Writes benchmarks/results/train_step.json.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make the repo root importable

from benchmarks.common import (
    autocast_dtype,
    machine_info,
    matmul_peak,
    median,
    print_table,
    results_path,
    sync,
    timed,
    write_report,
)
from modeling_place import PlaceConfig, PlaceModel
from modeling_place.training.config import OBJECTIVE_VARIANTS

VARIANTS = OBJECTIVE_VARIANTS
FULL_PLACE = "place_dense"  # the trainer's default objective (PlaceConfig defaults: every weight 1, dense CE)
DEFAULTS = {"lambda_ita": 1.0, "lambda_pcma": 1.0, "lambda_ce": 1.0, "ce_mode": "dense"}
RESULTS = results_path("train_step")
PROFILE_ROWS = 15

Step = Callable[[], None]


def synthetic_batch(config: PlaceConfig, batch: int, length: int,
                    device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """A batch shaped like PlaceProcessor's output: K sentences of equal length, a few duplicate hashes; made
    on `device` (large GPU batches are not generated on the CPU and copied)."""
    k = config.max_sentences
    size = config.image_size
    sentence_ids = torch.full((batch, length), -1, dtype=torch.long, device=device)
    sentence_ids[:, 1:-1] = torch.arange(length - 2, device=device) * k // (length - 2)
    hashes = torch.arange(batch * k, device=device).view(batch, k) + 1
    hashes[:, -2:] = 7  # a "No pneumothorax."-like sentence shared by every report
    return {
        "pixel_values": torch.randn(batch, 3, size, size, device=device),
        "input_ids": torch.randint(5, config.text_config.vocab_size, (batch, length), device=device),
        "attention_mask": torch.ones(batch, length, dtype=torch.long, device=device),
        "sentence_ids": sentence_ids,
        "sentence_hashes": hashes,
    }


def make_step(model: PlaceModel, overrides: dict, batch: dict, optimizer: torch.optim.Optimizer,
              dtype: torch.dtype | None) -> Step:
    """One full training step of a variant: its loss weights / CE mode, forward, backward, AdamW update."""

    def step() -> None:
        for key, value in {**DEFAULTS, **overrides}.items():  # the model reads these at forward time
            setattr(model.config, key, value)
        with torch.autocast(batch["pixel_values"].device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(**batch, return_loss=True).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def count_flops(step: Step) -> int:
    """FLOPs of one call of `step` (runs it once)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def build_model(preset: str, device: torch.device, gradient_checkpointing: bool = False) -> PlaceModel:
    """A seeded PLACE model of `preset` in training mode with every module any variant uses."""
    torch.manual_seed(0)
    config = PlaceConfig.from_preset(preset, ce_mode="masked")  # masked mode also builds the mask token
    model = PlaceModel(config).to(device).train()
    if gradient_checkpointing:
        model.activation_checkpointing_enable()
    return model


def build_variants(preset: str, device: torch.device, batch_size: int, length: int = 128, dtype: str = "fp32",
                   gradient_checkpointing: bool = False, names: Sequence[str] = tuple(VARIANTS)) -> dict[str, dict]:
    """The step of each named variant, all sharing ONE model (same towers, same batch, same optimizer): a variant
    only changes the loss weights and CE mode, so ratios compare the objectives and nothing else, in 1/5 of the
    memory. Each entry is {"step": callable, "times": []}."""
    model = build_model(preset, device, gradient_checkpointing)
    batch = synthetic_batch(model.config, batch_size, length, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    return {name: {"step": make_step(model, VARIANTS[name], batch, optimizer, autocast_dtype(dtype)), "times": []}
            for name in names}


def time_variants(variants: dict[str, dict], rounds: int, device: torch.device) -> None:
    """Append `rounds` step times to each variant, interleaved round by round, after one warm-up step each."""
    for entry in variants.values():  # warm-up (allocator, oneDNN/cuBLAS kernel selection)
        entry["step"]()
    for _ in range(rounds):
        for entry in variants.values():
            entry["times"].append(timed(entry["step"], device))


def step_samples_per_s(preset: str, device: torch.device, batch_size: int, dtype: str = "fp32", rounds: int = 3,
                       length: int = 128, variant: str = FULL_PLACE) -> dict[str, Any]:
    """Samples/s one training step of `variant` consumes (median of `rounds` steps after a warm-up)."""
    variants = build_variants(preset, device, batch_size, length, dtype, names=(variant,))
    time_variants(variants, rounds, device)
    step_s = median(variants[variant]["times"])
    return {"preset": preset, "variant": variant, "batch": batch_size, "dtype": dtype, "step_s": step_s,
            "samples_per_s": batch_size / step_s}


def summarise(preset: str, variants: dict[str, dict], peaks: dict[str, float], dtype: str, batch: int) -> list[dict]:
    """One row per variant: median step time, ratio to ITA-only, FLOPs and MFU against every measured peak."""
    base = median(variants["ita_only"]["times"])
    base_flops = count_flops(variants["ita_only"]["step"])
    rows = []
    for name, entry in variants.items():
        step_s = median(entry["times"])
        flops = count_flops(entry["step"])
        row = {
            "preset": preset, "variant": name, "batch": batch, "step_s": step_s, "ratio_to_ita": step_s / base,
            # the time ratio's floor at equal efficiency: what the extra objectives add in arithmetic
            "flop_ratio_to_ita": flops / base_flops,
            "samples_per_s": batch / step_s, "gflop_per_step": flops / 1e9, "mfu": flops / step_s / peaks[dtype],
            "times_s": entry["times"],
        }
        row.update({f"mfu_{peak_name}_peak": flops / step_s / peak for peak_name, peak in peaks.items()})
        rows.append(row)
    return rows


def profile_steps(step: Step, device: torch.device, steps: int = 2) -> list[dict[str, Any]]:
    """torch.profiler operator averages of `steps` calls of `step` (already warm), per step, by self time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        for _ in range(steps):
            step()
        sync(device)
    sort_key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(profiler.key_averages(), key=lambda event: getattr(event, sort_key), reverse=True)
    return [{"name": event.key, "calls_per_step": event.count / steps,
             "self_cpu_ms": event.self_cpu_time_total / 1e3 / steps, "cpu_total_ms": event.cpu_time_total / 1e3 / steps,
             "self_device_ms": event.self_device_time_total / 1e3 / steps} for event in events]


def extra_time_by_operator(place: list[dict], ita: list[dict], key: str) -> list[dict[str, Any]]:
    """Operators ranked by how much more self time per step full PLACE spends in them than ITA-only."""
    ita_ms = {row["name"]: row[key] for row in ita}
    rows = [{"name": row["name"], "place_ms": row[key], "ita_ms": ita_ms.get(row["name"], 0.0),
             "extra_ms": row[key] - ita_ms.get(row["name"], 0.0)} for row in place]
    return sorted(rows, key=lambda row: row["extra_ms"], reverse=True)[:PROFILE_ROWS]


def profile_place_vs_ita(preset: str, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """Profiles of full PLACE and ITA-only on `preset` and the operators behind PLACE's extra time."""
    variants = build_variants(preset, device, args.batch_size, args.length, args.dtype, args.gradient_checkpointing,
                              names=("ita_only", FULL_PLACE))
    time_variants(variants, 0, device)  # warm-up only
    tables = {name: profile_steps(entry["step"], device) for name, entry in variants.items()}
    key = "self_device_ms" if device.type == "cuda" else "self_cpu_ms"
    extra = extra_time_by_operator(tables[FULL_PLACE], tables["ita_only"], key)
    top = {name: rows[:PROFILE_ROWS] for name, rows in tables.items()}
    return {"preset": preset, "sorted_by": key, "extra": extra, **top}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "base"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--length", type=int, default=128, help="report tokens")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--profile", action="store_true",
                        help="also profile full PLACE vs ITA-only on the first preset (torch.profiler, top ops)")
    parser.add_argument("--quick", action="store_true", help="2 rounds (smoke test)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def raise_peaks(peaks: dict[str, float], device: torch.device) -> None:
    """Raise each dtype's peak to a fresh measurement if higher: clock and load drift within a run (one peak
    taken at start-up read 137 GFLOP/s against 177 later), so MFU uses the best peak the run has seen."""
    for name in peaks:
        peaks[name] = max(peaks[name], matmul_peak(device, autocast_dtype(name) or torch.float32))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    rounds = 2 if args.quick else args.rounds
    peaks = dict.fromkeys(["fp32"] + ([args.dtype] if args.dtype != "fp32" else []), 0.0)
    timed = []
    for preset in args.presets:
        raise_peaks(peaks, device)
        variants = build_variants(preset, device, args.batch_size, args.length, args.dtype, args.gradient_checkpointing)
        time_variants(variants, rounds, device)
        timed.append((preset, variants))
    raise_peaks(peaks, device)
    rows = [row for preset, variants in timed for row in summarise(preset, variants, peaks, args.dtype, args.batch_size)]
    report = {**machine_info(device), "dtype": args.dtype, "matmul_peak_flops": peaks, "rows": rows}
    if args.profile:
        report["profile"] = profile_place_vs_ita(args.presets[0], device, args)
    _print_report(report)
    write_report(report, args.output)
    return report


def _print_report(report: dict) -> None:
    print(f"machine: {report['machine']}; dtype {report['dtype']}; matmul peak "
          + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in report["matmul_peak_flops"].items()))
    mfu_columns = [(f"mfu_{name}_peak", f"MFU {name}", ".1%") for name in report["matmul_peak_flops"]]
    print_table(report["rows"], [("preset", "preset", ""), ("variant", "variant", ""), ("step_s", "step s", ".3f"),
                                 ("ratio_to_ita", "x ITA", ".3f"), ("flop_ratio_to_ita", "FLOP x ITA", ".3f"),
                                 ("samples_per_s", "samples/s", ".1f"),
                                 ("gflop_per_step", "GFLOP", ".1f"), *mfu_columns])
    if "profile" in report:
        _print_profile(report["profile"])


def _print_profile(profile: dict) -> None:
    key = profile["sorted_by"]
    for name in (FULL_PLACE, "ita_only"):
        columns = [("name", "operator", ""), (key, f"{key} /step", ".2f"), ("calls_per_step", "calls", ".0f")]
        print_table(profile[name], columns, title=f"\n{profile['preset']} {name}: top operators")
    columns = [("name", "operator", ""), ("place_ms", "PLACE ms", ".2f"), ("ita_ms", "ITA ms", ".2f"),
               ("extra_ms", "extra ms", ".2f")]
    print_table(profile["extra"], columns, title="\nwhere PLACE's extra time goes (per step)")


if __name__ == "__main__":
    main()
