"""Helpers shared by every benchmark script: device sync and timing, matmul peaks, machine description, result
tables and JSON files. One place, so the scripts measure and report alike."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def results_path(name: str) -> Path:
    """`benchmarks/results/<name>.json`: the default output of benchmark `name`."""
    return RESULTS_DIR / f"{name}.json"


def autocast_dtype(name: str) -> torch.dtype | None:
    """The autocast dtype of a `--dtype` choice ("fp32" → None: no autocast)."""
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def sync(device: torch.device) -> None:
    """Wait for queued device work, so wall-clock times cover it (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function: Callable[[], Any], device: torch.device) -> float:
    """Seconds one call of `function` takes, device work included."""
    sync(device)
    start = time.perf_counter()
    function()
    sync(device)
    return time.perf_counter() - start


def repeat_times(function: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1,
                 deadline: float | None = None) -> list[float]:
    """Per-call seconds of `repeats` calls after `warmup` untimed ones; stops early (keeping at least one time)
    once `time.monotonic()` passes `deadline`."""
    for _ in range(warmup):
        function()
    times: list[float] = []
    for _ in range(repeats):
        times.append(timed(function, device))
        if deadline is not None and time.monotonic() > deadline:
            break
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Achieved FLOP/s of a square matmul: the peak that MFU is measured against."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    seconds = min(repeat_times(lambda: a @ b, device, repeats, warmup=3))  # warm: thread pool and clocks up
    return 2 * size**3 / seconds


def machine_description(device: torch.device) -> str:
    """GPU name, or the CPU with the number of threads torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def machine_info(device: torch.device) -> dict[str, Any]:
    """The header every results file starts with."""
    return {"machine": machine_description(device), "threads": torch.get_num_threads(), "device": device.type,
            "torch": torch.__version__, "python": platform.python_version()}


def format_cell(value: Any, spec: str) -> str:
    """`value` formatted by `spec`, or `-` when missing (a skipped or unavailable measurement)."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return format(value, spec)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]],
                title: str | None = None) -> None:
    """Print `rows` as an aligned table; `columns` are (row key, header, format spec) triples."""
    cells = [[format_cell(row.get(key), spec) for key, _, spec in columns] for row in rows]
    widths = [max([len(header)] + [len(line[i]) for line in cells]) for i, (_, header, _) in enumerate(columns)]
    if title:
        print(title)
    left = [not spec for _, _, spec in columns]  # text columns (empty spec) align left, numbers right
    for line in [[header for _, header, _ in columns], *cells]:
        print("  ".join(cell.ljust(width) if is_left else cell.rjust(width)
                        for cell, width, is_left in zip(line, widths, left, strict=True)).rstrip())


def write_report(report: dict[str, Any], path: Path) -> None:
    """Write a results dictionary as indented JSON, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}", file=sys.stderr)


def rss_bytes() -> int:
    """Current resident set size of this process (Linux `/proc/self/statm`; elsewhere the peak so far)."""
    statm = Path("/proc/self/statm")
    if statm.exists():
        return int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (`resource.getrusage`: KiB on Linux, bytes on macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024
