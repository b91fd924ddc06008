"""Image-to-text retrieval (5x200 protocol) and sentence grounding with a pretrained PLACE model, no training.

    python examples/evaluate_retrieval.py --model place-tiny

Retrieval: every image of the retrieval split (5 single-finding classes) queries all reports; Precision@1/5/10
counts retrieved reports of the query's class. Scores: global (ITA) cosine, and the same mixed half-and-half
with the observation-level score s(t, i) averaged over each report's sentences. Grounding: heat maps of
each grounding sentence over its image, pointing game and mIoU (maps ≥ 0.5) against the lesion mask.
Writes `<output_dir>/retrieval.json`.
"""

import argparse
from collections.abc import Sequence

import numpy as np

from modeling_place.evaluation.downstream import (
    Stopwatch, add_data_arguments, load_pretrained, load_split, pixels_of, run_from_command_line, segmentation_labels,
    write_results,
)
from modeling_place.evaluation.tasks import grounding_maps, grounding_scores, image_text_similarity, retrieval_precision


def run(settings: argparse.Namespace) -> dict:
    clock = Stopwatch()
    model, processor, image_processor = load_pretrained(settings)
    retrieval = load_split("retrieval", settings)["test"]
    pixels = pixels_of(image_processor, retrieval[:])
    labels = np.asarray(retrieval["class_label"])
    results = {}
    for name, weight in (("global", 0.0), ("global+observation", 0.5)):
        similarity = image_text_similarity(model, processor, pixels, retrieval["report"], weight, settings.batch_size)
        results[name] = retrieval_precision(similarity, labels, labels)
        print(f"   {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in results[name].items()))
    ground = load_split("ground", settings)["test"]
    rows = ground[:]
    maps = grounding_maps(model, processor, pixels_of(image_processor, rows), rows["sentence"], settings.batch_size)
    results["grounding"] = grounding_scores(maps, segmentation_labels(image_processor, rows, "mask").numpy())
    print(f"   grounding: pointing game {results['grounding']['pointing_game']:.4f}, mIoU {results['grounding']['miou']:.4f}")
    payload = {"task": "retrieval", "results": results, "num_images": len(retrieval), "seconds": clock.seconds}
    return write_results(settings, "retrieval", payload)


def parser() -> argparse.ArgumentParser:
    return add_data_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]), batch_size=64,
                              size_help="retrieval split size (None: 1000 = 5x200)")


def main(argv: Sequence[str] | None = None) -> dict:
    """Command-line entry point (`examples/evaluate_retrieval.py`)."""
    return run_from_command_line("retrieval", parser, run, argv)
