"""Zero-shot classification with a pretrained PLACE model: prompts instead of training.

    python examples/zero_shot.py --model place-tiny

Each finding gets sentences that assert it and sentences that deny it; an image's class score is its
similarity to the positive minus the negative prompts, globally (ITA embeddings), at the observation level
(PLACE's s(t, i) over the image's V-PORs) and combined. Macro AUROC on the classify split's test part.
Writes `<output_dir>/zero_shot.json`.
"""

import argparse
from collections.abc import Sequence

import numpy as np

from modeling_place.evaluation.downstream import (
    Stopwatch, add_data_arguments, batches, load_pretrained, load_split, pixels_of, run_from_command_line,
    write_results,
)
from modeling_place.evaluation.functional import multilabel_auroc
from modeling_place.evaluation.tasks import zero_shot_scores
from modeling_place.data.synthetic_cxr import FINDINGS

PROMPTS = {  # finding: (asserting sentences, denying sentences)
    "Cardiomegaly": (["The heart is enlarged.", "Moderate cardiomegaly."], ["The heart size is normal.", "No cardiomegaly."]),
    "Lung Lesion": (["There is a nodule in the right upper zone.", "A mass is seen in the left lung."], ["No focal lung lesion."]),
    "Edema": (["Mild pulmonary edema.", "Perihilar haziness in keeping with edema."], ["No pulmonary edema."]),
    "Consolidation": (["There is consolidation in the left lower zone.", "Patchy consolidation."], ["No focal consolidation."]),
    "Atelectasis": (["Plate-like atelectasis at the right base.", "Basal atelectasis."], ["No atelectasis."]),
    "Pneumothorax": (["There is a small left pneumothorax.", "Large right pneumothorax."], ["No pneumothorax."]),
    "Pleural Effusion": (["Small left pleural effusion.", "Moderate bilateral pleural effusions."], ["No pleural effusion."]),
    "Fracture": (["There is a fracture of a left rib.", "Right rib fracture."], ["No acute fracture."]),
    "Support Devices": (["Endotracheal tube in standard position.", "A central line is in place."], ["No support devices."]),
}


def run(settings: argparse.Namespace) -> dict:
    clock = Stopwatch()
    model, processor, image_processor = load_pretrained(settings)
    test = load_split("classify", settings)["test"]
    classes = list(PROMPTS)
    parts = [zero_shot_scores(model, processor, pixels_of(image_processor, rows),
                              {c: PROMPTS[c][0] for c in classes}, {c: PROMPTS[c][1] for c in classes})
             for rows in batches(test, settings.batch_size * 4)]
    labels = np.asarray(test["labels"])[:, [FINDINGS.index(c) for c in classes]]
    results = {}
    for kind in ("global", "observation", "combined"):
        scores = np.concatenate([part[kind] for part in parts])
        results[kind] = multilabel_auroc(scores, labels, classes)
        print(f"   {kind}: macro AUROC {results[kind]['auroc']:.4f}")
    payload = {"task": "zero_shot", "results": results, "prompts": PROMPTS, "seconds": clock.seconds}
    return write_results(settings, "zero_shot", payload)


def parser() -> argparse.ArgumentParser:
    return add_data_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]), batch_size=64,
                              size_help="classify split size (None: docs/BENCHMARK.md)")


def main(argv: Sequence[str] | None = None) -> dict:
    """Command-line entry point (`examples/zero_shot.py`)."""
    return run_from_command_line("zero-shot", parser, run, argv)
