"""Does one data worker keep up with training? The full collator's images/s vs what a PLACE step consumes.

    python benchmarks/data_loading.py                    # cached 20,000-pair split; tiny (batch 32) and base (batch 8)
    python benchmarks/data_loading.py --quick            # 64 pairs, tiny only, small step batch
    python benchmarks/data_loading.py --step-results benchmarks/results/train_step.json   # steps from a file

The data side is exactly what a DataLoader worker of the trainer runs: `ImageReportPairs` rows of the synthetic
pretraining split (PNG decode) and `PlaceCollator` (train-time augmentation, the image processor, report
sentences, one tokenizer call, sentence ids and hashes) with a real `PlaceProcessor` built as the trainer builds
it (WordPiece vocabulary trained on the split's reports). It runs with ONE torch thread, as a worker does.
The step side is benchmarks/train_step.py's full PLACE step (trainer defaults: dense CE, every weight 1) at the
trainer's mixed precision, with the report length the collator actually produced. Goal: one worker delivers
>= 2x what the `tiny` step consumes. Writes benchmarks/results/data_loading.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make the repo root importable

from benchmarks.common import machine_info, print_table, results_path, write_report
from benchmarks.train_step import FULL_PLACE, step_samples_per_s
from modeling_place import PlaceConfig
from modeling_place.training.config import TrainConfig
from modeling_place.training.data import ImageReportPairs, PairSplits, PlaceCollator, build_processor, build_tokenizer
from modeling_place.training.trainer import resolve_mixed_precision

RESULTS = results_path("data_loading")
STEP_BATCH = {"tiny": 32, "base": 8}  # tiny: the trainer's default batch; base: what a CPU run can afford
GOAL_RATIO = 2.0


def build_collator(table: Any, preset: str, vocab_size: int, max_length: int) -> tuple[ImageReportPairs, PlaceCollator]:
    """The trainer's dataset and train-time collator over `table`, with a processor built as the trainer does."""
    config = TrainConfig(vocab_size=vocab_size, max_length=max_length)
    tokenizer = build_tokenizer(config, PairSplits(table, None, "image", "report"))
    model_config = PlaceConfig.from_preset(preset)
    processor = build_processor(tokenizer, model_config.image_size, model_config.max_sentences, max_length)
    return ImageReportPairs(table, "image", "report", processor), PlaceCollator(processor, train=True)


def collate_rates(dataset: ImageReportPairs, collator: PlaceCollator, batch_size: int, batches: int) -> dict[str, Any]:
    """Images/s of fetching + decoding rows and of collating them, on one torch thread, after one warm-up batch."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a DataLoader worker runs single-threaded
    try:
        fetch_s, collate_s, lengths = 0.0, 0.0, []
        for number in range(batches + 1):
            indices = [(number * batch_size + offset) % len(dataset) for offset in range(batch_size)]
            start = time.perf_counter()
            samples = [dataset[index] for index in indices]
            fetched = time.perf_counter()
            batch = collator(samples)
            if number:  # batch 0 warms caches (tokenizer, augmentation kernels)
                fetch_s += fetched - start
                collate_s += time.perf_counter() - fetched
                lengths.append(batch["input_ids"].shape[1])
    finally:
        torch.set_num_threads(threads)
    images = batches * batch_size
    return {"batch": batch_size, "batches": batches, "fetch_decode_s": fetch_s, "collate_s": collate_s,
            "images_per_s": images / (fetch_s + collate_s), "fetch_decode_images_per_s": images / fetch_s,
            "collate_images_per_s": images / collate_s, "max_report_tokens": max(lengths)}


def steps_from_file(path: Path, presets: list[str]) -> dict[str, dict[str, Any]]:
    """Full-PLACE step rates per preset from a train_step.json results file."""
    if not path.is_file():
        raise FileNotFoundError(f"--step-results {path} does not exist (run benchmarks/train_step.py first)")
    results = json.loads(path.read_text())
    rows = {row["preset"]: row for row in results["rows"] if row["variant"] == FULL_PLACE}
    missing = [preset for preset in presets if preset not in rows]
    if missing:
        raise ValueError(f"--step-results {path} has no {FULL_PLACE} row for preset(s) {missing}")
    return {preset: {**rows[preset], "dtype": results["dtype"], "source": str(path)} for preset in presets}


def measure_steps(presets: list[str], args: argparse.Namespace, length: int) -> dict[str, dict[str, Any]]:
    """Full-PLACE step rates per preset, measured now."""
    device = torch.device(args.device)
    rates = {}
    for preset in presets:
        batch = args.step_batch_size or STEP_BATCH[preset]
        rates[preset] = step_samples_per_s(preset, device, batch, args.dtype, args.rounds, length)
        rates[preset]["source"] = "measured"
    return rates


def compare(data: dict[str, Any], steps: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per preset: the step's consumption, one worker's delivery, their ratio and the workers needed."""
    rows = []
    for preset, step in steps.items():
        ratio = data["images_per_s"] / step["samples_per_s"]
        rows.append({"preset": preset, "step_batch": step["batch"], "step_dtype": step.get("dtype"),
                     "step_samples_per_s": step["samples_per_s"], "worker_images_per_s": data["images_per_s"],
                     "worker_to_step_ratio": ratio, "workers_needed": math.ceil(1 / ratio),
                     "step_source": step["source"]})
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "base"], choices=sorted(STEP_BATCH))
    parser.add_argument("--synthetic-size", type=int, default=None,
                        help="pretraining pairs (default: the benchmark's 20,000, cached on disk)")
    parser.add_argument("--batch-size", type=int, default=32, help="collator batch")
    parser.add_argument("--batches", type=int, default=8, help="timed collator batches")
    parser.add_argument("--vocab-size", type=int, default=TrainConfig.vocab_size)
    parser.add_argument("--max-length", type=int, default=TrainConfig.max_length)
    parser.add_argument("--step-batch-size", type=int, default=None, help=f"step batch (default {STEP_BATCH})")
    parser.add_argument("--step-results", type=Path, default=None,
                        help="read step rates from a train_step.json instead of measuring them")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default=None,
                        help="step autocast (default: the trainer's mixed_precision=auto choice here)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="64 pairs, 2 batches of 8, tiny step at batch 4")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.presets, args.synthetic_size, args.batch_size, args.batches = ["tiny"], 64, 8, 2
        args.step_batch_size, args.rounds = args.step_batch_size or 4, 1
    if args.dtype is None:
        args.dtype = "bf16" if resolve_mixed_precision("auto") == "bf16" else "fp32"
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from modeling_place.data.synthetic_cxr import build_split

    table = build_split("pretrain", size=args.synthetic_size)["train"]
    dataset, collator = build_collator(table, args.presets[0], args.vocab_size, args.max_length)
    data = collate_rates(dataset, collator, args.batch_size, args.batches)
    if args.step_results is not None:
        steps = steps_from_file(args.step_results, args.presets)
    else:
        steps = measure_steps(args.presets, args, data["max_report_tokens"])
    rows = compare(data, steps)
    tiny = next((row for row in rows if row["preset"] == "tiny"), None)
    report = {**machine_info(torch.device(args.device)), "pairs": len(table), "collator": data, "rows": rows,
              "goal": {"worker_to_tiny_step_ratio": GOAL_RATIO,
                       "met": None if tiny is None else tiny["worker_to_step_ratio"] >= GOAL_RATIO}}
    _print_report(report)
    write_report(report, args.output)
    return report


def _print_report(report: dict[str, Any]) -> None:
    data = report["collator"]
    print(f"{report['machine']}: one worker (1 thread) {data['images_per_s']:.1f} images/s "
          f"(fetch+decode {data['fetch_decode_images_per_s']:.1f}/s, collate {data['collate_images_per_s']:.1f}/s; "
          f"batch {data['batch']}, reports padded to {data['max_report_tokens']} tokens)")
    print_table(report["rows"], [("preset", "preset", ""), ("step_batch", "batch", "d"), ("step_dtype", "dtype", ""),
                                 ("step_samples_per_s", "step samples/s", ".1f"),
                                 ("worker_images_per_s", "1 worker images/s", ".1f"),
                                 ("worker_to_step_ratio", "worker/step", ".2f"), ("workers_needed", "workers", "d"),
                                 ("step_source", "step from", "")])
    print(f"goal: one worker >= {GOAL_RATIO:g}x the tiny step: {report['goal']['met']}")


if __name__ == "__main__":
    main()
