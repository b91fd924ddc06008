"""Draw grounding maps: held-out sentences over their images, PLACE's two readouts beside a baseline, masks outlined.

    python examples/grounding_figure.py --model place-cxr --ita_only ita-only --output docs/grounding_maps.png

Rows are grounding pairs (ground split at --seed, the evaluation's pairs); columns are the image with the lesion
outlined, then each readout's map (cosine: BioViL's sentence-patch cosine; observation: the matched V-PORs' maps).
Needs matplotlib (`pip install -e ".[docs]"`).
"""

import argparse
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from modeling_place.evaluation.downstream import load_pretrained, load_split, pixels_of, segmentation_labels  # noqa: E402
from modeling_place.evaluation.tasks import cosine_grounding_maps, grounding_maps  # noqa: E402


def readout_columns(args: argparse.Namespace, rows: dict) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Input images, masks and one map stack per (encoder, readout) column."""
    model, processor, image_processor = load_pretrained(argparse.Namespace(model=args.model))
    pixels = pixels_of(image_processor, rows)
    masks = segmentation_labels(image_processor, rows, "mask").numpy().astype(bool)
    columns = {"PLACE, cosine": cosine_grounding_maps(model, processor, pixels, rows["sentence"]),
               "PLACE, observation": grounding_maps(model, processor, pixels, rows["sentence"])}
    if args.ita_only:
        ita, ita_processor, _ = load_pretrained(argparse.Namespace(model=args.ita_only))
        columns["ITA-only, cosine"] = cosine_grounding_maps(ita, ita_processor, pixels, rows["sentence"])
    images = pixels.mean(dim=1).numpy()
    return images, masks, columns


def draw(images: np.ndarray, masks: np.ndarray, columns: dict[str, np.ndarray], sentences: list[str], path: str) -> None:
    figure, axes = plt.subplots(len(images), 1 + len(columns), figsize=(2.6 * (1 + len(columns)), 2.6 * len(images)))
    for row, (image, mask, sentence) in enumerate(zip(images, masks, sentences)):
        axes[row, 0].imshow(image, cmap="gray")
        axes[row, 0].set_title("\n".join(textwrap.wrap(sentence, 32)), fontsize=7)
        for column, (name, maps) in enumerate(columns.items(), start=1):
            axes[row, column].imshow(image, cmap="gray")
            axes[row, column].imshow(maps[row], cmap="jet", alpha=0.45)
            axes[row, column].set_title(name if row == 0 else "", fontsize=8)
        for axis in axes[row]:
            axis.contour(mask, levels=[0.5], colors="white", linewidths=1.0)
            axis.set_xticks([])
            axis.set_yticks([])
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="pretrained PLACE folder")
    parser.add_argument("--ita_only", default=None, help="an ITA-only folder for a baseline column")
    parser.add_argument("--output", default="docs/grounding_maps.png")
    parser.add_argument("--count", type=int, default=6, help="grounding pairs (rows)")
    parser.add_argument("--seed", type=int, default=0, help="ground split seed (0: the evaluation's pairs)")
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--data_cache", default=None)
    args = parser.parse_args()
    split = load_split("ground", argparse.Namespace(data_cache=args.data_cache, seed=args.seed, size=None,
                                                    image_size=args.image_size))["test"]
    rows = split[: args.count]
    images, masks, columns = readout_columns(args, rows)
    draw(images, masks, columns, rows["sentence"], args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
