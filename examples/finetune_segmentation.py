"""Semantic segmentation on the synthetic benchmark: a decoder over multi-level frozen ViT features.

    python examples/finetune_segmentation.py --model place-tiny --task pneumothorax

Protocol (METHOD.md): background/foreground (2 labels), cross-entropy + Dice, label fractions 1/10/100 %,
the epoch with the best validation Dice is kept, mean per-image Dice on test at the model's input
resolution. Writes `<output_dir>/segmentation.json` and the selected heads.
"""

import argparse
import json

import torch

from evaluation.downstream import (
    SEGMENTATION_TASKS, Stopwatch, add_common_arguments, batches, fit, fraction_of, load_split, pixels_of,
    push_if_asked, segmentation_dice, segmentation_labels, task_image_processor, write_json,
)
from modeling_place import PlaceForSemanticSegmentation


def run(settings: argparse.Namespace) -> dict:
    clock = Stopwatch()
    data = load_split("segment", settings)
    column = SEGMENTATION_TASKS[settings.task]
    results = {}
    for fraction in settings.fractions:
        print(f"-- {settings.task}, fraction {fraction:.0%}")
        train = fraction_of(data["train"], fraction, settings.seed)
        head = PlaceForSemanticSegmentation.from_pretrained(
            settings.model, num_labels=2, id2label={0: "background", 1: settings.task},
            label2id={"background": 0, settings.task: 1}, dtype=torch.float32)
        processor = task_image_processor(head.config)
        # no geometric augmentation: masks must stay aligned with the (eval-mode) crop
        steps = lambda epoch: ({"pixel_values": pixels_of(processor, rows),  # noqa: E731
                                "labels": segmentation_labels(processor, rows, column)}
                               for rows in batches(train, settings.batch_size, shuffle=True, seed=epoch))
        validate = lambda: segmentation_dice(head, processor, data["validation"], column, settings.batch_size)  # noqa: E731
        trained = fit(head, steps, validate, settings.epochs, settings.lr)
        dice = segmentation_dice(head, processor, data["test"], column, settings.batch_size)
        print(f"   test Dice {dice:.4f}")
        results[f"{fraction:g}"] = {"test_dice": dice, "train_examples": len(train), **trained}
        head.save_pretrained(f"{settings.output_dir}/segmentation-{settings.task}-{fraction:g}")
        push_if_asked(head, settings, f"-segmentation-{fraction:g}")
    payload = {"task": f"segmentation/{settings.task}", "results": results, "seconds": clock.seconds}
    write_json(f"{settings.output_dir}/segmentation.json", payload)
    return payload


def parser() -> argparse.ArgumentParser:
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]), epochs=10, lr=1e-3)
    parser.add_argument("--task", choices=sorted(SEGMENTATION_TASKS), default="pneumothorax")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    return parser


if __name__ == "__main__":
    settings = parser().parse_args()
    print("segmentation configuration:", json.dumps(vars(settings), indent=2))
    run(settings)
