"""What do the frozen patch tokens hold? Linear probes at every ViT level (docs/RESULTS.md, section 5).

    python examples/patch_probe.py --model place-cxr
    python examples/patch_probe.py --model place-cxr --random_init      # same architecture, random weights

For the output of each ViT block and the final-norm tokens: R² of a ridge map from a patch token to its
patch's pixels (how much image detail a dense head can still read), and AUROC of a logistic probe for "this
patch overlaps an opacity box" (how linearly the tokens separate lesion patches). Fitted on detection
training images, scored on test images; prints one JSON line per level.
"""

import argparse
import json
import tempfile

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import r2_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from modeling_place.evaluation.downstream import detection_labels, load_pretrained, load_split, pixels_of, random_init_copy
from modeling_place.heads_place import box_cxcywh_to_xyxy


def patch_pixels(pixel_values: torch.Tensor, patch: int) -> np.ndarray:
    """Channel-mean pixels of every patch, `(B·N, patch²)` in row-major patch order."""
    grey = pixel_values.mean(1)
    return grey.unfold(1, patch, patch).unfold(2, patch, patch).reshape(-1, patch * patch).numpy()


def lesion_patches(labels: list[dict[str, torch.Tensor]], grid: int) -> np.ndarray:
    """1 for each patch that a box overlaps, `(B·N,)`."""
    edges = torch.arange(grid + 1, dtype=torch.float32) / grid
    marks = []
    for target in labels:
        hit = torch.zeros(grid, grid, dtype=torch.bool)
        for x0, y0, x1, y1 in box_cxcywh_to_xyxy(target["boxes"].float().reshape(-1, 4)).tolist():
            columns = (edges[:-1] < x1) & (edges[1:] > x0)
            rows = (edges[:-1] < y1) & (edges[1:] > y0)
            hit |= rows[:, None] & columns[None, :]
        marks.append(hit.flatten())
    return torch.cat(marks).numpy()


@torch.no_grad()
def level_tokens(model, pixel_values: torch.Tensor) -> list[np.ndarray]:
    """Patch tokens `(B·N, D_v)` after each block, then the final-norm tokens."""
    vit = model.vision_model.timm_model
    final, blocks = vit.forward_intermediates(pixel_values, output_fmt="NLC", norm=False)  # timm's public API
    patches = [tokens.reshape(-1, tokens.shape[-1]).numpy() for tokens in blocks]  # prefix tokens already removed
    return [*patches, final[:, model.num_prefix_tokens :].reshape(-1, final.shape[-1]).numpy()]


def probe_inputs(model, image_processor, rows: dict[str, list]) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    pixel_values = pixels_of(image_processor, rows)
    patch, grid = model.config.patch_size, model.config.image_size // model.config.patch_size
    lesions = lesion_patches(detection_labels(image_processor, rows, "opacity"), grid)
    return level_tokens(model, pixel_values), patch_pixels(pixel_values, patch), lesions


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="pretrained PLACE folder (architecture + processor)")
    parser.add_argument("--random_init", action="store_true", help="probe random weights of --model's architecture")
    parser.add_argument("--train_images", type=int, default=800)
    parser.add_argument("--test_images", type=int, default=400)
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--data_cache", default=None)
    parser.add_argument("--size", type=int, default=None, help="detection split size (None: docs/BENCHMARK.md's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:  # the random weights are only needed until loaded
        source = random_init_copy(args.model, scratch, args.seed) if args.random_init else args.model
        model, _, image_processor = load_pretrained(argparse.Namespace(model=source))
    name = f"random init of {args.model}" if args.random_init else args.model
    data = load_split("detect", args)
    train, test = (probe_inputs(model, image_processor, data[part].select(range(min(count, len(data[part]))))[:])
                   for part, count in (("train", args.train_images), ("test", args.test_images)))
    rows = []
    for level, (fit_tokens, test_tokens) in enumerate(zip(train[0], test[0])):
        pixels = Ridge(alpha=1.0).fit(fit_tokens, train[1]).predict(test_tokens)
        lesion = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(fit_tokens, train[2]).decision_function(test_tokens)
        rows.append({"model": name, "level": f"block {level + 1}" if level < len(train[0]) - 1 else "final norm",
                     "pixel_r2": float(r2_score(test[1], pixels, multioutput="variance_weighted")),
                     "lesion_patch_auroc": float(roc_auc_score(test[2], lesion))})
        print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    main()
