"""Zero-shot classification with a pretrained PLACE model: prompts instead of training.

    python examples/zero_shot.py --model place-tiny

Each finding gets sentences that assert it and sentences that deny it; an image's class score is its
similarity to the positive minus the negative prompts, globally (ITA embeddings), at the observation level
(PLACE's s(t, i) over the image's V-PORs) and combined. Macro AUROC on the classify split's test part.
Writes `<output_dir>/zero_shot.json`.
"""

import argparse
import json

import numpy as np
import torch
from transformers import AutoProcessor

import processing  # noqa: F401  (registers PlaceProcessor with AutoProcessor)
from evaluation.downstream import Stopwatch, batches, load_split, pixels_of, task_image_processor, write_json
from evaluation.functional import multilabel_auroc
from evaluation.tasks import zero_shot_scores
from modeling_place import PlaceModel
from processing.synthetic_cxr import FINDINGS

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
    model = PlaceModel.from_pretrained(settings.model, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(settings.model)
    image_processor = task_image_processor(model.config)
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
    write_json(f"{settings.output_dir}/zero_shot.json", payload)
    return payload


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="pretrained PLACE folder (model + processor)")
    parser.add_argument("--output_dir", default="runs/downstream")
    parser.add_argument("--size", type=int, default=None, help="classify split size (None: BENCHMARK.md)")
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--data_cache", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=64)
    return parser


if __name__ == "__main__":
    settings = parser().parse_args()
    print("zero-shot configuration:", json.dumps(vars(settings), indent=2))
    run(settings)
