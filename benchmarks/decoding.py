"""Report decoding speed: tokens/s of `PlaceForReportGeneration.generate` with and without the key/value cache.

    python benchmarks/decoding.py                                      # new decoder: use_cache=False vs True
    git -C . worktree add /tmp/place-60275d5 60275d5                   # the hand-written decoder, for the record
    python benchmarks/decoding.py --old-checkout /tmp/place-60275d5    # adds its rows (imported from that checkout)
    python benchmarks/decoding.py --quick                              # a small decoder, 8 tokens (the test)

The model is the report protocol's: the `tiny` preset's encoder with examples/finetune_report_generation.py's
default decoder (3 layers, width 256, 4 heads, 128 positions), random weights, fp32. Every sequence is made to run
to `--new-tokens` (`min_new_tokens`: no early [SEP]), so each setting decodes the same number of tokens; tokens/s
counts generated tokens of the returned sequences (beams are not counted separately). Settings: greedy at batch 1
and 8, beam search (3 beams, the protocol's) at batch 8. Rows: `new, use_cache=False` (the whole prefix at every
step: the old behaviour), `new, use_cache=True` (the default), and with `--old-checkout` the hand-written decoder
of that checkout (cache-free; its `PlaceForReportGeneration` is imported from there under another package name, so
both run in this process on the same inputs). Cached and uncached tokens must be identical (`same_tokens`).
Writes benchmarks/results/decoding.json.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import types
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make the repo root importable

from benchmarks.common import machine_info, median, print_table, repeat_times, results_path, write_report
from modeling_place import PlaceConfig, PlaceForReportGeneration

RESULTS = results_path("decoding")
#: examples/finetune_report_generation.py's default decoder
PROTOCOL_DECODER = {"decoder_layers": 3, "decoder_hidden_size": 256, "decoder_num_heads": 4, "decoder_max_length": 128}
QUICK_DECODER = {"decoder_layers": 1, "decoder_hidden_size": 32, "decoder_num_heads": 2, "decoder_max_length": 16}
#: (name, batch, beams)
SETTINGS = (("greedy", 1, 1), ("greedy", 8, 1), ("beam", 8, 3))
OLD_PACKAGE = "place_checkout_under_test"


def old_head_classes(checkout: Path) -> tuple[type, type]:
    """`PlaceForReportGeneration` and `PlaceConfig` of another checkout's `modeling_place/`, imported under a package
    name of their own (its `__init__` is not run: no Auto registration, no clash with the installed package)."""
    package = types.ModuleType(OLD_PACKAGE)
    package.__path__ = [str(Path(checkout) / "modeling_place")]
    sys.modules[OLD_PACKAGE] = package
    heads = importlib.import_module(f"{OLD_PACKAGE}.heads_place")
    return heads.PlaceForReportGeneration, importlib.import_module(f"{OLD_PACKAGE}.configuration_place").PlaceConfig


def build_head(head_class: type, config_class: type, decoder: dict[str, int]) -> torch.nn.Module:
    """The tiny preset's encoder with `decoder`, seeded (the same encoder weights for every decoder)."""
    torch.manual_seed(0)
    return head_class(config_class.from_preset("tiny"), **decoder).eval()


def decode_row(head: torch.nn.Module, pixels: torch.Tensor, beams: int, new_tokens: int, repeats: int,
               **generate_options: Any) -> tuple[dict[str, Any], torch.Tensor]:
    """Median seconds of `repeats` generate calls (after one warm-up) and the tokens of the last one."""
    output: list[torch.Tensor] = []

    def generate() -> None:
        output[:] = [head.generate(pixel_values=pixels, num_beams=beams, max_new_tokens=new_tokens,
                                   min_new_tokens=new_tokens, **generate_options)]

    seconds = median(repeat_times(generate, pixels.device, repeats))
    tokens = pixels.shape[0] * new_tokens
    return {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds}, output[0]


def measure_setting(heads: dict[str, torch.nn.Module], name: str, batch: int, beams: int, args: argparse.Namespace
                    ) -> list[dict[str, Any]]:
    """The rows of one setting: new decoder uncached and cached (their tokens compared), and the old one if given."""
    size = heads["new"].config.image_size
    pixels = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    runs = {"new, use_cache=False": ("new", {"use_cache": False}), "new, use_cache=True": ("new", {"use_cache": True})}
    if "old" in heads:
        runs["old (hand-written, no cache)"] = ("old", {})
    rows, tokens = [], {}
    for decoder, (key, options) in runs.items():
        row, tokens[decoder] = decode_row(heads[key], pixels, beams, args.new_tokens, args.repeats, **options)
        rows.append({"setting": name, "batch": batch, "beams": beams, "decoder": decoder, **row})
    uncached = rows[0]["tokens_per_s"]
    same = torch.equal(tokens["new, use_cache=False"], tokens["new, use_cache=True"])
    for row in rows:
        row["speedup_vs_uncached"] = row["tokens_per_s"] / uncached
        row["same_tokens"] = same if row["decoder"].startswith("new") else None
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=127, help="tokens generated per sequence (127: the table)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: comparable on a shared machine)")
    parser.add_argument("--old-checkout", type=Path, default=None,
                        help="a checkout with the hand-written decoder (git worktree of 60275d5) to measure too")
    parser.add_argument("--quick", action="store_true", help="a 1-layer width-32 decoder, 8 tokens, one repeat")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.new_tokens, args.repeats = 8, 1
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    decoder = QUICK_DECODER if args.quick else PROTOCOL_DECODER
    heads = {"new": build_head(PlaceForReportGeneration, PlaceConfig, decoder)}
    if args.old_checkout is not None:
        heads["old"] = build_head(*old_head_classes(args.old_checkout), decoder)
    load_before = os.getloadavg()  # a shared machine: how busy it was says how far to trust the absolute numbers
    with torch.inference_mode():
        rows = [row for setting in SETTINGS for row in measure_setting(heads, *setting, args)]
    report = {**machine_info(torch.device("cpu")), "load_average_1m": [load_before[0], os.getloadavg()[0]],
              "cpus": os.cpu_count(), "decoder": decoder, "new_tokens": args.new_tokens,
              "repeats": args.repeats, "old_checkout": str(args.old_checkout) if args.old_checkout else None,
              "decoder_parameters": {key: _decoder_parameters(head) for key, head in heads.items()}, "rows": rows}
    _print_report(report)
    write_report(report, args.output)
    return report


def _decoder_parameters(head: torch.nn.Module) -> int:
    """Parameters of the decoder and its memory projections (the encoder is shared)."""
    encoder = {id(p) for module in head.encoder_modules() for p in module.parameters()}
    return sum(p.numel() for p in head.parameters() if id(p) not in encoder)


def _print_report(report: dict[str, Any]) -> None:
    print_table(report["rows"], [("setting", "setting", ""), ("batch", "batch", "d"), ("beams", "beams", "d"),
                                 ("decoder", "decoder", ""), ("tokens_per_s", "tokens/s", ".1f"),
                                 ("speedup_vs_uncached", "× uncached", ".2f"), ("same_tokens", "same tokens", "")],
                title=f"{report['machine']}: report decoding, {report['new_tokens']} new tokens per sequence, "
                      f"decoder {report['decoder']}")
    print("decoder parameters: " + ", ".join(f"{key} {count:,}" for key, count in report["decoder_parameters"].items()))
    print("load average (1 min) before / after: {:.1f} / {:.1f} on {} CPUs".format(*report["load_average_1m"], report["cpus"]))


if __name__ == "__main__":
    main()
