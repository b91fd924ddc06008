"""The downstream protocols of docs/METHOD.md on the synthetic benchmark, shared by `examples/` and `examples/evaluate.py`.

Each `run_*` function takes a pretrained PLACE folder and an `argparse.Namespace`-like settings object, trains
what the protocol trains (validation-based checkpoint selection, never test), evaluates on test and returns
a JSON-ready dict. Data come from `modeling_place.data.synthetic_cxr.build_split`; images are processed in batches on
the fly (no dataset-sized tensors). Frozen-encoder linear probes train on cached CLS features.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .functional import cider_d, corpus_bleu, detection_map, dice_per_image, multilabel_auroc, rouge_l
from modeling_place.processing import PlaceImageProcessor
from modeling_place.training.finetune import (
    LR_SCHEDULES, FitConfig, HeadTask, epoch_learning_rate, fit, head_mixed_precision, rows_seeded,
)

if TYPE_CHECKING:
    from modeling_place import PlaceModel

DETECTION_TASKS = {"opacity": ("opacity_boxes", "opacity_categories"), "device": ("device_boxes", "device_categories")}
SEGMENTATION_TASKS = {"pneumothorax": "pneumothorax_mask", "opacity": "opacity_mask"}


# ----------------------------------------------------------------------------------------------------------
# Set-up
# ----------------------------------------------------------------------------------------------------------
def task_image_processor(config: Any) -> PlaceImageProcessor:
    """Eval-mode image processor for a model: crop = the model's input size, canvas 256/224 of it."""
    crop = config.image_size
    canvas = round(crop * 256 / 224)
    return PlaceImageProcessor(size={"height": canvas, "width": canvas}, crop_size={"height": crop, "width": crop})


def load_split(name: str, settings: Any):
    """A synthetic benchmark split (`settings.size` scales it; None = docs/BENCHMARK.md sizes). Under DDP the
    main process builds the cache and the others then read it."""
    from modeling_place.data.synthetic_cxr import build_split
    from modeling_place.training.data import distributed_state

    with distributed_state().main_process_first():
        return build_split(name, cache_dir=settings.data_cache, seed=settings.seed, size=settings.size,
                           image_size=settings.image_size)


def is_main_process() -> bool:
    """False on the other ranks of a multi-process launch: they train, the main process writes the files."""
    from modeling_place.training.data import distributed_state

    return distributed_state().is_main_process


def fraction_of(dataset: Any, fraction: float, seed: int) -> Any:
    from modeling_place.data.synthetic_cxr import label_fraction_subset

    return label_fraction_subset(dataset, fraction, seed)


def batches(
    dataset: Any, batch_size: int, shuffle: bool = False, seed: int | Sequence[int] = 0
) -> Iterator[dict[str, list]]:
    """Column-dict batches of a `datasets.Dataset` (a fresh permutation per call when shuffling)."""
    order = shuffled(len(dataset), seed) if shuffle else np.arange(len(dataset))
    for start in range(0, len(dataset), batch_size):
        yield dataset[order[start : start + batch_size].tolist()]


def pixels_of(processor: PlaceImageProcessor, rows: dict[str, list], train: bool = False) -> torch.Tensor:
    return processor(rows["image"], return_tensors="pt", do_augment=train)["pixel_values"]


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    path = Path(path)
    if is_main_process():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2, default=float))
    return path


def load_pretrained(settings: Any) -> tuple[PlaceModel, Any, PlaceImageProcessor]:
    """The pretrained `PlaceModel` (fp32, eval mode), its processor and the eval-mode image processor of its input.

    Used by the training-free protocols (zero-shot, retrieval, grounding); `settings.model` is the folder.
    """
    from transformers import AutoProcessor

    from modeling_place import PlaceModel

    model = PlaceModel.from_pretrained(settings.model, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(settings.model)  # `import processing` registered PlaceProcessor
    return model, processor, task_image_processor(model.config)


def random_init_copy(model_dir: str | Path, output_dir: str | Path, seed: int) -> str:
    """A folder with `model_dir`'s configuration and processor but freshly initialised weights (the baseline
    every pretrained encoder must beat); returns its path."""
    from transformers import AutoProcessor

    from modeling_place import PlaceConfig, PlaceModel

    folder = Path(output_dir) / "random-init-encoder"
    torch.manual_seed(seed)
    PlaceModel(PlaceConfig.from_pretrained(model_dir)).save_pretrained(folder)
    AutoProcessor.from_pretrained(model_dir).save_pretrained(folder)
    return str(folder)


def load_head(
    head_class: Any, settings: Any, label_names: Sequence[str], **config: Any
) -> tuple[Any, PlaceImageProcessor]:
    """A fresh fp32 head on the pretrained encoder of `settings.model`, one class per name, and its image processor.

    `config` holds further config overrides (e.g. `problem_type`, `freeze_encoder`).
    """
    id2label = dict(enumerate(label_names))
    head = head_class.from_pretrained(settings.model, num_labels=len(label_names), id2label=id2label,
                                      label2id={name: index for index, name in id2label.items()}, dtype=torch.float32,
                                      **config)
    return head, task_image_processor(head.config)


def fit_labelled(
    head: Any,
    processor: PlaceImageProcessor,
    train: Any,
    labels_of: Callable[[dict[str, list]], Any],
    validate: Callable[[], float],
    settings: Any,
    augment: bool = False,
) -> dict[str, Any]:
    """`fit` a head on `train` (each epoch a fresh shuffle) with `pixel_values` and `labels_of(rows)` as targets.

    `augment` turns on the image processor's random augmentation (seeded by the batch's rows); keep it off when
    the labels are geometric (masks, boxes), since they are mapped into the eval-mode crop.
    """

    # A small label fraction is passed over several times per epoch (up to `min_epoch_examples`), so that it gets
    # enough optimiser steps between validations instead of a handful of steps at 1 %.
    passes = max(1, math.ceil(getattr(settings, "min_epoch_examples", 0) / max(len(train), 1)))
    seed = getattr(settings, "head_seed", 0)

    def epoch_order(epoch: int) -> list[np.ndarray]:
        return [shuffled(len(train), [seed, epoch * passes + repeat]) for repeat in range(passes)]

    def make_batch(indices: list[int]) -> dict[str, Any]:
        rows = train[indices]
        with rows_seeded(indices, seed):
            pixels = pixels_of(processor, rows, train=augment)
        return {"pixel_values": pixels, "labels": labels_of(rows)}

    return fit(HeadTask(head, len(train), epoch_order, make_batch, validate), fit_config(settings))


def fit_config(settings: Any) -> FitConfig:
    """The `FitConfig` of a protocol's flags (`add_common_arguments`); a head of `fine_tune_fractions` gets its
    own folder under `--run_dir` (`settings.head_name`)."""
    run_dir = getattr(settings, "run_dir", None)
    if run_dir is not None and getattr(settings, "head_name", None):
        run_dir = str(Path(run_dir) / settings.head_name)
    return FitConfig(
        epochs=settings.epochs, lr=settings.lr, batch_size=settings.batch_size,
        grad_accum=getattr(settings, "grad_accum", 1), lr_schedule=getattr(settings, "lr_schedule", "cosine"),
        mixed_precision=getattr(settings, "mixed_precision", "auto"), seed=getattr(settings, "head_seed", 0),
        run_dir=run_dir, checkpoint_every=getattr(settings, "checkpoint_every", 0),
        trackers=list(getattr(settings, "report_to", None) or []),
        logging_dir=str(Path(getattr(settings, "output_dir", ".")) / "logs"),
        project=getattr(settings, "head_name", None) or "place-head",
        progress_bar=getattr(settings, "progress_bar", False),
    )


def shuffled(count: int, seed: int | Sequence[int]) -> np.ndarray:
    """The permutation of `range(count)` that `batches(..., shuffle=True, seed=seed)` walks."""
    return np.random.default_rng(seed).permutation(count)


def fine_tune_fractions(
    settings: Any, train: Any, name: str, repo_name: str, train_head: Callable[[Any], tuple[Any, Any, dict[str, Any]]]
) -> tuple[dict[str, dict[str, Any]], dict[str, Path]]:
    """Train `settings.repeats` heads per label fraction (`settings.fractions`) of `train`; save the best-validated.

    `train_head(subset)` returns the trained head, its image processor and that head's results (test metrics
    and `fit`'s history). Head `r` starts from `torch.manual_seed(head_seed(settings.seed, r))` and shuffles with
    that seed too, so two encoders evaluated with the same seed get the same head initialisations and batch
    orders: a paired comparison. Returns the results keyed by fraction (`"0.01"`: `summarise_repeats`, with
    `train_examples`) and the folders `<output_dir>/<name>-<fraction>` keyed by Hub repository suffix
    `-<repo_name>-<fraction>`, as `write_results` takes them.
    """
    repeats = getattr(settings, "repeats", 1)
    if repeats < 1:
        raise ValueError(f"--repeats must be at least 1 (heads per label fraction), got {repeats}")
    results, heads = {}, {}
    for fraction in settings.fractions:
        print(f"-- {name}, fraction {fraction:.0%}")
        subset = fraction_of(train, fraction, settings.seed)
        trained = []
        for repeat in range(repeats):
            settings.head_seed = head_seed(settings.seed, repeat)
            settings.head_name = f"{name}-{fraction:g}-{repeat}"  # its checkpoints' folder under --run_dir
            torch.manual_seed(settings.head_seed)
            trained.append(train_head(subset))
        best = max(range(len(trained)), key=lambda index: trained[index][2]["best_validation"])
        results[f"{fraction:g}"] = {**summarise_repeats([result for _, _, result in trained], best),
                                    "train_examples": len(subset)}
        folder = Path(settings.output_dir) / f"{name}-{fraction:g}"
        heads[f"-{repo_name}-{fraction:g}"] = save_head(trained[best][0], trained[best][1], folder)
    return results, heads


def head_seed(seed: int, repeat: int) -> int:
    """The seed of head `repeat` under benchmark seed `seed`."""
    return 1000 * seed + repeat


def summarise_repeats(results: list[dict[str, Any]], kept: int) -> dict[str, Any]:
    """The kept head's own results (what its saved folder and model card report); with several heads also
    `mean` and `std` (sample) of every `test_*` number over the heads, and each head's results (`repeats`)."""
    summary = dict(results[kept])
    if len(results) > 1:
        keys = [key for key, value in summary.items() if key.startswith("test_") and isinstance(value, float)]
        values = {key: [result[key] for result in results] for key in keys}
        summary.update(mean={key: float(np.mean(v)) for key, v in values.items()},
                       std={key: float(np.std(v, ddof=1)) for key, v in values.items()},
                       kept_repeat=kept, repeats=results)
    return summary


def to_model_device(model: torch.nn.Module, tensors: Any) -> Any:
    """Tensors (or a mapping / list of them) onto the device of `model`'s parameters: after `fit` a head may sit
    on a GPU while the processors produce CPU tensors."""
    from accelerate.utils import send_to_device

    return send_to_device(tensors, next(model.parameters()).device)


# ----------------------------------------------------------------------------------------------------------
# Classification
# ----------------------------------------------------------------------------------------------------------
@torch.no_grad()
def classification_scores(model: Any, processor: Any, dataset: Any, batch_size: int) -> np.ndarray:
    """Sigmoid (multi-label) or softmax scores `(N, C)` of a classification head."""
    model.eval()
    outputs = [model(pixel_values=to_model_device(model, pixels_of(processor, rows))).logits.float().cpu()
               for rows in batches(dataset, batch_size)]
    logits = torch.cat(outputs)
    multi = model.config.problem_type == "multi_label_classification"
    return (logits.sigmoid() if multi else logits.softmax(-1)).numpy()


@torch.no_grad()
def cls_features(model: Any, processor: Any, dataset: Any, batch_size: int) -> torch.Tensor:
    """Final-norm CLS features `(N, D_v)` of a classification head's (frozen) encoder."""
    model.eval()
    return torch.cat([model.split_tokens(model.encode(to_model_device(model, pixels_of(processor, rows))))[0].float().cpu()
                      for rows in batches(dataset, batch_size)])


def auroc_of(scores: np.ndarray, dataset: Any, names: Sequence[str]) -> dict[str, Any]:
    return multilabel_auroc(scores, np.asarray(dataset["labels"]), names)


# ----------------------------------------------------------------------------------------------------------
# Segmentation
# ----------------------------------------------------------------------------------------------------------
def segmentation_labels(processor: Any, rows: dict[str, list], column: str) -> torch.Tensor:
    """Masks of a batch mapped into the model input's crop: `(B, H, W)` long, 1 = foreground."""
    masks = np.stack([np.asarray(image, dtype=np.uint8) > 0 for image in rows[column]])
    return processor.masks_to_model(masks.astype(np.uint8))


@torch.no_grad()
def segmentation_dice(model: Any, processor: Any, dataset: Any, column: str, batch_size: int) -> dict[str, float]:
    """Mean per-image Dice of the foreground at the model input's resolution (1 where both masks are empty), over
    all images (`dice`) and over the images that contain the lesion (`dice_positive`)."""
    model.eval()
    scores, positive = [], []
    for rows in batches(dataset, batch_size):
        outputs = model(pixel_values=to_model_device(model, pixels_of(processor, rows)))
        predicted = torch.stack(processor.post_process_semantic_segmentation(outputs)).cpu()
        references = segmentation_labels(processor, rows, column).numpy() == 1
        scores.append(dice_per_image(predicted.numpy() == 1, references))
        positive.append(references.any(axis=(1, 2)))
    scores, positive = np.concatenate(scores), np.concatenate(positive)
    # Dice on images with a lesion: an all-background prediction scores 0 here, not the empty-image share.
    return {"dice": float(scores.mean()), "dice_positive": float(scores[positive].mean()) if positive.any() else 0.0}


# ----------------------------------------------------------------------------------------------------------
# Detection
# ----------------------------------------------------------------------------------------------------------
def detection_labels(processor: Any, rows: dict[str, list], task: str) -> list[dict[str, torch.Tensor]]:
    """DETR-style targets of a batch: normalised `(cx, cy, w, h)` boxes in the crop and their classes."""
    box_column, class_column = DETECTION_TASKS[task]
    labels = []
    for image, boxes, classes in zip(rows["image"], rows[box_column], rows[class_column]):
        converted, keep = processor.boxes_to_model(np.asarray(boxes, np.float32).reshape(-1, 4), image.height, image.width)
        labels.append({"boxes": converted[keep], "class_labels": torch.as_tensor(classes, dtype=torch.long).reshape(-1)[keep]})
    return labels


@torch.no_grad()
def detection_scores(model: Any, processor: Any, dataset: Any, task: str, batch_size: int,
                     threshold: float = 0.05) -> dict[str, Any]:
    """Benchmark mAP (IoU 0.40:0.05:0.75) and COCO mAP on crop-normalised boxes."""
    from modeling_place.heads_place import box_cxcywh_to_xyxy

    model.eval()
    predictions, references = [], []
    for rows in batches(dataset, batch_size):
        outputs = model(pixel_values=to_model_device(model, pixels_of(processor, rows)))
        for result, target in zip(processor.post_process_object_detection(outputs, threshold), detection_labels(processor, rows, task)):
            predictions.append({k: v.cpu().numpy() for k, v in result.items()})
            references.append({"boxes": box_cxcywh_to_xyxy(target["boxes"]).numpy(), "labels": target["class_labels"].numpy()})
    benchmark = detection_map(predictions, references, np.round(np.linspace(0.4, 0.75, 8), 2))
    return {"map": benchmark["map"], "coco_map": detection_map(predictions, references)["map"],
            "per_class": benchmark["per_class"]}


# ----------------------------------------------------------------------------------------------------------
# Report generation
# ----------------------------------------------------------------------------------------------------------
def report_targets(text_processor: Any, reports: Sequence[str], max_length: int) -> tuple[list[str], torch.Tensor]:
    """The processor's sentences of each report joined, and their token ids `(B, L)` ([CLS] … [SEP], padded)."""
    texts = [" ".join(text_processor.report_sentences(report)) for report in reports]
    ids = text_processor.tokenizer(texts, padding="longest", truncation=True, max_length=max_length,
                                   return_tensors="pt")["input_ids"]
    return texts, ids


@torch.no_grad()
def report_metrics(model: Any, image_processor: Any, text_processor: Any, dataset: Any, batch_size: int,
                   num_beams: int, max_new_tokens: int) -> dict[str, float]:
    """BLEU-1..4, ROUGE-L and CIDEr-D of generated reports against the processed reference reports."""
    model.eval()
    generated, references = [], []
    for rows in batches(dataset, batch_size):
        sequences = model.generate(pixel_values=to_model_device(model, pixels_of(image_processor, rows)),
                                   num_beams=num_beams, max_new_tokens=max_new_tokens).cpu()
        generated += text_processor.tokenizer.batch_decode(sequences, skip_special_tokens=True)
        references += report_targets(text_processor, rows["report"], model.config.decoder_max_length)[0]
    return {**corpus_bleu(generated, references), "rouge_l": rouge_l(generated, references),
            "cider": cider_d(generated, references), "example": generated[0] if generated else ""}


class Stopwatch:
    """Seconds since construction, for the results files."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return round(time.perf_counter() - self.start, 2)


# ----------------------------------------------------------------------------------------------------------
# Shared command line
# ----------------------------------------------------------------------------------------------------------
def add_data_arguments(
    parser: Any, batch_size: int = 64, size_help: str = "first subset size of the synthetic split (None: docs/BENCHMARK.md)",
    several_models: bool = False,
) -> Any:
    """The flags of every example: pretrained folder(s), output folder, synthetic data, seed and batch size."""
    parser.add_argument("--model", required=True, nargs="+" if several_models else None,
                        help="pretrained PLACE folder(s) (model + processor)" + (", one per seed" if several_models else ""))
    parser.add_argument("--output_dir", default="runs/downstream", help="results JSON and selected checkpoints")
    parser.add_argument("--size", type=int, default=None, help=size_help)
    parser.add_argument("--image_size", type=int, default=256, help="synthetic image size in pixels")
    parser.add_argument("--data_cache", default=None, help="synthetic data cache (default $PLACE_DATA_CACHE)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=batch_size)
    return parser


def add_common_arguments(parser: Any, epochs: int = 10, lr: float = 1e-3, batch_size: int = 32) -> Any:
    """The flags of every fine-tuning example: `add_data_arguments`, optimisation and Hub publication."""
    add_data_arguments(parser, batch_size)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--lr_schedule", choices=LR_SCHEDULES, default="cosine",
                        help="cosine decay over the epochs, or constant (the ablation study's light budget)")
    parser.add_argument("--mixed_precision", choices=("auto", "bf16", "fp16", "no"), default="auto",
                        help="the heads' precision (accelerate): auto = bf16 on a GPU that supports it, fp32 on CPU")
    parser.add_argument("--grad_accum", type=int, default=1, help="batches per optimizer step (per process)")
    parser.add_argument("--run_dir", default=None,
                        help="checkpoint folder: a killed run started again with the same command resumes exactly "
                             "(one subfolder per head); default: no checkpoints")
    parser.add_argument("--checkpoint_every", type=int, default=0,
                        help="with --run_dir: optimizer steps between checkpoints inside an epoch (0: epoch ends only)")
    parser.add_argument("--report_to", nargs="*", default=[],
                        help="trackers for the heads' epoch records (accelerate's: tensorboard, trackio, wandb, ...)")
    parser.add_argument("--progress_bar", action="store_true", help="a tqdm bar over each head's steps")
    parser.add_argument("--min_epoch_examples", type=int, default=0,
                        help="repeat a smaller training subset within each epoch up to this many examples")
    parser.add_argument("--push_to_hub", action="store_true",
                        help="publish the selected checkpoint(s) with processor and model card (modeling_place.publishing.publish)")
    parser.add_argument("--hub_model_id", default=None, help="repository id for --push_to_hub")
    return parser


def add_fraction_arguments(parser: Any, tasks: Sequence[str] = (), default_task: str | None = None) -> Any:
    """`--fractions` (label fractions of the train split, docs/METHOD.md's 1/10/100 %) and, given `tasks`, `--task`."""
    if tasks:
        parser.add_argument("--task", choices=sorted(tasks), default=default_task)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    parser.add_argument("--repeats", type=int, default=1,
                        help="heads per fraction, each from its own seed; the results give their mean and std")
    return parser


def _check_hub_settings(settings: Any) -> None:
    if getattr(settings, "push_to_hub", False) and not settings.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id")


def run_from_command_line(
    name: str, parser: Callable[[], Any], run: Callable[[Any], dict], argv: Sequence[str] | None = None
) -> dict:
    """A protocol's entry point: parse its flags (checked before any training), print them, `run` them."""
    settings = parser().parse_args(argv)
    _check_hub_settings(settings)
    print(f"{name} configuration:", json.dumps(vars(settings), indent=2))
    return run(settings)


def save_head(model: Any, processor: Any, folder: str | Path) -> Path:
    """Save a trained head with the processor it was evaluated with, so that the folder loads and publishes alone
    (the main process writes it)."""
    if is_main_process():
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
    return Path(folder)


def write_results(
    settings: Any, name: str, payload: dict[str, Any], heads: Mapping[str, Path] | None = None
) -> dict[str, Any]:
    """Write `<output_dir>/<name>.json`; with `--push_to_hub`, publish each saved head with it as the card's results.

    `heads` maps a repository suffix (appended to `--hub_model_id`) to a folder written by `save_head`. Each
    goes through `modeling_place.publishing.publish`: complete `auto_map`, custom code, processor files and a model card whose
    `model-index` comes from the results file just written.
    """
    results_path = write_json(Path(settings.output_dir) / f"{name}.json", payload)
    if getattr(settings, "push_to_hub", False) and is_main_process():
        _check_hub_settings(settings)
        from modeling_place.publishing import publish

        for suffix, folder in (heads or {}).items():
            info = publish(folder, settings.hub_model_id + suffix, results_path=results_path)
            print(f"   published {folder} to {info.repo_url} at commit {info.oid}")
    return payload


class LinearProbe(torch.nn.Module):
    """A classification head's classifier applied to cached CLS features (identical to its forward)."""

    def __init__(self, head: Any) -> None:
        super().__init__()
        self.head = head

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> Any:
        from transformers.modeling_outputs import ImageClassifierOutput

        logits = self.head.classifier(self.head.dropout(features))
        target = labels.to(logits.dtype) if self.head.config.problem_type == "multi_label_classification" else labels
        return ImageClassifierOutput(loss=self.head.loss_function(target, logits, self.head.config), logits=logits)


__all__ = [
    "DETECTION_TASKS",
    "LR_SCHEDULES",
    "SEGMENTATION_TASKS",
    "LinearProbe",
    "Stopwatch",
    "add_common_arguments",
    "add_data_arguments",
    "add_fraction_arguments",
    "auroc_of",
    "batches",
    "classification_scores",
    "cls_features",
    "detection_labels",
    "detection_scores",
    "epoch_learning_rate",
    "FitConfig",
    "HeadTask",
    "fine_tune_fractions",
    "fit",
    "fit_config",
    "fit_labelled",
    "fraction_of",
    "head_mixed_precision",
    "is_main_process",
    "head_seed",
    "load_head",
    "load_pretrained",
    "load_split",
    "pixels_of",
    "random_init_copy",
    "report_metrics",
    "report_targets",
    "run_from_command_line",
    "save_head",
    "segmentation_dice",
    "segmentation_labels",
    "shuffled",
    "summarise_repeats",
    "task_image_processor",
    "to_model_device",
    "write_json",
    "write_results",
]
