"""Are the VPOE's observations distinct, and do they ground sentences? (docs/RESULTS.md, sections 6, 10, 11)

    python examples/observation_diagnostics.py --model place-cxr
    python examples/observation_diagnostics.py --model place-cxr --checkpoints runs/pretrain/checkpoints/checkpoint_*
    python examples/observation_diagnostics.py --model place-cxr --pairs 1000 --seed 1   # held-out pairs
    python examples/observation_diagnostics.py --model place-cxr --pairs 1000 --seed 1 --matching soft --tau_match 0.1

For the model (or each training checkpoint's weights loaded into the model's architecture): the mean cosine
between an image's different V-PORs (1 = collapsed into one vector), the number of distinct patches the
queries' attention peaks on, the pointing game / mIoU on the first grounding pairs, the share of the image
above half of the map's maximum, and what the best of the M queries would score if it were picked per pair
with the answer known (an oracle: it tells whether any query looks at the lesion, not a method).
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from modeling_place.evaluation.downstream import load_pretrained, pixels_of, segmentation_labels
from modeling_place.evaluation.tasks import grounding_maps, grounding_scores
from modeling_place.loss_place import off_diagonal
from modeling_place.data.synthetic_cxr import build_split


def observation_statistics(model, pixel_values: torch.Tensor) -> dict[str, float]:
    """Mean off-diagonal V-POR cosine and mean count of distinct attention peaks per image."""
    with torch.no_grad():
        observed = model.get_observation_features(pixel_values)
    embeds = observed.observation_embeds.float()
    peaks = observed.observation_attentions.argmax(dim=-1)  # (B, M): the patch each query looks at most
    return {"vpor_cosine": float(off_diagonal(embeds @ embeds.transpose(1, 2)).mean()),
            "distinct_peaks": float(np.mean([len(set(row.tolist())) for row in peaks]))}


def oracle_statistics(model, pixels: torch.Tensor, masks: np.ndarray, batch_size: int = 32) -> dict[str, float]:
    """Pointing / IoU of the best query per pair, and how many queries peak on the lesion, per image."""
    hits, ious = [], []
    for start in range(0, len(pixels), batch_size):
        with torch.no_grad():
            attentions = model.get_observation_features(pixels[start : start + batch_size]).observation_attentions
        maps = model.heat_maps(attentions, masks.shape[-2:]).flatten(2)  # (B, M, H·W), as `ground` makes them
        truth = torch.from_numpy(masks[start : start + batch_size]).bool().flatten(1)[:, None]
        hits.append(truth.expand_as(maps).gather(2, maps.argmax(-1, keepdim=True))[..., 0].float())
        predicted = maps >= 0.5
        ious.append((predicted & truth).sum(-1) / (predicted | truth).sum(-1).clamp(min=1))
    hit, iou = torch.cat(hits), torch.cat(ious)
    return {"oracle_pointing": float(hit.amax(1).mean()), "oracle_iou": float(iou.amax(1).mean()),
            "queries_on_lesion": float(hit.sum(1).mean())}


def diagnose(model, processor, pixels: torch.Tensor, sentences: list[str], masks: np.ndarray, images: int) -> dict[str, float]:
    maps = grounding_maps(model, processor, pixels, sentences)
    return {**observation_statistics(model, pixels[:images]), **grounding_scores(maps, masks),
            "map_area": float((maps >= 0.5).mean()), **oracle_statistics(model, pixels, masks)}


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
    parser.add_argument("--seed", type=int, default=0, help="grounding split seed (0: evaluate.py's pairs)")
    parser.add_argument("--matching", choices=["hard", "soft"], default=None,
                        help="read the maps with this sentence-to-observation matching (default: the model's own)")
    parser.add_argument("--tau_match", type=float, default=None, help="soft matching temperature (default: the model's)")
    args = parser.parse_args(argv)
    model, processor, image_processor = load_pretrained(args)
    model.config.pcma_matching = args.matching or model.config.pcma_matching
    model.config.tau_match = args.tau_match or model.config.tau_match
    split = build_split("ground", cache_dir=args.data_cache, seed=args.seed, image_size=args.image_size)["test"]
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
