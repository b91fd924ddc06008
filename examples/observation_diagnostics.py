"""Are the VPOE's observations distinct, and do they ground sentences? (docs/RESULTS.md, section 2)

    python examples/observation_diagnostics.py --model place-cxr
    python examples/observation_diagnostics.py --model place-cxr --checkpoints runs/pretrain/checkpoints/checkpoint_*

For the model (or each training checkpoint's weights loaded into the model's architecture): the mean cosine
between an image's different V-PORs (1 = collapsed into one vector), the number of distinct patches the
queries' attention peaks on, and the pointing game / mIoU on the first grounding pairs.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from evaluation.downstream import load_pretrained, pixels_of, segmentation_labels
from evaluation.tasks import grounding_maps, grounding_scores
from modeling_place.loss_place import off_diagonal
from processing.synthetic_cxr import build_split


def observation_statistics(model, pixel_values: torch.Tensor) -> dict[str, float]:
    """Mean off-diagonal V-POR cosine and mean count of distinct attention peaks per image."""
    with torch.no_grad():
        observed = model.get_observation_features(pixel_values)
    embeds = observed.observation_embeds.float()
    peaks = observed.observation_attentions.argmax(dim=-1)  # (B, M): the patch each query looks at most
    return {"vpor_cosine": float(off_diagonal(embeds @ embeds.transpose(1, 2)).mean()),
            "distinct_peaks": float(np.mean([len(set(row.tolist())) for row in peaks]))}


def diagnose(model, processor, pixels: torch.Tensor, sentences: list[str], masks: np.ndarray, images: int) -> dict[str, float]:
    maps = grounding_maps(model, processor, pixels, sentences)
    return {**observation_statistics(model, pixels[:images]), **grounding_scores(maps, masks)}


def blind_references(masks: np.ndarray, seed: int = 0) -> list[dict]:
    """Grounding scores of maps that ignore the sentence: uniform noise, and the mean mask of the pairs."""
    noise = np.random.default_rng(seed).random(masks.shape)
    prior = masks.mean(axis=0) / max(masks.mean(axis=0).max(), 1e-12)
    return [{"weights": "sentence-blind: uniform noise", **grounding_scores(noise, masks)},
            {"weights": "sentence-blind: mean mask", **grounding_scores(np.broadcast_to(prior, masks.shape), masks)}]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="pretrained PLACE folder (architecture + processor)")
    parser.add_argument("--checkpoints", nargs="*", default=[], help="trainer checkpoint folders to load in turn")
    parser.add_argument("--pairs", type=int, default=200, help="grounding pairs")
    parser.add_argument("--images", type=int, default=64, help="images for the V-POR statistics")
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--data_cache", default=None)
    args = parser.parse_args(argv)
    model, processor, image_processor = load_pretrained(args)
    split = build_split("ground", cache_dir=args.data_cache, image_size=args.image_size)["test"]
    pairs = split.select(range(min(args.pairs, len(split))))[:]
    pixels, masks = pixels_of(image_processor, pairs), segmentation_labels(image_processor, pairs, "mask").numpy()
    rows = blind_references(masks)
    for row in rows:
        print(json.dumps(row), flush=True)
    for source in [None, *args.checkpoints]:
        if source is not None:
            model.load_state_dict(load_file(Path(source) / "model.safetensors"))
        rows.append({"weights": source or args.model,
                     **diagnose(model, processor, pixels, pairs["sentence"], masks, args.images)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    main()
