"""Publish saved PLACE folders (the pretrained model or a downstream head) to the Hugging Face Hub.

Three steps, each usable on its own:

* `complete_auto_map(folder)` writes every Auto class the folder serves into `config.json` (AutoConfig, plus
  AutoModel for the pretrained model or the head's AutoModelFor<Task>: heads hold no text tower) and into
  the processor configs (AutoProcessor, AutoImageProcessor), and copies any custom-code module those entries
  need, with the modules it imports relatively, from the installed `modeling_place` / `processing` packages.
  The repository then loads with `trust_remote_code=True` for people without the package.
* `render_model_card(folder, variant, results_path)` renders `model_cards/<variant>.md` into a
  `huggingface_hub.ModelCard`: metadata (`library_name`, `pipeline_tag`, `license`, `tags`, `datasets`,
  `base_model`, and a `model-index` read from an evaluation results JSON), then the card's sections.
* `publish(folder, repo_id, ...)` stages a copy of the folder, completes it, validates and writes the card,
  uploads it as one commit (each revision mirrors the folder exactly), then pins the card's loading snippet to
  that commit's sha in a second, card-only commit. The token comes from `HF_TOKEN` or `hf auth login` and is
  never printed.

Results JSON files accepted by `eval_results_from_file`; nested keys are joined with "/", and only test
metrics are kept (AUROC, accuracy, Dice, mAP, BLEU, ROUGE, CIDEr, P@K, pointing game, IoU, ...; not
`history`, `per_label`, `train_*`, `val*`, `best_*`):

* `examples/evaluate.py`'s `results.json`: `{"model", "quick", "table": {task: {metric: value}}, ...}`, one
  model-index result per task (the card of the pretrained model);
* a task script's file (`examples/finetune_classification.py`, `zero_shot.py`, ...): `{"task": name,
  "results": {...}}`, e.g. `{"task": "classification", "results": {"0.01": {"test_auroc": 0.8, ...}}}`;
* `{"task": ..., "dataset": "name" | {"name", "type", "split"}, "metrics": {...}}`, or a list of such entries
  under `"results"`; `{"model-index": [...]}` as on the Hub is used as it is.

Without a `dataset`, results are attributed to the synthetic benchmark (the scripts' default data); a
`"quick": true` file is flagged in the card as smoke-test numbers.
"""

from __future__ import annotations

import importlib
import importlib.resources
import inspect
import json
import math
import os
import re
import shutil
import string
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.repocard_data import model_index_to_eval_results

__all__ = [
    "VARIANTS",
    "Variant",
    "complete_auto_map",
    "detect_variant",
    "eval_results_from_file",
    "publish",
    "render_model_card",
]

#: Packages whose classes can be shipped as Hub custom code.
CODE_PACKAGES = ("modeling_place", "processing")
#: Default folder of the card templates: the repository's `model_cards/`, installed as package data
#: (`modeling_place.model_cards`), so a wheel install renders cards too.
TEMPLATE_DIR = Path(str(importlib.resources.files("modeling_place.model_cards")))
SYNTHETIC_DATASET = {"name": "PLACE synthetic chest X-ray benchmark", "type": "place-synthetic-cxr"}
BASE_TAGS = ("place", "medical-imaging", "chest-x-ray", "radiology", "vision-language", "custom_code")
_MODEL_FILES = ("model.safetensors", "model.safetensors.index.json")
#: Hub task types of the evaluation scripts' task names (`examples/*.py`, the part before any "/").
TASK_TYPES = {"classification": "image-classification", "zero_shot": "zero-shot-image-classification",
              "retrieval": "image-feature-extraction", "segmentation": "image-segmentation",
              "detection": "object-detection", "report_generation": "image-to-text"}
_METRIC_NAME = re.compile(r"auroc|auc|accuracy|dice|map|bleu|rouge|cider|meteor|precision|p@|recall|pointing|iou|f1",
                          re.IGNORECASE)
# bookkeeping, and the other heads of a `--repeats` run (a card reports the published head's own numbers)
_NOT_METRICS = {"history", "per_label", "example", "prompts", "skipped_labels", "mean", "std", "repeats"}
_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


@dataclass(frozen=True)
class Variant:
    """What a kind of PLACE checkpoint is on the Hub: its class, Auto class, pipeline tag and task."""

    architecture: str
    auto_class: str
    pipeline_tag: str
    task_name: str
    tags: tuple[str, ...] = ()


VARIANTS: dict[str, Variant] = {
    "pretrained": Variant("PlaceModel", "AutoModel", "zero-shot-image-classification",
                          "Image-report retrieval and zero-shot classification", ("contrastive-learning",)),
    "classification": Variant("PlaceForImageClassification", "AutoModelForImageClassification",
                              "image-classification", "Multi-label finding classification", ("multi-label",)),
    "segmentation": Variant("PlaceForSemanticSegmentation", "AutoModelForSemanticSegmentation",
                            "image-segmentation", "Semantic segmentation", ("semantic-segmentation",)),
    "detection": Variant("PlaceForObjectDetection", "AutoModelForObjectDetection", "object-detection",
                         "Object detection"),
    "report_generation": Variant("PlaceForReportGeneration", "AutoModelForImageTextToText", "image-to-text",
                                 "Radiology report generation", ("report-generation",)),
}


# ------------------------------------------------------------------------------------------------ folders
def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error


def _write_json(path: Path, content: dict[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _model_config(folder: Path) -> dict[str, Any]:
    config = _read_json(folder / "config.json")
    if config.get("model_type") != "place":
        raise ValueError(f"{folder / 'config.json'} has model_type {config.get('model_type')!r}, not 'place'")
    return config


def detect_variant(folder: str | os.PathLike) -> str:
    """The variant of a saved folder, from the first entry of `architectures` in its `config.json`."""
    folder = Path(folder)
    architectures = _model_config(folder).get("architectures") or []
    for name, variant in VARIANTS.items():
        if variant.architecture in architectures:
            return name
    known = [variant.architecture for variant in VARIANTS.values()]
    raise ValueError(f"{folder / 'config.json'}: architectures {architectures} is none of {known}")


def _find_class(name: str) -> type:
    """A class exported by one of the installed PLACE packages (`modeling_place`, `processing`)."""
    for package in CODE_PACKAGES:
        try:
            module = importlib.import_module(package)
        except ImportError:
            continue
        if hasattr(module, name):
            return getattr(module, name)
    raise ValueError(f"Class {name!r} is not exported by the installed packages {list(CODE_PACKAGES)}")


def _code_reference(cls: type) -> str:
    """`module.Class` as `auto_map` names it: the module is the flat file that defines the class."""
    return f"{Path(inspect.getsourcefile(cls)).stem}.{cls.__name__}"


# ------------------------------------------------------------------------------------------------ auto_map
def _model_auto_map(variant: Variant) -> dict[str, str]:
    model_class = _find_class(variant.architecture)
    auto_map = {"AutoConfig": _code_reference(_find_class("PlaceConfig"))}
    for auto_class in {variant.auto_class, getattr(model_class, "_auto_class", None)} - {None}:
        auto_map[auto_class] = _code_reference(model_class)
    return auto_map


def _processor_auto_maps(folder: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(file, completed content) for each processor config present in `folder`."""
    for name in _PROCESSOR_FILES:
        path = folder / name
        if not path.is_file():
            continue
        content = _read_json(path)
        if "processor_class" in content:
            content["auto_map"] = {**content.get("auto_map", {}),
                                   "AutoProcessor": _code_reference(_find_class(content["processor_class"]))}
        for target in filter(None, [content, content.get("image_processor")]):  # standalone or nested
            if "image_processor_type" in target:
                reference = _code_reference(_find_class(target["image_processor_type"]))
                target["auto_map"] = {**target.get("auto_map", {}), "AutoImageProcessor": reference}
        yield path, content


def _copy_code(folder: Path, reference: str) -> None:
    """Copy the module of `reference` and the modules it imports relatively into `folder` where missing."""
    from transformers.dynamic_module_utils import get_relative_import_files

    source = Path(inspect.getsourcefile(_find_class(reference.split(".")[-1])))
    for module_file in [source, *map(Path, get_relative_import_files(source))]:
        if not (folder / module_file.name).is_file():
            shutil.copyfile(module_file, folder / module_file.name)


def complete_auto_map(folder: str | os.PathLike) -> dict[str, dict[str, str]]:
    """Write the full `auto_map` of every config file in `folder` and copy the custom code it needs.

    Returns:
        `{file name: auto_map}` for `config.json`, each processor config present and, as
        `"processor_config.json:image_processor"`, the image processor nested in a processor config. Each entry
        is `module.Class` with `module.py` in the folder (copied from the installed package if it was missing).
    """
    folder = Path(folder)
    config = _model_config(folder)
    # A head holds the image encoder only: `AutoModel` (the full PlaceModel) is served by pretrained repos alone.
    kept = {name: ref for name, ref in config.get("auto_map", {}).items() if name != "AutoModel"}
    config["auto_map"] = {**kept, **_model_auto_map(VARIANTS[detect_variant(folder)])}
    _write_json(folder / "config.json", config)
    maps = {"config.json": config["auto_map"]}
    for path, content in _processor_auto_maps(folder):
        _write_json(path, content)
        maps[path.name] = content["auto_map"]
        if isinstance(content.get("image_processor"), dict):
            maps[f"{path.name}:image_processor"] = content["image_processor"]["auto_map"]
    for auto_map in maps.values():
        for reference in auto_map.values():
            _copy_code(folder, reference)
    return maps


# ------------------------------------------------------------------------------------------------ results
def _is_metric(path: tuple[str, ...]) -> bool:
    """A test metric: some key names one (AUROC, Dice, mAP, BLEU, P@K...) and none is bookkeeping."""
    if any(key in _NOT_METRICS or key.lower().startswith(("train", "val", "best")) for key in path):
        return False
    return any(_METRIC_NAME.search(key) for key in path)


def _metrics(values: Mapping[str, Any], path: tuple[str, ...] = ()) -> dict[str, float]:
    """The metrics among the numeric leaves of a nested mapping, keyed by their path joined with "/"."""
    found: dict[str, float] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            found.update(_metrics(value, (*path, str(key))))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and _is_metric((*path, str(key))):
            found["/".join((*path, str(key)))] = value
    return found


def _dataset_fields(dataset: Any) -> dict[str, Any]:
    if isinstance(dataset, str):
        return {"dataset_name": dataset, "dataset_type": dataset}
    dataset = dataset if isinstance(dataset, Mapping) else {}
    name = dataset.get("name") or dataset.get("type") or SYNTHETIC_DATASET["name"]
    kind = dataset.get("type") or (name if dataset.get("name") else SYNTHETIC_DATASET["type"])
    return {"dataset_name": name, "dataset_type": kind, "dataset_split": dataset.get("split")}


def _entry_results(entry: Mapping[str, Any], variant: Variant, source: str) -> list[EvalResult]:
    metrics = _metrics(entry.get("metrics", entry.get("results")) or {})
    if not metrics:
        raise ValueError(f"{source}: no test metric (AUROC, Dice, mAP, BLEU, P@K, ...) in an entry's results")
    task = entry.get("task") if isinstance(entry.get("task"), str) else None
    task_type = TASK_TYPES.get(task.split("/")[0], task) if task else variant.pipeline_tag
    fields = {"task_type": task_type, "task_name": task or variant.task_name, **_dataset_fields(entry.get("dataset"))}
    return [EvalResult(metric_type=name, metric_name=name, metric_value=value, **fields)
            for name, value in metrics.items()]


def eval_results_from_file(results_path: str | os.PathLike, variant: str) -> list[EvalResult]:
    """Read an evaluation results JSON (formats in the module docstring) as `model-index` entries."""
    path = Path(results_path)
    content = _read_json(path)
    if "model-index" in content:
        return model_index_to_eval_results(content["model-index"])[1]
    if isinstance(content.get("table"), Mapping):  # examples/evaluate.py: one row of headline numbers per task
        entries = [{"task": task, "metrics": row, "dataset": content.get("dataset")}
                   for task, row in content["table"].items()]
    else:
        entries = content["results"] if isinstance(content.get("results"), list) else [content]
    return [result for entry in entries for result in _entry_results(entry, VARIANTS[variant], str(path))]


# ------------------------------------------------------------------------------------------------ card
def _parameter_count(folder: Path) -> int | None:
    """Parameters of the saved weights, from the safetensors headers (no tensor is read)."""
    index = folder / "model.safetensors.index.json"
    shards = sorted(set(_read_json(index)["weight_map"].values())) if index.is_file() else ["model.safetensors"]
    if not all((folder / shard).is_file() for shard in shards):
        return None
    total = 0
    for shard in shards:
        with open(folder / shard, "rb") as weights:
            header = json.loads(weights.read(int.from_bytes(weights.read(8), "little")))
        total += sum(math.prod(entry["shape"]) for name, entry in header.items() if name != "__metadata__")
    return total


def _architecture_summary(folder: Path, config: dict[str, Any], variant: str) -> str:
    vision = config.get("vision_config", {})
    model_args = json.dumps(vision.get("model_args") or {})
    lines = [f"- Image encoder: timm `{vision.get('architecture')}` with `{model_args}`"]
    if variant == "pretrained":
        text = config.get("text_config", {})
        lines += [
            (f"- Text encoder: BERT (layers {text.get('num_hidden_layers')}, width {text.get('hidden_size')}, "
             f"vocabulary {text.get('vocab_size')})"),
            (f"- Embedding size {config.get('projection_dim')}, {config.get('num_queries')} pathology queries "
             f"(VPOE), up to {config.get('max_sentences')} sentences per report"),
            (f"- Objective weights: ITA {config.get('lambda_ita')}, PCMA {config.get('lambda_pcma')}, "
             f"CE {config.get('lambda_ce')} (`ce_mode={config.get('ce_mode')}`)"),
        ]
    else:
        lines += _head_summary(config, variant)
    count = _parameter_count(folder)
    if count is not None:
        lines.append(f"- {count / 1e6:.2f} M parameters (safetensors, `{config.get('dtype') or 'float32'}`)")
    return "\n".join(lines)


def _head_summary(config: dict[str, Any], variant: str) -> list[str]:
    frozen = config.get("freeze_encoder", True)
    lines = [f"- Encoder: {'frozen (linear probe / frozen backbone)' if frozen else 'fine-tuned end to end'}"]
    if variant == "report_generation":
        lines.append(f"- Report decoder: {config.get('decoder_layers')} layers, width "
                     f"{config.get('decoder_hidden_size')}, at most {config.get('decoder_max_length')} tokens")
    elif variant == "detection":
        from modeling_place.heads_place import HEAD_DEFAULTS

        head = {**HEAD_DEFAULTS, **config}  # what loading fills in for an option older than the saved head
        lines.append(f"- Box head: {head['detection_levels']} fused ViT levels, "
                     f"{head['detection_trunk_layers']} trunk convolutions, width {head['detection_hidden_dim']}")
    if variant != "report_generation":
        labels = [config.get("id2label", {})[key] for key in sorted(config.get("id2label", {}), key=int)]
        lines.append(f"- Classes ({len(labels)}): {', '.join(map(str, labels))}")
    return lines


def _preprocessing_summary(folder: Path) -> str:
    path = _processor_config(folder)
    if path is None:
        return ("This repository ships no processor: load the processor (or image processor) of the pretrained "
                "PLACE model this checkpoint was trained from, with the same arguments.")
    content = _read_json(path)
    image = content.get("image_processor", content)
    lines = [
        (f"- Images: grey level, fitted inside {_size(image.get('size'))} (aspect kept, zero-padded), "
         f"centre crop {_size(image.get('crop_size'))}, three channels, mean {image.get('image_mean')}, "
         f"std {image.get('image_std')}; PNG / JPEG / DICOM are read at their own bit depth."),
    ]
    if "processor_class" in content:
        lines.append(f"- Reports: sections {content.get('sections')}, at most {content.get('max_sentences')} "
                     f"sentences and {content.get('max_length')} tokens; each token gets its sentence index "
                     "(`sentence_ids`) and each sentence a hash (`sentence_hashes`) for the PCMA loss.")
    return "\n".join(lines)


def _size(size: Any) -> str:
    return f"{size['height']} x {size['width']}" if isinstance(size, Mapping) else str(size)


def _training_summary(folder: Path) -> str:
    path = folder / "train_config.json"
    if not path.is_file():
        return ("The saved folder records no training configuration (`train_config.json`), so the training data "
                "is not documented here; PLACE's training commands default to the package's synthetic chest X-ray "
                "benchmark (generated radiographs and reports, no patient data).")
    train = _read_json(path)
    dataset = train.get("dataset", "synthetic")
    data = ("the package's synthetic chest X-ray benchmark (generated radiographs with MIMIC-style reports; no "
            "real patient data)" if dataset == "synthetic" else f"`{dataset}` read by the package's readers")
    lines = [f"- Data: {data}",
             (f"- Preset `{train.get('preset')}`, {train.get('max_steps')} steps, batch {train.get('batch_size')} "
              f"x {train.get('grad_accum')} accumulation per device, lr {train.get('lr')}")]
    summary = folder / "training_summary.json"
    if summary.is_file():
        steps = _read_json(summary).get("steps")
        lines.append(f"- Completed steps: {steps} (see `training_summary.json`)")
    return "\n".join(lines)


def _results_table(results: list[EvalResult], source: str | None, quick: bool) -> str:
    if not results:
        return "No evaluation results were provided when this model was published."
    rows = [f"| {r.task_name} | {r.dataset_name} | {r.dataset_split or '-'} | {r.metric_type} | "
            f"{_number(r.metric_value)} |" for r in results]
    note = f"Source: `{source}`." + (" Quick mode: smoke-test sizes, not the full benchmark." if quick else "")
    return "\n".join(["| task | dataset | split | metric | value |", "|---|---|---|---|---|", *rows, "", note])


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else str(value)


def _datasets(folder: Path, results: list[EvalResult]) -> list[str]:
    """The training dataset (when recorded) and the evaluation datasets; the package default otherwise."""
    train = folder / "train_config.json"
    trained_on = [_read_json(train).get("dataset", "synthetic")] if train.is_file() else []
    names = [SYNTHETIC_DATASET["type"] if name == "synthetic" else name for name in trained_on]
    names += [result.dataset_type for result in results]
    return list(dict.fromkeys(names)) or [SYNTHETIC_DATASET["type"]]


def render_model_card(
    folder: str | os.PathLike,
    variant: str | None = None,
    results_path: str | os.PathLike | None = None,
    *,
    repo_id: str | None = None,
    revision: str = "main",
    base_model: str | None = None,
    template_dir: str | os.PathLike | None = None,
) -> ModelCard:
    """Render `model_cards/<variant>.md` for a saved folder as a `huggingface_hub.ModelCard`.

    Args:
        folder: A folder saved with `save_pretrained` (model, optionally the processor).
        variant: One of `VARIANTS`; detected from `config.json` when `None`.
        results_path: An evaluation results JSON; its metrics become the card's `model-index`.
        repo_id / revision: Shown in the loading snippet (publish pins `revision` to the commit sha).
        base_model: The Hub id this checkpoint was trained from (the pretrained PLACE model, for a head).
        template_dir: Folder of the templates (default: the repository's `model_cards/`).
    """
    folder = Path(folder)
    variant = variant or detect_variant(folder)
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; choose one of {sorted(VARIANTS)}")
    spec, config = VARIANTS[variant], _model_config(folder)
    results = eval_results_from_file(results_path, variant) if results_path is not None else []
    quick = bool(results_path and _read_json(Path(results_path)).get("quick"))
    repo_id = repo_id or f"<user>/{folder.resolve().name}"
    data = ModelCardData(
        library_name="transformers", pipeline_tag=spec.pipeline_tag, license="apache-2.0",
        tags=list(BASE_TAGS + spec.tags), datasets=_datasets(folder, results), base_model=base_model,
        model_name=repo_id.split("/")[-1], eval_results=results or None,
    )
    fields = {
        "card_data": data.to_yaml(), "repo_id": repo_id, "revision": revision, "model_name": repo_id.split("/")[-1],
        "architecture": _architecture_summary(folder, config, variant),
        "preprocessing": _preprocessing_summary(folder), "training_data": _training_summary(folder),
        "results": _results_table(results, Path(results_path).name if results_path else None, quick),
        "base_model": f"[`{base_model}`](https://huggingface.co/{base_model})" if base_model else "pretrained PLACE",
    }
    return ModelCard(_template(template_dir, variant).substitute(fields))


def _template(template_dir: str | os.PathLike | None, variant: str) -> string.Template:
    path = Path(template_dir or TEMPLATE_DIR) / f"{variant}.md"
    if not path.is_file():
        raise FileNotFoundError(f"Model card template {path} not found (pass template_dir=...)")
    return string.Template(path.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------------ publish
def stage_folder(
    folder: str | os.PathLike, staging: str | os.PathLike, processor_from: str | os.PathLike | None = None
) -> Path:
    """Copy a saved folder (no hidden files, no checkpoints) to `staging` and complete its `auto_map` there.

    A folder without a processor (a head saved alone) takes the processor files of `processor_from`, e.g. the
    pretrained folder it was trained from; its crop size must be the model's input size.
    """
    folder, staging = Path(folder), Path(staging)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: pass a folder saved with save_pretrained")
    if not any((folder / name).is_file() for name in _MODEL_FILES):
        raise FileNotFoundError(f"{folder} has no {' or '.join(_MODEL_FILES)}: nothing to publish")
    shutil.copytree(folder, staging, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(".*", "__pycache__", "checkpoint*", "README.md"))
    if processor_from is not None and not _processor_config(staging):
        _copy_processor(Path(processor_from), staging)
    _check_processor_fits(staging)
    complete_auto_map(staging)
    return staging


def _processor_config(folder: Path) -> Path | None:
    return next((folder / name for name in _PROCESSOR_FILES if (folder / name).is_file()), None)


def _copy_processor(source: Path, staging: Path) -> None:
    if _processor_config(source) is None:
        raise FileNotFoundError(f"processor_from: {source} has no {' or '.join(_PROCESSOR_FILES)}")
    for name in _PROCESSOR_FILES + _TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, staging / name)


def _check_processor_fits(folder: Path) -> None:
    """The processor's crop must be the model's input size (else every image would be mis-sized)."""
    path = _processor_config(folder)
    if path is None:
        return
    content = _read_json(path)
    crop = content.get("image_processor", content).get("crop_size")
    args = _model_config(folder).get("vision_config", {}).get("model_args") or {}
    image_size = args.get("img_size", 224)
    if isinstance(crop, Mapping) and (crop.get("height"), crop.get("width")) != (image_size, image_size):
        raise ValueError(f"{path.name}: crop_size {crop['height']}x{crop['width']} does not match the model's "
                         f"input size {image_size}x{image_size}; pass the processor this model was trained with")


def publish(
    folder: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    *,
    results_path: str | os.PathLike | None = None,
    variant: str | None = None,
    base_model: str | None = None,
    processor_from: str | os.PathLike | None = None,
    token: str | None = None,
) -> CommitInfo:
    """Publish a saved PLACE folder to `repo_id` on the Hub; return the commit that holds its files.

    The repository (and branch `revision`, from `main`) is created when missing; `private` applies on creation
    only (an existing repository keeps its visibility). The commit mirrors the folder
    exactly (files of an earlier revision that the folder lacks are deleted); a second commit pins the card's
    loading snippet to the returned commit's sha. A folder without a processor takes the one of `processor_from`.
    `token=None` uses `HF_TOKEN` or the saved login.
    """
    api, branch = HfApi(token=token), revision or "main"
    variant = variant or detect_variant(folder)
    card_args = {"variant": variant, "results_path": results_path, "repo_id": repo_id, "base_model": base_model}
    with tempfile.TemporaryDirectory(prefix="place-publish-") as tmp:
        staging = stage_folder(folder, Path(tmp) / "repo", processor_from)
        card = render_model_card(staging, revision=branch, **card_args)
        card.validate()
        card.save(staging / "README.md")
        api.create_repo(repo_id, private=private, exist_ok=True)
        if branch != "main":
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        message = commit_message or f"Upload PLACE {variant} model"
        info = api.upload_folder(repo_id=repo_id, folder_path=staging, revision=branch, commit_message=message,
                                 delete_patterns="*")
        pinned = render_model_card(staging, revision=info.oid, **card_args)
        api.upload_file(path_or_fileobj=str(pinned).encode("utf-8"), path_in_repo="README.md", repo_id=repo_id,
                        revision=branch, commit_message=f"Pin the model card to commit {info.oid[:12]}")
    return info
