"""Classification on the synthetic benchmark: linear probe on the frozen PLACE encoder (or a full fine-tune).

    python examples/finetune_classification.py --model place-tiny                       # 1 %, 10 %, 100 % probes
    python examples/finetune_classification.py --model place-tiny --full_finetune --fractions 0.1

Protocol (docs/METHOD.md): multi-label over the benchmark's FINDINGS, BCE; label fractions of the train split;
the epoch with the best validation AUROC is kept; macro AUROC on test (labels without positives are skipped
and listed). Writes `<output_dir>/classification.json` and, per fraction, the selected head.
"""

import argparse
from collections.abc import Sequence
from typing import Any

import torch

from modeling_place.evaluation.downstream import (
    HeadTask, LinearProbe, Stopwatch, add_common_arguments, add_fraction_arguments, auroc_of, classification_scores,
    cls_features, fine_tune_fractions, fit, fit_config, fit_labelled, load_head, load_split, run_from_command_line,
    to_model_device, write_results,
)
from modeling_place import PlaceForImageClassification
from modeling_place.data.synthetic_cxr import FINDINGS


def run(settings: argparse.Namespace) -> dict:
    clock = Stopwatch()
    data = load_split("classify", settings)
    validation = data["validation"]

    def train_head(train: Any) -> tuple[Any, Any, dict[str, Any]]:
        head, processor = load_head(PlaceForImageClassification, settings, FINDINGS,
                                    problem_type="multi_label_classification",
                                    freeze_encoder=not settings.full_finetune)
        if settings.full_finetune:
            validate = lambda: auroc_of(  # noqa: E731
                classification_scores(head, processor, validation, settings.batch_size), validation, FINDINGS)["auroc"]
            targets = lambda rows: torch.tensor(rows["labels"])  # noqa: E731
            trained = fit_labelled(head, processor, train, targets, validate, settings, augment=True)
        else:
            trained = _fit_linear_probe(head, processor, train, validation, settings)
        test_scores = classification_scores(head, processor, data["test"], settings.batch_size)
        test = auroc_of(test_scores, data["test"], FINDINGS)
        print(f"   test AUROC {test['auroc']:.4f} (skipped: {test['skipped_labels']})")
        return head, processor, {"test_auroc": test["auroc"], "per_label": test["per_label"],
                                 "skipped_labels": test["skipped_labels"], **trained}

    results, heads = fine_tune_fractions(settings, data["train"], "classification", "classification", train_head)
    payload = {"task": "classification", "mode": "full_finetune" if settings.full_finetune else "linear_probe",
               "results": results, "seconds": clock.seconds}
    return write_results(settings, "classification", payload, heads)


def _fit_linear_probe(head: Any, processor: Any, train: Any, validation: Any, settings: argparse.Namespace) -> dict:
    """Train the head's classifier on the frozen encoder's CLS features, computed once per split."""
    features = {name: cls_features(head, processor, split, settings.batch_size)
                for name, split in (("train", train), ("validation", validation))}
    labels = torch.tensor(train["labels"])
    order = lambda epoch: [torch.randperm(len(labels), generator=torch.Generator().manual_seed(epoch))]  # noqa: E731
    rows = lambda index: {"features": features["train"][index], "labels": labels[index]}  # noqa: E731
    validate = lambda: auroc_of(  # noqa: E731
        head.classifier(to_model_device(head, features["validation"])).sigmoid().detach().cpu().numpy(),
        validation, FINDINGS)["auroc"]
    return fit(HeadTask(LinearProbe(head), len(labels), order, rows, validate), fit_config(settings))


def parser() -> argparse.ArgumentParser:
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]), epochs=20, lr=3e-3)
    add_fraction_arguments(parser)
    parser.add_argument("--full_finetune", action="store_true", help="train the encoder too (default: linear probe)")
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    """Command-line entry point (`examples/finetune_classification.py`)."""
    return run_from_command_line("classification", parser, run, argv)
