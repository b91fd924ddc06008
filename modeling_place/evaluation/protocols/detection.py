"""Object detection on the synthetic benchmark: a dense box head on the frozen ViT patch grid.

    python examples/finetune_detection.py --model place-tiny --task opacity
    python examples/finetune_detection.py --model place-tiny --trunk_layers 0   # evaluate.py's encoder comparison

Protocol (docs/METHOD.md): FCOS-style patch assignment, focal + L1 + GIoU loss, label fractions 1/10/100 %, the
epoch with the best validation mAP is kept; test mAP over IoU 0.40:0.05:0.75 and COCO mAP (0.50:0.95).
Writes `<output_dir>/detection.json` and the selected heads.
"""

import argparse
from collections.abc import Sequence
from typing import Any

from modeling_place.evaluation.downstream import (
    DETECTION_TASKS, Stopwatch, add_common_arguments, add_fraction_arguments, detection_labels, detection_scores,
    fine_tune_fractions, fit_labelled, load_head, load_split, run_from_command_line, write_results,
)
from modeling_place import PlaceForObjectDetection
from modeling_place.heads_place import HEAD_DEFAULTS
from modeling_place.data.synthetic_cxr import DEVICES, OPACITY_FINDINGS


def run(settings: argparse.Namespace) -> dict:
    clock = Stopwatch()
    data = load_split("detect", settings)
    names = OPACITY_FINDINGS if settings.task == "opacity" else DEVICES

    def train_head(train: Any) -> tuple[Any, Any, dict[str, Any]]:
        head, processor = load_head(PlaceForObjectDetection, settings, names, detection_levels=settings.levels,
                                    detection_trunk_layers=settings.trunk_layers,
                                    freeze_encoder=True)  # the frozen-encoder protocol (docs/EVALUATION.md)
        scores = lambda split: detection_scores(  # noqa: E731
            head, processor, data[split], settings.task, settings.batch_size)
        targets = lambda rows: detection_labels(processor, rows, settings.task)  # noqa: E731
        trained = fit_labelled(head, processor, train, targets, lambda: scores("validation")["map"], settings)
        test = scores("test")
        print(f"   test mAP@[.40:.75] {test['map']:.4f}, COCO mAP {test['coco_map']:.4f}")
        per_class = {names[k]: v for k, v in test["per_class"].items()}
        return head, processor, {"test_map": test["map"], "test_coco_map": test["coco_map"], "per_class": per_class,
                                 **trained}

    results, heads = fine_tune_fractions(settings, data["train"], f"detection-{settings.task}", "detection", train_head)
    return write_results(settings, "detection", {"task": f"detection/{settings.task}", "results": results,
                                                 "seconds": clock.seconds}, heads)


def parser() -> argparse.ArgumentParser:
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]), epochs=10, lr=1e-3)
    parser.add_argument("--levels", type=int, default=HEAD_DEFAULTS["detection_levels"],
                        help="ViT blocks fused by the head; 1: the final-norm patch tokens")
    parser.add_argument("--trunk_layers", type=int, default=HEAD_DEFAULTS["detection_trunk_layers"],
                        help="3×3 convolutions between the fused ViT levels and the box outputs (docs/RESULTS.md, 10)")
    return add_fraction_arguments(parser, DETECTION_TASKS, default_task="opacity")


def main(argv: Sequence[str] | None = None) -> dict:
    """Command-line entry point (`examples/finetune_detection.py`)."""
    return run_from_command_line("detection", parser, run, argv)
