"""Can the input pipeline feed a GPU at paper scale? Images/s per core for full-size radiograph JPEGs decoded fully,
in JPEG draft mode, and from place-prepare's resized image cache, and the cores the measured GPU step needs.

    python benchmarks/input_pipeline.py               # 16 synthesised 3,000 x 2,500 JPEGs, 64 rows, 224 px training
    python benchmarks/input_pipeline.py --quick       # 4 small JPEGs, 8 rows (smoke test)

Full-size JPEGs are synthesised in a temporary folder: the real NIH radiographs of --sources (512 px) and
synthetic ones, upscaled to --height x --width with detector-like noise (sigma --noise grey levels, so the
files carry the entropy of a real scan), saved at JPEG quality 95 as MIMIC-CXR-JPG is. Each path runs exactly
what a DataLoader worker of the trainer runs, on ONE thread: `ImageReportPairs` rows (file read + decode) and
`PlaceCollator` (training augmentation to 224 px, report sentences, tokenisation), batch 32:
- `full_jpeg`: every pixel decoded (`jpeg_draft=False`);
- `draft_jpeg`: PIL draft mode at >= 2x the processor's 256 px resize (libjpeg's scaled IDCT: 1/4 here);
- `cache_jpeg` / `cache_png`: `place-prepare --image-cache SIZE` (8-bit grey, longer side SIZE px, in Arrow);
  `cache_jpeg_half`: a JPEG cache at SIZE / 2 (256 px: the processor's own resize size, so no resize is left).
Rates are images per CPU-second of the worker process (time.process_time): per core, whatever else runs.
Beside the rate, each path's error against the full decode: the eval-mode `pixel_values` difference in grey
levels (0-255). The GPU side: PLACE's measured step rate (benchmarks/results/train_step_h200.json, `base`,
bf16) and the cores that rate needs per path; then the GPU-hours of MGCA's schedule on MIMIC-CXR at that rate.
Goal: the cache path sustains >= 95 images/s per core. Writes benchmarks/results/input_pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make the repo root importable

from benchmarks.common import machine_info, print_table, results_path, write_report
from modeling_place.data.prepare import ImageCache, prepare
from modeling_place.training.data import ImageReportPairs, PlaceCollator, build_processor
from modeling_place.processing.tokenization_place import train_wordpiece_tokenizer

RESULTS = results_path("input_pipeline")
GPU_STEPS = results_path("train_step_h200")
REAL_SOURCES = Path("/work/shared/data/real_cxr")
GOAL_IMAGES_PER_CORE = 95.0
# MGCA's schedule (github.com/HKU-MedAI/MGCA, mgca_module.py): 50 epochs, batch 72 on each of 2 GPUs, over the
# ~217k frontal MIMIC-CXR training pairs of its master table (early stopping may end it sooner).
PAPER_SCHEDULE = {"pairs": 217_000, "epochs": 50, "global_batch": 144}


def source_images(count: int, sources: Path | None) -> list[np.ndarray]:
    """`count` 8-bit grey radiographs: the real PNGs of `sources` first, then synthetic ones."""
    from modeling_place.data.synthetic_cxr import generate_case

    real = sorted(sources.glob("*.png")) if sources is not None and sources.is_dir() else []
    images = [np.asarray(PIL.Image.open(path).convert("L")) for path in real[:count]]
    images += [generate_case(seed, image_size=512)["image"] for seed in range(count - len(images))]
    return images


def synthesise_jpegs(folder: Path, count: int, size: tuple[int, int], noise: float,
                     sources: Path | None = REAL_SOURCES, seed: int = 0) -> list[Path]:
    """Full-size grey JPEGs (`size` = height, width) at quality 95: upscaled radiographs plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    height, width = size
    paths = []
    for number, image in enumerate(source_images(count, sources)):
        large = np.asarray(PIL.Image.fromarray(image).resize((width, height), PIL.Image.Resampling.BICUBIC), np.float32)
        noisy = np.clip(large + rng.normal(0.0, noise, large.shape), 0, 255).astype(np.uint8)
        path = folder / f"cxr_{number:03d}.jpg"
        PIL.Image.fromarray(noisy, mode="L").save(path, quality=95)
        paths.append(path)
    return paths


def write_table(folder: Path, paths: list[Path], rows: int) -> tuple[Path, list[str]]:
    """A generic image-report CSV (`place-prepare csv`) of `rows` rows cycling over `paths`, synthetic reports."""
    import pandas as pd

    from modeling_place.data.synthetic_cxr import generate_case

    reports = [generate_case(seed, image_size=32)["report"] for seed in range(rows)]
    names = [paths[row % len(paths)].name for row in range(rows)]
    table = folder / "pairs.csv"
    pd.DataFrame({"image_path": names, "text": reports, "split": "train"}).to_csv(table, index=False)
    return table, reports


def build_tables(folder: Path, table: Path, cache_size: int) -> dict[str, Any]:
    """The raw table (place-prepare without a cache) and one cached table per cache format."""
    from datasets import load_from_disk

    tables, seconds = {}, {}
    caches = {"raw": None, "cache_jpeg": ImageCache(cache_size, "jpeg"), "cache_png": ImageCache(cache_size, "png"),
              "cache_jpeg_half": ImageCache(cache_size // 2, "jpeg")}
    for name, cache in caches.items():
        start = time.perf_counter()
        prepare("csv", table, folder / name, ["arrow"], {}, overwrite=True, image_cache=cache)
        seconds[name] = time.perf_counter() - start
        tables[name] = load_from_disk(str(folder / name / "dataset"))["train"]
    return {"tables": tables, "prepare_s": seconds}


def pipeline_paths(tables: dict[str, Any], processor: Any) -> dict[str, ImageReportPairs]:
    """The four worker paths of the module docstring."""
    raw = tables["raw"]
    return {"full_jpeg": ImageReportPairs(raw, "image_path", "text", processor, jpeg_draft=False),
            "draft_jpeg": ImageReportPairs(raw, "image_path", "text", processor, jpeg_draft=True),
            "cache_jpeg": ImageReportPairs(tables["cache_jpeg"], "image", "text", processor),
            "cache_png": ImageReportPairs(tables["cache_png"], "image", "text", processor),
            "cache_jpeg_half": ImageReportPairs(tables["cache_jpeg_half"], "image", "text", processor)}


def worker_rate(dataset: ImageReportPairs, collator: PlaceCollator, batch_size: int, repeats: int) -> dict[str, Any]:
    """Images per CPU-second of one worker (fetch + decode + collate) over every row `repeats` times, after a
    warm-up batch. CPU time of the process, not wall time: on a machine shared with other jobs the wall clock
    counts their time too, and the CPU seconds are what a dedicated core would need."""
    rows = len(dataset)
    collator([dataset[index] for index in range(min(batch_size, rows))])  # warm-up
    start, cpu_start, images = time.perf_counter(), time.process_time(), 0
    for _ in range(repeats):
        for first in range(0, rows - batch_size + 1, batch_size):
            collator([dataset[index] for index in range(first, first + batch_size)])
            images += batch_size
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return {"images": images, "wall_s": seconds, "cpu_s": cpu_seconds, "images_per_s_per_core": images / cpu_seconds,
            "images_per_wall_s": images / seconds}


def grey_levels_error(dataset: ImageReportPairs, reference: ImageReportPairs, processor: Any,
                      rows: int) -> dict[str, float]:
    """Eval-mode pixel_values of `dataset` against `reference`'s on the first `rows` rows, in grey levels."""
    def pixels(source: ImageReportPairs) -> torch.Tensor:
        images = [source[index]["image"] for index in range(rows)]
        values = processor.image_processor(images, return_tensors="pt")["pixel_values"][:, 0]
        std, mean = processor.image_processor.image_std[0], processor.image_processor.image_mean[0]
        return (values * std + mean) * 255  # back to grey levels

    difference = (pixels(dataset) - pixels(reference)).abs()
    return {"mean_abs_grey_levels": difference.mean().item(), "p99_abs_grey_levels": difference.quantile(0.99).item()}


def gpu_demand(rates: dict[str, float], steps_file: Path) -> dict[str, Any] | None:
    """PLACE's measured GPU step rate, the cores each path needs to feed it, and the paper schedule's GPU-hours."""
    if not steps_file.is_file():
        return None
    report = json.loads(steps_file.read_text())
    row = next(r for r in report["rows"] if r["variant"] == "place_dense")
    samples_per_s = row["samples_per_s"]
    schedule = paper_schedule_hours(samples_per_s)
    return {"source": str(steps_file.relative_to(steps_file.parents[2])), "machine": report["machine"],
            "dtype": report["dtype"], "preset": row["preset"], "batch": row["batch"], "samples_per_s": samples_per_s,
            "cores_needed": {name: math.ceil(samples_per_s / rate) for name, rate in rates.items()},
            "paper_schedule": schedule}


def paper_schedule_hours(samples_per_s: float, schedule: dict[str, int] = PAPER_SCHEDULE) -> dict[str, Any]:
    """Steps, samples and GPU-hours of `schedule` (drop-last epochs) at `samples_per_s` per GPU."""
    steps = schedule["pairs"] // schedule["global_batch"] * schedule["epochs"]
    samples = steps * schedule["global_batch"]
    return {**schedule, "steps": steps, "samples": samples, "gpu_hours": samples / samples_per_s / 3600}


def measure(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Synthesise, prepare, and time every path on one thread; errors against the full decode."""
    paths = synthesise_jpegs(folder, args.images, (args.height, args.width), args.noise, args.sources)
    table, reports = write_table(folder, paths, args.rows)
    built = build_tables(folder, table, args.cache_size)
    tokenizer = train_wordpiece_tokenizer(reports, vocab_size=512, model_max_length=128)
    processor = build_processor(tokenizer, 224, 16, 128)
    collator = PlaceCollator(processor, train=True)
    datasets = pipeline_paths(built["tables"], processor)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a DataLoader worker runs single-threaded
    try:
        rows = [{"path": name, **worker_rate(dataset, collator, args.batch_size, args.repeats),
                 **grey_levels_error(dataset, datasets["full_jpeg"], processor, min(8, args.rows))}
                for name, dataset in datasets.items()]
    finally:
        torch.set_num_threads(threads)
    sizes = {"full_jpeg_mb": sum(path.stat().st_size for path in paths) / len(paths) / 2**20}
    sizes.update({f"{name}_kb": _mean_cell_kb(built["tables"][name]) for name in built["tables"] if name != "raw"})
    return {"rows": rows, "prepare_s": built["prepare_s"], "file_sizes": sizes}


def _mean_cell_kb(table: Any) -> float:
    column = table.data.column("image").combine_chunks().field("bytes")
    return sum(len(cell.as_py()) for cell in column) / len(column) / 1024


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16, help="distinct full-size JPEGs")
    parser.add_argument("--rows", type=int, default=64, help="table rows (cycling over the images)")
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--width", type=int, default=2500)
    parser.add_argument("--noise", type=float, default=3.0,
                        help="std of the added noise, grey levels (3: ~2 MB per file, as MIMIC-CXR-JPG's ~1.5 MB)")
    parser.add_argument("--cache-size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="passes over the rows per path")
    parser.add_argument("--sources", type=Path, default=REAL_SOURCES, help="real radiograph PNGs to upscale")
    parser.add_argument("--gpu-steps", type=Path, default=GPU_STEPS, help="train_step.py results of a GPU run")
    parser.add_argument("--quick", action="store_true", help="4 JPEGs of 600 x 500, 8 rows, batch 4, one pass")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.rows, args.height, args.width, args.batch_size, args.repeats = 4, 8, 600, 500, 4, 1
        args.cache_size = min(args.cache_size, 256)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="place-input-") as folder:
        measured = measure(args, Path(folder))
    rates = {row["path"]: row["images_per_s_per_core"] for row in measured["rows"]}
    cache_rate = rates["cache_jpeg"]  # the cache place-prepare's docs suggest (512 px JPEG)
    report = {**machine_info(torch.device("cpu")), "image_size": [args.height, args.width], "rows": measured["rows"],
              "cache_size": args.cache_size, "prepare_s": measured["prepare_s"], "file_sizes": measured["file_sizes"],
              "speedup_vs_full": {name: rate / rates["full_jpeg"] for name, rate in rates.items()},
              "gpu": gpu_demand(rates, args.gpu_steps),
              "goal": {"cache_images_per_s_per_core": GOAL_IMAGES_PER_CORE, "met": cache_rate >= GOAL_IMAGES_PER_CORE}}
    _print_report(report)
    write_report(report, args.output)
    return report


def _print_report(report: dict[str, Any]) -> None:
    height, width = report["image_size"]
    print(f"{report['machine']}: one worker, one thread; {height} x {width} JPEGs "
          f"({report['file_sizes']['full_jpeg_mb']:.2f} MB), cache {report['cache_size']} px")
    rows = [{**row, "speedup": report["speedup_vs_full"][row["path"]],
             "cores": (report["gpu"] or {}).get("cores_needed", {}).get(row["path"])} for row in report["rows"]]
    print_table(rows, [("path", "path", ""), ("images_per_s_per_core", "images/s/core", ".1f"),
                       ("images_per_wall_s", "images/wall s", ".1f"),
                       ("speedup", "x full", ".2f"), ("mean_abs_grey_levels", "mean err", ".2f"),
                       ("p99_abs_grey_levels", "p99 err", ".2f"), ("cores", "cores for GPU", "d")])
    gpu = report["gpu"]
    if gpu:
        schedule = gpu["paper_schedule"]
        print(f"GPU: {gpu['machine']} {gpu['preset']} {gpu['dtype']} batch {gpu['batch']}: "
              f"{gpu['samples_per_s']:.0f} samples/s ({gpu['source']})")
        print(f"paper schedule: {schedule['pairs']:,} pairs x {schedule['epochs']} epochs at batch "
              f"{schedule['global_batch']} = {schedule['steps']:,} steps, {schedule['samples']:,} samples: "
              f"{schedule['gpu_hours']:.2f} GPU-hours at that rate")
    print(f"goal: {report['cache_size']} px JPEG cache >= {GOAL_IMAGES_PER_CORE:g} images/s per core: "
          f"{report['goal']['met']}")


if __name__ == "__main__":
    main()
