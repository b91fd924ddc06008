"""Image-to-text retrieval (5x200 protocol) and sentence grounding with a pretrained PLACE model, no training.

    python examples/evaluate_retrieval.py --model place-tiny

Retrieval: every image of the retrieval split (5 single-finding classes) queries all reports; Precision@1/5/10
counts retrieved reports of the query's class. Scores: global (ITA) cosine, and the same mixed half-and-half
with the observation-level score s(t, i) averaged over each report's sentences. Grounding: heat maps of
each grounding sentence over its image, pointing game and mIoU (maps ≥ 0.5) against the lesion mask.
Writes `<output_dir>/retrieval.json`.
"""

import argparse
import json

import numpy as np
import torch
from transformers import AutoProcessor

import processing  # noqa: F401  (registers PlaceProcessor with AutoProcessor)
from evaluation.downstream import Stopwatch, load_split, pixels_of, task_image_processor, write_json
from evaluation.tasks import grounding_maps, grounding_scores, image_text_similarity, retrieval_precision
from modeling_place import PlaceModel


def run(settings: argparse.Namespace) -> dict:
    clock = Stopwatch()
    model = PlaceModel.from_pretrained(settings.model, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(settings.model)
    image_processor = task_image_processor(model.config)
    retrieval = load_split("retrieval", settings)["test"]
    pixels = pixels_of(image_processor, retrieval[:])
    labels = np.asarray(retrieval["class_label"])
    results = {}
    for name, weight in (("global", 0.0), ("global+observation", 0.5)):
        similarity = image_text_similarity(model, processor, pixels, retrieval["report"], weight, settings.batch_size)
        results[name] = retrieval_precision(similarity, labels, labels)
        print(f"   {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in results[name].items()))
    ground = load_split("ground", settings)["test"]
    masks = image_processor.masks_to_model(np.stack([np.asarray(m) > 0 for m in ground["mask"]]).astype(np.uint8))
    maps = grounding_maps(model, processor, pixels_of(image_processor, ground[:]), ground["sentence"], settings.batch_size)
    results["grounding"] = grounding_scores(maps, masks.numpy())
    print(f"   grounding: pointing game {results['grounding']['pointing_game']:.4f}, mIoU {results['grounding']['miou']:.4f}")
    payload = {"task": "retrieval", "results": results, "num_images": len(retrieval), "seconds": clock.seconds}
    write_json(f"{settings.output_dir}/retrieval.json", payload)
    return payload


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="pretrained PLACE folder (model + processor)")
    parser.add_argument("--output_dir", default="runs/downstream")
    parser.add_argument("--size", type=int, default=None, help="retrieval split size (None: 1000 = 5x200)")
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--data_cache", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=64)
    return parser


if __name__ == "__main__":
    settings = parser().parse_args()
    print("retrieval configuration:", json.dumps(vars(settings), indent=2))
    run(settings)
