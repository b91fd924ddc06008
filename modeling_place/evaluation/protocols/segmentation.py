"""Semantic segmentation on the synthetic benchmark: a decoder over multi-level frozen ViT features.

    python examples/finetune_segmentation.py --model place-tiny --task pneumothorax

Protocol (docs/METHOD.md): background/foreground (2 labels), cross-entropy + Dice, label fractions 1/10/100 %,
the epoch with the best validation Dice is kept, mean per-image Dice on test at the model's input
resolution, over all test images (1 where prediction and truth are both empty) and over the images with a
lesion (the selection criterion: an all-background prediction scores 0 there). Writes `<output_dir>/segmentation.json` and the selected heads.
"""

import argparse
from collections.abc import Sequence
from typing import Any

from modeling_place.evaluation.downstream import (
    SEGMENTATION_TASKS, Stopwatch, add_common_arguments, add_fraction_arguments, fine_tune_fractions, fit_labelled,
    load_head, load_split, run_from_command_line, segmentation_dice, segmentation_labels, write_results,
)
from modeling_place import PlaceForSemanticSegmentation


def run(settings: argparse.Namespace) -> dict:
    clock = Stopwatch()
    data = load_split("segment", settings)
    column = SEGMENTATION_TASKS[settings.task]

    def train_head(train: Any) -> tuple[Any, Any, dict[str, Any]]:
        head, processor = load_head(PlaceForSemanticSegmentation, settings, ["background", settings.task],
                                    freeze_encoder=True)  # the frozen-encoder protocol (docs/EVALUATION.md)
        dice = lambda split: segmentation_dice(head, processor, data[split], column, settings.batch_size)  # noqa: E731
        # no geometric augmentation: masks must stay aligned with the (eval-mode) crop
        masks = lambda rows: segmentation_labels(processor, rows, column)  # noqa: E731
        # selected on lesion images: the all-image Dice rewards predicting nothing on the many empty images
        trained = fit_labelled(head, processor, train, masks, lambda: dice("validation")["dice_positive"], settings)
        test = dice("test")
        print(f"   test Dice {test['dice']:.4f} (lesion images {test['dice_positive']:.4f})")
        return head, processor, {"test_dice": test["dice"], "test_dice_positive": test["dice_positive"], **trained}

    results, heads = fine_tune_fractions(
        settings, data["train"], f"segmentation-{settings.task}", "segmentation", train_head)
    return write_results(settings, "segmentation", {"task": f"segmentation/{settings.task}", "results": results,
                                                    "seconds": clock.seconds}, heads)


def parser() -> argparse.ArgumentParser:
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]), epochs=10, lr=1e-3)
    return add_fraction_arguments(parser, SEGMENTATION_TASKS, default_task="pneumothorax")


def main(argv: Sequence[str] | None = None) -> dict:
    """Command-line entry point (`examples/finetune_segmentation.py`)."""
    return run_from_command_line("segmentation", parser, run, argv)
