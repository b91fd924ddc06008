"""Classification on the synthetic benchmark: linear probe on the frozen PLACE encoder (or a full fine-tune).

    python examples/finetune_classification.py --model place-tiny                       # 1 %, 10 %, 100 % probes
    python examples/finetune_classification.py --model place-tiny --full_finetune --fractions 0.1

Protocol (METHOD.md): multi-label over the benchmark's FINDINGS, BCE; label fractions of the train split;
the epoch with the best validation AUROC is kept; macro AUROC on test (labels without positives are skipped
and listed). Writes `<output_dir>/classification.json` and, per fraction, the selected head.
"""

import argparse
import json

import torch

from evaluation.downstream import (
    LinearProbe, Stopwatch, add_common_arguments, auroc_of, batches, classification_scores, cls_features, fit,
    fraction_of, load_split, pixels_of, push_if_asked, task_image_processor, write_json,
)
from modeling_place import PlaceForImageClassification
from processing.synthetic_cxr import FINDINGS


def run(settings: argparse.Namespace) -> dict:
    clock = Stopwatch()
    data = load_split("classify", settings)
    id2label = dict(enumerate(FINDINGS))
    results = {}
    for fraction in settings.fractions:
        print(f"-- fraction {fraction:.0%}")
        train = fraction_of(data["train"], fraction, settings.seed)
        head = PlaceForImageClassification.from_pretrained(
            settings.model, num_labels=len(FINDINGS), id2label=id2label, label2id={v: k for k, v in id2label.items()},
            problem_type="multi_label_classification", freeze_encoder=not settings.full_finetune, dtype=torch.float32)
        processor = task_image_processor(head.config)
        if settings.full_finetune:
            steps = lambda epoch: ({"pixel_values": pixels_of(processor, rows, train=True),  # noqa: E731
                                    "labels": torch.tensor(rows["labels"])}
                                   for rows in batches(train, settings.batch_size, shuffle=True, seed=epoch))
            validate = lambda: auroc_of(classification_scores(head, processor, data["validation"], settings.batch_size),  # noqa: E731
                                        data["validation"], FINDINGS)["auroc"]
            trained = fit(head, steps, validate, settings.epochs, settings.lr)
        else:  # linear probe: the frozen encoder's CLS features are computed once
            features = {name: cls_features(head, processor, split, settings.batch_size)
                        for name, split in (("train", train), ("validation", data["validation"]))}
            labels = torch.tensor(train["labels"])
            probe = LinearProbe(head)
            steps = lambda epoch: ({"features": features["train"][index], "labels": labels[index]}  # noqa: E731
                                   for index in torch.randperm(len(labels), generator=torch.Generator().manual_seed(epoch))
                                   .split(settings.batch_size))
            validate = lambda: auroc_of(head.classifier(features["validation"]).sigmoid().detach().numpy(),  # noqa: E731
                                        data["validation"], FINDINGS)["auroc"]
            trained = fit(probe, steps, validate, settings.epochs, settings.lr)
        test = auroc_of(classification_scores(head, processor, data["test"], settings.batch_size), data["test"], FINDINGS)
        print(f"   test AUROC {test['auroc']:.4f} (skipped: {test['skipped_labels']})")
        results[f"{fraction:g}"] = {"test_auroc": test["auroc"], "per_label": test["per_label"],
                                    "skipped_labels": test["skipped_labels"], "train_examples": len(train), **trained}
        head.save_pretrained(f"{settings.output_dir}/classification-{fraction:g}")
        push_if_asked(head, settings, f"-classification-{fraction:g}")
    payload = {"task": "classification", "mode": "full_finetune" if settings.full_finetune else "linear_probe",
               "results": results, "seconds": clock.seconds}
    write_json(f"{settings.output_dir}/classification.json", payload)
    return payload


def parser() -> argparse.ArgumentParser:
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]), epochs=20, lr=3e-3)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    parser.add_argument("--full_finetune", action="store_true", help="train the encoder too (default: linear probe)")
    return parser


if __name__ == "__main__":
    settings = parser().parse_args()
    print("classification configuration:", json.dumps(vars(settings), indent=2))
    run(settings)
