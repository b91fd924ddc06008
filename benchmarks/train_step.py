"""Training-step cost of PLACE vs ITA-only and every ablation, measured in ONE run (same towers, same batch).

    python benchmarks/train_step.py                       # tiny and base, batch 8, CPU
    python benchmarks/train_step.py --presets tiny --quick
    python benchmarks/train_step.py --device cuda --batch-size 64 --dtype bf16

Variants run interleaved round by round, so machine noise hits them alike; the table gives the median step
time, its ratio to ITA-only, the step's FLOPs (torch.utils.flop_counter) and the achieved fraction of the
matmul peak measured in the same run (MFU). Writes benchmarks/results/train_step.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from modeling_place import PlaceConfig, PlaceModel

VARIANTS = {
    "ita_only": {"lambda_pcma": 0.0, "lambda_ce": 0.0},
    "ita_pcma": {"lambda_ce": 0.0},
    "ita_ce": {"lambda_pcma": 0.0},
    "place_dense": {"ce_mode": "dense"},
    "place_masked": {"ce_mode": "masked"},
}
DEFAULTS = {"lambda_ita": 1.0, "lambda_pcma": 1.0, "lambda_ce": 1.0, "ce_mode": "dense"}
RESULTS = Path(__file__).parent / "results" / "train_step.json"


def synthetic_batch(config: PlaceConfig, batch: int, length: int) -> dict[str, torch.Tensor]:
    """A batch shaped like PlaceProcessor's output: K sentences of equal length, a few duplicate hashes."""
    k = config.max_sentences
    size = config.image_size
    sentence_ids = torch.full((batch, length), -1, dtype=torch.long)
    sentence_ids[:, 1:-1] = torch.arange(length - 2) * k // (length - 2)
    hashes = torch.arange(batch * k).view(batch, k) + 1
    hashes[:, -2:] = 7  # a "No pneumothorax."-like sentence shared by every report
    return {
        "pixel_values": torch.randn(batch, 3, size, size),
        "input_ids": torch.randint(5, config.text_config.vocab_size, (batch, length)),
        "attention_mask": torch.ones(batch, length, dtype=torch.long),
        "sentence_ids": sentence_ids,
        "sentence_hashes": hashes,
    }


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Achieved FLOP/s of a square matmul: the peak that MFU is measured against."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_step(model: PlaceModel, overrides: dict, batch: dict, optimizer: torch.optim.Optimizer,
              dtype: torch.dtype | None):
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


def count_flops(step) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def build_variants(preset: str, args: argparse.Namespace, device: torch.device) -> dict[str, dict]:
    """All variants share ONE model (same towers, same batch, same optimizer): a variant only changes the
    loss weights and CE mode, so ratios compare the objectives and nothing else, in 1/5 of the memory."""
    torch.manual_seed(0)
    config = PlaceConfig.from_preset(preset, ce_mode="masked")  # builds every module any variant uses
    model = PlaceModel(config).to(device).train()
    if args.gradient_checkpointing:
        model.activation_checkpointing_enable()
    batch = {k: v.to(device) for k, v in synthetic_batch(config, args.batch_size, args.length).items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    dtype = _dtype(args.dtype)
    return {name: {"step": make_step(model, overrides, batch, optimizer, dtype), "times": []}
            for name, overrides in VARIANTS.items()}


def _dtype(name: str) -> torch.dtype | None:
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def time_variants(variants: dict[str, dict], rounds: int, device: torch.device) -> None:
    for entry in variants.values():  # warm-up (allocator, oneDNN/cuBLAS kernel selection)
        entry["step"]()
    for _ in range(rounds):
        for entry in variants.values():
            _sync(device)
            start = time.perf_counter()
            entry["step"]()
            _sync(device)
            entry["times"].append(time.perf_counter() - start)


def summarise(preset: str, variants: dict[str, dict], peak: float, batch: int) -> list[dict]:
    base = statistics.median(variants["ita_only"]["times"])
    rows = []
    for name, entry in variants.items():
        median = statistics.median(entry["times"])
        flops = count_flops(entry["step"])
        rows.append({
            "preset": preset, "variant": name, "batch": batch, "step_s": median, "ratio_to_ita": median / base,
            "samples_per_s": batch / median, "gflop_per_step": flops / 1e9, "mfu": flops / median / peak,
            "times_s": entry["times"],
        })
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "base"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--length", type=int, default=128, help="report tokens")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--quick", action="store_true", help="2 rounds (smoke test)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    rounds = 2 if args.quick else args.rounds
    peaks = {"fp32": matmul_peak(device, torch.float32)}
    if args.dtype != "fp32":
        peaks[args.dtype] = matmul_peak(device, _dtype(args.dtype))
    rows = []
    for preset in args.presets:
        variants = build_variants(preset, args, device)
        time_variants(variants, rounds, device)
        rows += summarise(preset, variants, peaks[args.dtype], args.batch_size)
    report = {"machine": _machine(device), "threads": torch.get_num_threads(), "dtype": args.dtype,
              "matmul_peak_flops": peaks, "rows": rows}
    _print_table(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    return report


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def _print_table(report: dict) -> None:
    print(f"machine: {report['machine']}; dtype {report['dtype']}; matmul peak "
          + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in report["matmul_peak_flops"].items()))
    print(f"{'preset':<6} {'variant':<13} {'step s':>8} {'x ITA':>7} {'samples/s':>10} {'GFLOP':>8} {'MFU':>6}")
    for row in report["rows"]:
        print(f"{row['preset']:<6} {row['variant']:<13} {row['step_s']:>8.3f} {row['ratio_to_ita']:>7.3f} "
              f"{row['samples_per_s']:>10.1f} {row['gflop_per_step']:>8.1f} {row['mfu']:>6.1%}")


if __name__ == "__main__":
    main()
