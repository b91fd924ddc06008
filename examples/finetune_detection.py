"""Object detection on the synthetic benchmark: a dense box head on the frozen ViT patch grid.

    python examples/finetune_detection.py --model place-tiny --task opacity

Protocol (METHOD.md): FCOS-style patch assignment, focal + L1 + GIoU loss, label fractions 1/10/100 %, the
epoch with the best validation mAP is kept; test mAP over IoU 0.40:0.05:0.75 and COCO mAP (0.50:0.95).
Writes `<output_dir>/detection.json` and the selected heads.
"""

import argparse
import json

import torch

from evaluation.downstream import (
    DETECTION_TASKS, Stopwatch, add_common_arguments, batches, detection_labels, detection_scores, fit,
    fraction_of, load_split, pixels_of, push_if_asked, task_image_processor, write_json,
)
from modeling_place import PlaceForObjectDetection
from processing.synthetic_cxr import DEVICES, OPACITY_FINDINGS


def run(settings: argparse.Namespace) -> dict:
    clock = Stopwatch()
    data = load_split("detect", settings)
    names = OPACITY_FINDINGS if settings.task == "opacity" else DEVICES
    results = {}
    for fraction in settings.fractions:
        print(f"-- {settings.task}, fraction {fraction:.0%}")
        train = fraction_of(data["train"], fraction, settings.seed)
        head = PlaceForObjectDetection.from_pretrained(
            settings.model, num_labels=len(names), id2label=dict(enumerate(names)),
            label2id={name: i for i, name in enumerate(names)}, dtype=torch.float32)
        processor = task_image_processor(head.config)
        steps = lambda epoch: ({"pixel_values": pixels_of(processor, rows),  # noqa: E731
                                "labels": detection_labels(processor, rows, settings.task)}
                               for rows in batches(train, settings.batch_size, shuffle=True, seed=epoch))
        validate = lambda: detection_scores(head, processor, data["validation"], settings.task,  # noqa: E731
                                            settings.batch_size)["map"]
        trained = fit(head, steps, validate, settings.epochs, settings.lr)
        test = detection_scores(head, processor, data["test"], settings.task, settings.batch_size)
        print(f"   test mAP@[.40:.75] {test['map']:.4f}, COCO mAP {test['coco_map']:.4f}")
        results[f"{fraction:g}"] = {"test_map": test["map"], "test_coco_map": test["coco_map"],
                                    "per_class": {names[k]: v for k, v in test["per_class"].items()},
                                    "train_examples": len(train), **trained}
        head.save_pretrained(f"{settings.output_dir}/detection-{settings.task}-{fraction:g}")
        push_if_asked(head, settings, f"-detection-{fraction:g}")
    payload = {"task": f"detection/{settings.task}", "results": results, "seconds": clock.seconds}
    write_json(f"{settings.output_dir}/detection.json", payload)
    return payload


def parser() -> argparse.ArgumentParser:
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]), epochs=10, lr=1e-3)
    parser.add_argument("--task", choices=sorted(DETECTION_TASKS), default="opacity")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    return parser


if __name__ == "__main__":
    settings = parser().parse_args()
    print("detection configuration:", json.dumps(vars(settings), indent=2))
    run(settings)
