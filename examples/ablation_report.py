"""Tables and plots of the ablation study (examples/ablation.py) for docs/RESULTS.md.

    python examples/ablation_report.py                       # runs/ablation → docs/results/ablation/

Writes `summary.json` (every number, per run and mean ± std per variant), `table.md` (the headline table), `sweep.md` (the cheap tasks of every run),
`headline.png` (the README's figure), `training_curves.png`, `label_fractions.png` and `grounding.png` (sentences' heat maps over their images, true
lesion masks outlined). Needs matplotlib (`pip install -e ".[docs]"`).
"""

import argparse
import json
import statistics
from pathlib import Path

from ablation import VARIANTS, parse_run  # the sibling script (examples/ is on sys.path when this runs as a script)

FRACTIONS = ("0.01", "0.1", "1")
VARIANT_ORDER = ["random_init", *VARIANTS]  # rows, bars and colours follow it
# (task, metric key in evaluate.py's table, column title) of the headline table
HEADLINE = [
    ("classification", "AUROC 0.01", "cls AUROC 1%"),
    ("classification", "AUROC 1", "cls AUROC 100%"),
    ("zero_shot", "AUROC combined", "zero-shot AUROC"),
    ("retrieval", "global P@5", "5x200 P@5"),
    ("retrieval", "pointing game", "pointing game"),
    ("segmentation", "Dice lesion images 0.01", "seg Dice 1%"),
    ("segmentation", "Dice lesion images 1", "seg Dice 100%"),
    ("detection", "mAP 0.01", "det mAP 1%"),
    ("detection", "mAP 1", "det mAP 100%"),
    ("report_generation", "bleu_4", "BLEU-4"),
]
# the PCMA-knob sweep's table: the cheap tasks that every run evaluates
SWEEP_COLUMNS = [
    ("pretraining", "val ITA loss", "val ITA loss (last step)"),
    ("zero_shot", "AUROC combined", "zero-shot AUROC"),
    ("zero_shot", "AUROC observation", "zero-shot AUROC (observations)"),
    ("retrieval", "global P@1", "5x200 P@1"),
    ("retrieval", "global+observation P@1", "5x200 P@1 (global+obs.)"),
    ("retrieval", "global P@5", "5x200 P@5"),
    ("retrieval", "pointing game", "pointing game"),
    ("retrieval", "mIoU", "grounding mIoU"),
]


def read_jsonl(path: Path) -> list[dict]:
    """metrics.jsonl records, the last one per (kind, step) (a resumed run re-logs a few steps)."""
    if not path.exists():
        return []
    records = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        records[(record["kind"], record["step"])] = record
    return sorted(records.values(), key=lambda r: r["step"])


def collect(root: Path) -> dict[str, dict]:
    """Every finished run under `root`: its variant, seed, evaluation table and training log."""
    runs = {}
    for results in sorted(root.glob("*/eval/results.json")):
        folder = results.parent.parent
        variant, seed = parse_run(folder.name)
        summary = folder / "model" / "training_summary.json"
        training = json.loads(summary.read_text()) if summary.exists() else None
        table = json.loads(results.read_text())["table"]
        if training:  # the pretraining's last validation, beside the downstream metrics
            final = training["final_validation"]
            table["pretraining"] = {"val ITA loss": final["val_loss_ita"], "val Recall@5": final["val_recall@5"]}
        runs[folder.name] = {"variant": variant, "seed": seed, "table": table, "training": training,
                             "log": read_jsonl(folder / "train" / "metrics.jsonl")}
    return runs


def by_variant(runs: dict[str, dict]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """variant → task → metric → values over seeds; random init first, then the study's order of variants."""
    grouped: dict = {}
    for run in sorted(runs.values(), key=lambda run: (VARIANT_ORDER.index(run["variant"]), run["seed"])):
        for task, row in run["table"].items():
            for metric, value in row.items():
                grouped.setdefault(run["variant"], {}).setdefault(task, {}).setdefault(metric, []).append(value)
    return grouped


def colour(variant: str) -> str:
    """One colour per variant in every plot."""
    return f"C{VARIANT_ORDER.index(variant) % 10}"


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def cell(values: list[float] | None) -> str:
    if not values:
        return "—"
    mean, std = mean_std(values)
    return f"{mean:.3f} ± {std:.3f} (n={len(values)})" if len(values) > 1 else f"{mean:.3f}"


def metric_table(grouped: dict, columns: list[tuple[str, str, str]] = HEADLINE) -> str:
    """Markdown: a row per variant, a column per (task, metric, title), mean ± std over seeds."""
    lines = ["| variant | " + " | ".join(title for _, _, title in columns) + " |", "|---|" + "---|" * len(columns)]
    for variant, tasks in grouped.items():
        cells = [cell(tasks.get(task, {}).get(metric)) for task, metric, _ in columns]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def save(figure, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_training_curves(runs: dict[str, dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = (("validation", "val_loss_ita", "validation ITA loss"), ("validation", "val_recall@5", "validation Recall@5"),
              ("train", "loss", "training loss (all objectives)"))
    for run in runs.values():
        for axis, (kind, key, title) in zip(axes, panels):
            points = [(r["step"], r[key]) for r in run["log"] if r["kind"] == kind and key in r]
            if points:
                axis.plot(*zip(*points), color=colour(run["variant"]), alpha=1.0 if run["seed"] == 0 else 0.4,
                          label=run["variant"] if run["seed"] == 0 else None)
            axis.set_title(title)
            axis.set_xlabel("step")
    axes[0].legend(fontsize=8)
    save(figure, path)


def plot_headline(grouped: dict, path: Path) -> None:
    """The README's figure: one panel per headline metric, a bar per variant (mean ± std over seeds)."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, (len(HEADLINE) + 1) // 2, figsize=(16, 6.5))
    # variants evaluated on every task (the sweep's runs evaluate only the cheap ones)
    variants = [v for v, tasks in grouped.items() if all(metric in tasks.get(task, {}) for task, metric, _ in HEADLINE)]
    for axis, (task, metric, title) in zip(axes.flat, HEADLINE):
        stats = [mean_std(grouped[v][task][metric]) for v in variants]
        axis.bar(range(len(variants)), [m for m, _ in stats], yerr=[s for _, s in stats], capsize=3,
                 color=[colour(v) for v in variants])
        axis.set_xticks(range(len(variants)), variants, rotation=60, ha="right", fontsize=7)
        axis.set_title(title, fontsize=9)
    save(figure, path)


def plot_label_fractions(grouped: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    panels = (("classification", "AUROC {}", "linear-probe AUROC"), ("segmentation", "Dice lesion images {}", "segmentation Dice (lesion images)"),
              ("detection", "mAP {}", "detection mAP (IoU 0.4-0.75)"))
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    x = [float(f) * 100 for f in FRACTIONS]
    for variant, tasks in grouped.items():
        for axis, (task, template, title) in zip(axes, panels):
            values = [tasks.get(task, {}).get(template.format(f)) for f in FRACTIONS]
            if all(values):
                means, stds = zip(*(mean_std(v) for v in values))
                axis.errorbar(x, means, yerr=stds, marker="o", capsize=3, label=variant, color=colour(variant),
                              linestyle="--" if variant == "random_init" else "-")
            axis.set(xscale="log", xlabel="labelled fraction (%)", title=title)
    axes[0].legend(fontsize=8)
    save(figure, path)


def plot_grounding(model_dir: Path, path: Path, data: argparse.Namespace, count: int = 6) -> None:
    """Heat maps of the first `count` grounding sentences (test split) over their images, masks outlined."""
    import matplotlib.pyplot as plt

    from modeling_place.evaluation.downstream import load_pretrained, pixels_of, segmentation_labels
    from modeling_place.evaluation.tasks import grounding_maps
    from modeling_place.data.synthetic_cxr import build_split

    settings = argparse.Namespace(model=str(model_dir))
    model, processor, image_processor = load_pretrained(settings)
    split = build_split("ground", cache_dir=data.data_cache, image_size=data.image_size)["test"]
    rows = split.select(range(count))[:]
    pixels = pixels_of(image_processor, rows)
    maps = grounding_maps(model, processor, pixels, rows["sentence"])
    masks = segmentation_labels(image_processor, rows, "mask")
    figure, axes = plt.subplots(1, count, figsize=(3.2 * count, 3.8))
    for axis, image, heat, mask, sentence in zip(axes, pixels, maps, masks.numpy(), rows["sentence"]):
        axis.imshow(image.mean(0), cmap="gray")
        axis.imshow(heat, cmap="jet", alpha=0.4)
        axis.contour(mask, levels=[0.5], colors="white", linewidths=1.2)
        axis.set_title(sentence if len(sentence) < 40 else sentence[:37] + "...", fontsize=8)
        axis.axis("off")
    save(figure, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/ablation")
    parser.add_argument("--output_dir", default="docs/results/ablation")
    parser.add_argument("--grounding_model", default="runs/ablation/place_soft/model")
    parser.add_argument("--image_size", type=int, default=256, help="synthetic image size (as evaluate.py)")
    parser.add_argument("--data_cache", default=None, help="synthetic data cache (default $PLACE_DATA_CACHE)")
    args = parser.parse_args(argv)
    runs = collect(Path(args.root))
    if not runs:
        raise SystemExit(f"no finished run under {args.root}: run examples/ablation.py first")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    grouped = by_variant(runs)
    summary = {"runs": {k: {**v, "log": None} for k, v in runs.items()},
               "variants": {v: {t: {m: dict(zip(("mean", "std"), mean_std(x)), n=len(x)) for m, x in row.items()}
                                for t, row in tasks.items()} for v, tasks in grouped.items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    tables = {"table.md": metric_table(grouped), "sweep.md": metric_table(grouped, SWEEP_COLUMNS)}
    for name, table in tables.items():
        (out / name).write_text(table)
    plot_training_curves({k: v for k, v in runs.items() if v["log"]}, out / "training_curves.png")
    plot_label_fractions(grouped, out / "label_fractions.png")
    plot_headline(grouped, out / "headline.png")
    if Path(args.grounding_model).exists():
        plot_grounding(Path(args.grounding_model), out / "grounding.png", args)
    print(*tables.values(), sep="\n")
    print(f"written to {out}/")


if __name__ == "__main__":
    main()
