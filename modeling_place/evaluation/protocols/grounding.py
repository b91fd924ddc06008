"""Phrase grounding by the field's protocol (CNR, mIoU sweep, pointing game, pixel AUROC) against its baselines.

    python examples/evaluate_grounding.py --model place-cxr                       # PLACE, random init, location prior
    python examples/evaluate_grounding.py --model p0 p1 p2 --ita_only i0 i1 i2 --output_json docs/results/grounding.json

Rows: every `--model` (PLACE) read two ways, `cosine` (BioViL's map: sentence vs joint-space patch embeddings,
smoothed with sigma = 1.5 patches) and `observation` (the maps of the V-PORs the sentence matches); every
`--ita_only` folder read with the cosine map; a randomly initialised encoder of the first model's architecture
per PLACE seed, read both ways; and the sentence-blind location prior, the mean mask of the sentence's finding
(`prior`) and of every finding (`prior_all`) over a disjoint draw of the ground split (seed + 1000). Pairs: the
ground split at `--seed`, which pretraining never sees. Metrics: modeling_place.evaluation.grounding, averaged
per finding, then over findings; `summary` gives mean and std over seeds per encoder and readout.
"""

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from modeling_place.evaluation.downstream import (
    Stopwatch, add_data_arguments, load_pretrained, load_split, pixels_of, run_from_command_line,
    segmentation_labels, write_json,
)
from modeling_place.evaluation.grounding import (
    METRICS, SMOOTHING_SIGMA, SWEEP_THRESHOLDS, grounding_metrics, location_prior, per_finding_mean,
)
from modeling_place.evaluation.tasks import cosine_grounding_maps, grounding_maps, observation_cosine

READOUTS: dict[str, Callable[..., np.ndarray]] = {"cosine": cosine_grounding_maps, "observation": grounding_maps}


def training_seed(folder: str, default: int) -> int:
    """The `seed` a pretraining folder was trained with (its train_config.json), else `default`."""
    path = Path(folder, "train_config.json")
    return int(json.loads(path.read_text()).get("seed", default)) if path.is_file() else default


def score(maps: np.ndarray, masks: np.ndarray, findings: Sequence[str], **row: object) -> dict:
    """One result row: the protocol's metrics per finding, then over findings."""
    result = per_finding_mean(grounding_metrics(maps, masks), findings)
    print(f"   {row}: " + ", ".join(f"{name} {result[name]:.4f}" for name in METRICS))
    return {**row, **result}


def encoder_rows(model, processor, pixels: torch.Tensor, rows: dict, masks: np.ndarray, readouts: Sequence[str],
                 settings: argparse.Namespace, **row: object) -> list[dict]:
    """One row per readout of one encoder."""
    options = {"cosine": {"sigma": settings.sigma}, "observation": {}}
    # the collapse check: mean pairwise cosine of an image's V-PORs (only meaningful where the VPOE was trained)
    collapse = {"vpor_cosine": observation_cosine(model, pixels, settings.batch_size)} if "observation" in readouts else {}
    return [score(READOUTS[name](model, processor, pixels, rows["sentence"], settings.batch_size, **options[name]),
                  masks, rows["finding"], readout=name, **row, **collapse) for name in readouts]


def prior_rows(settings: argparse.Namespace, image_processor, rows: dict, masks: np.ndarray) -> list[dict]:
    """The sentence-blind baseline: mean masks of a disjoint draw of the ground split."""
    other = load_split("ground", argparse.Namespace(**{**vars(settings), "seed": settings.seed + 1000}))["test"][:]
    priors = location_prior(segmentation_labels(image_processor, other, "mask").numpy(), other["finding"])
    per_finding = np.stack([priors.get(name, priors["*"]) for name in rows["finding"]])
    everywhere = np.broadcast_to(priors["*"], masks.shape)
    return [score(per_finding, masks, rows["finding"], encoder="prior", readout="prior", prior="finding", seed=0),
            score(everywhere, masks, rows["finding"], encoder="prior", readout="prior", prior="all", seed=0)]


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and std over seeds of each (encoder, readout[, prior]) group."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["encoder"], row["readout"], row.get("prior")), []).append(row)
    summary = []
    for (encoder, readout, prior), members in groups.items():
        names = [*METRICS, *(["vpor_cosine"] if "vpor_cosine" in members[0] else [])]
        summary.append({"encoder": encoder, "readout": readout, **({"prior": prior} if prior else {}), "seeds": len(members),
                        **{name: float(np.mean([m[name] for m in members])) for name in names},
                        **{f"{name}_std": float(np.std([m[name] for m in members])) for name in names}})
    return summary


def run(settings: argparse.Namespace) -> dict:
    clock = Stopwatch()
    rows_out: list[dict] = []
    ground = load_split("ground", settings)["test"][:]
    both = ("cosine", "observation")
    for index, folder in enumerate(settings.model):
        model, processor, image_processor = load_pretrained(argparse.Namespace(model=folder))
        pixels = pixels_of(image_processor, ground)
        masks = segmentation_labels(image_processor, ground, "mask").numpy().astype(bool)
        seed = training_seed(folder, index)
        rows_out += encoder_rows(model, processor, pixels, ground, masks, both, settings, encoder="place", seed=seed,
                                 folder=folder)
        torch.manual_seed(seed)  # the baseline: the same architecture, freshly initialised
        random_model = type(model)(model.config).eval()
        rows_out += encoder_rows(random_model, processor, pixels, ground, masks, both, settings,
                                 encoder="random_init", seed=seed)
    for index, folder in enumerate(settings.ita_only):  # each at its own input resolution
        model, processor, ita_images = load_pretrained(argparse.Namespace(model=folder))
        ita_masks = segmentation_labels(ita_images, ground, "mask").numpy().astype(bool)
        rows_out += encoder_rows(model, processor, pixels_of(ita_images, ground), ground, ita_masks, ("cosine",),
                                 settings, encoder="ita_only", seed=training_seed(folder, index), folder=folder)
    rows_out += prior_rows(settings, image_processor, ground, masks)
    protocol = {"pairs": len(masks), "split": "ground", "data_seed": settings.seed, "prior_data_seed": settings.seed + 1000,
                "resolution": list(masks.shape[1:]), "smoothing_sigma_patches": settings.sigma,
                "miou_thresholds": list(SWEEP_THRESHOLDS), "aggregation": "per-finding mean, then mean over findings"}
    payload = {"task": "grounding", "protocol": protocol, "rows": rows_out, "summary": summarise(rows_out),
               "seconds": clock.seconds}
    path = write_json(settings.output_json or Path(settings.output_dir) / "grounding.json", payload)
    path.with_suffix(".md").write_text(markdown_table(payload["summary"]))
    print(markdown_table(payload["summary"]))
    return payload


def markdown_table(summary: list[dict]) -> str:
    """The summary as a markdown table: mean ± std over seeds (n) per encoder and readout."""
    lines = ["| encoder | readout | n | CNR | signed CNR | mIoU sweep | pointing | pixel AUROC |", "|---|---|---|---|---|---|---|---|"]
    for group in summary:
        readout = group["readout"] + (f" ({group['prior']})" if group.get("prior") else "")
        cells = [f"{group[m]:.3f} ± {group[m + '_std']:.3f}" if group["seeds"] > 1 else f"{group[m]:.3f}"
                 for m in ("cnr", "cnr_signed", "miou_sweep", "pointing", "pixel_auroc")]
        lines.append(f"| {group['encoder']} | {readout} | {group['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    parser = add_data_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]), batch_size=64,
                                size_help="grounding pairs (None: the ground split's 1,000)", several_models=True)
    parser.add_argument("--ita_only", nargs="*", default=[], help="ITA-only pretrained folder(s) of the same budget")
    parser.add_argument("--output_json", default=None, help="where to write the results (default <output_dir>/grounding.json)")
    parser.add_argument("--sigma", type=float, default=SMOOTHING_SIGMA, help="cosine-map smoothing, in patches")
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    """Command-line entry point (`examples/evaluate_grounding.py`)."""
    return run_from_command_line("grounding", parser, run, argv)
