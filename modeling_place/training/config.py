"""One training configuration object: defaults < YAML/JSON file < command-line `--key value` / `--key=value`
overrides, parsed by transformers' `HfArgumentParser` from the `TrainConfig` dataclass."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class _BadValue(argparse.ArgumentTypeError, ValueError):
    """A command-line value argparse reports with this message (a ValueError everywhere else)."""


class JSONMapping(dict):
    """A mapping field that the command line gives as JSON (`--model='{"lambda_ce": 0}'`): the field's type is
    what `HfArgumentParser` calls on the string, and a plain `dict("...")` cannot read JSON."""

    def __init__(self, value: Any = None) -> None:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise _BadValue(f"expects a JSON mapping, e.g. '{{\"lambda_ce\": 0}}', got {value!r}") from None
            if not isinstance(value, dict):
                raise _BadValue(f"expects a JSON mapping, got {value!r}")
        super().__init__(value or {})


#: The objective ablations of docs/METHOD.md as `PlaceConfig` overrides (examples/ablation.py, benchmarks/train_step.py).
OBJECTIVE_VARIANTS: dict[str, dict[str, Any]] = {
    "ita_only": {"lambda_pcma": 0.0, "lambda_ce": 0.0},
    "ita_pcma": {"lambda_ce": 0.0},
    "ita_ce": {"lambda_pcma": 0.0},
    "place_dense": {"ce_mode": "dense"},
    "place_masked": {"ce_mode": "masked"},
}


@dataclass
class TrainConfig:
    """Everything a pretraining run needs; printed at start and saved with every checkpoint."""

    # model: a preset plus PlaceConfig overrides (e.g. {"lambda_pcma": 0} for ITA-only)
    preset: str = "tiny"
    model: JSONMapping = field(default_factory=JSONMapping)
    init_vision: str | None = None  # timm .safetensors file, timm Hub-style folder or Hub id (timm/deit_base_patch16_224.fb_in1k)
    init_text: str | None = None  # BERT folder or Hub id (emilyalsentzer/Bio_ClinicalBERT); its tokenizer is used too
    text_layers: int | None = None  # keep the first N layers of the text tower (MGCA: 6 of Bio_ClinicalBERT's 12)
    tokenizer: str | None = None  # local tokenizer folder; None trains a WordPiece vocabulary on the reports
    vocab_size: int = 4096
    # data
    # "synthetic", "prepared" (a place-prepare output folder as data_root; its image cache when it has one) or a
    # reader name of modeling_place.data.readers_place (e.g. "mimic-cxr")
    dataset: str = "synthetic"
    data_root: str | None = None
    data_options: JSONMapping = field(default_factory=JSONMapping)
    synthetic_size: int | None = None  # pretraining pairs (None: docs/BENCHMARK.md's 20,000 + 1,000 validation)
    data_seed: int = 0
    max_length: int = 128
    num_workers: int = 1
    max_bad_fraction: float = 0.01
    augment: bool = True  # train-time image augmentation (PlaceImageProcessor's random crop/rotation/jitter)
    validation_pairs: int = 512
    # optimisation
    batch_size: int = 32  # per device
    grad_accum: int = 1
    max_steps: int = 1200
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.05
    max_grad_norm: float = 1.0
    mixed_precision: str = "auto"  # "auto" (bf16 where supported), "bf16", "fp16", "no"
    gradient_checkpointing: bool = False
    seed: int = 0
    # loop
    output_dir: str = "place-cxr"
    run_dir: str = "runs/pretrain"
    log_every: int = 10
    eval_every: int = 300
    checkpoint_every: int = 300
    keep_checkpoints: int = 2
    resume: bool = True  # continue from the newest checkpoint in run_dir when there is one
    trackers: list[str] = field(default_factory=list)  # "tensorboard", "trackio"
    progress_bar: bool = True

    def __post_init__(self) -> None:
        # `--trackers tensorboard,trackio` (the comma form of the earlier parser) as well as `--trackers a b`
        self.trackers = [name for item in self.trackers for name in str(item).split(",") if name]
        checks = {
            "batch_size": self.batch_size >= 1, "grad_accum": self.grad_accum >= 1, "max_steps": self.max_steps >= 1,
            "lr": self.lr > 0, "num_workers": self.num_workers >= 0, "warmup_steps": self.warmup_steps >= 0,
            "max_bad_fraction": 0 <= self.max_bad_fraction < 1, "checkpoint_every": self.checkpoint_every >= 1,
            "eval_every": self.eval_every >= 1, "log_every": self.log_every >= 1,
            "keep_checkpoints": self.keep_checkpoints >= 1,
            "text_layers": self.text_layers is None or self.text_layers >= 1,
            "mixed_precision": self.mixed_precision in ("auto", "bf16", "fp16", "no"),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"TrainConfig: invalid value for {bad[0]}: {getattr(self, bad[0])!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))

    def __str__(self) -> str:
        width = max(len(f.name) for f in dataclasses.fields(self))
        return "\n".join(f"  {name:<{width}} = {value!r}" for name, value in self.to_dict().items())


def _read_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        values = yaml.safe_load(text) or {}
    else:
        values = json.loads(text)
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a mapping of TrainConfig fields")
    return values


class _DefaultsFormatter(argparse.HelpFormatter):
    """Help lines end with each option's default as Python writes it (`default 'tiny'`)."""

    def _format_action(self, action: argparse.Action) -> str:
        if action.option_strings and action.default is not argparse.SUPPRESS:
            action = copy.copy(action)  # the parser's own action keeps its help
            action.help = f"{action.help or ''} default {action.default!r}".strip().replace("%", "%%")
        return super()._format_action(action)


def train_config_parser() -> Any:
    """`HfArgumentParser` over `TrainConfig` (each field an option; booleans also as `--no_<name>`)."""
    from transformers import HfArgumentParser

    return HfArgumentParser(TrainConfig, usage="[config.yaml|json] [--key value | --key=value ...]",
                            description="defaults < config file < command line", formatter_class=_DefaultsFormatter,
                            exit_on_error=False)


def train_config_usage() -> str:
    """The `--help` text: the call shape, then every option with its default."""
    return train_config_parser().format_help()


def _split_config_file(argv: list[str]) -> tuple[str | None, list[str]]:
    """The config file (first argument when it is not an option, or `--config PATH`) and the other arguments."""
    config_file = None
    if argv and not argv[0].startswith("-"):
        config_file, argv = argv[0], argv[1:]
    rest, items = [], list(argv)
    while items:
        item = items.pop(0)
        if item == "--config" and items:
            config_file = items.pop(0)
        elif item.startswith("--config="):
            config_file = item.partition("=")[2]
        else:
            rest.append(item)
    return config_file, rest


def _pop_nulls(argv: list[str]) -> tuple[list[str], dict[str, None]]:
    """`--key=none` / `--key null` for an optional field → None (argparse would read an `int | None` field's
    "none" as a bad int): taken out of `argv` and applied after parsing."""
    hints = typing.get_type_hints(TrainConfig)
    optional = {name for name, hint in hints.items() if type(None) in typing.get_args(hint)}
    rest, nulls, items = [], {}, list(argv)
    while items:
        item = items.pop(0)
        key, has_value, value = item.partition("=")
        name = key[2:].replace("-", "_")
        if name in optional and not has_value and items and items[0].lower() in ("none", "null"):
            has_value, value = True, items.pop(0)
        if name in optional and has_value and value.lower() in ("none", "null"):
            nulls[name] = None
        else:
            rest.append(item if not has_value or "=" in item else f"{key}={value}")
    return rest, nulls


def load_train_config(argv: list[str] | None = None) -> TrainConfig:
    """`[config.yaml|json] [--key value | --key=value ...]` → a validated `TrainConfig` (unknown keys are errors).

    `-h` / `--help` prints `train_config_usage()` and exits. A `--model` mapping extends the file's."""
    parser = train_config_parser()
    config_file, argv = _split_config_file(list(argv or []))
    argv, nulls = _pop_nulls(argv)
    values = _read_file(config_file) if config_file else {}
    valid = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ValueError(f"config file {config_file}: unknown keys {unknown}; valid keys: {', '.join(sorted(valid))}")
    file_model = values.get("model")
    parser.set_defaults(**{**values, **nulls})  # defaults < file < command line
    try:
        config, remaining = parser.parse_args_into_dataclasses(argv, return_remaining_strings=True,
                                                               look_for_args_file=False)
    except argparse.ArgumentError as error:  # "invalid int value: 'ten'" → "--max_steps expects int, got 'ten'"
        message = re.sub(r"^invalid (\w+) value: ", r"expects \1, got ", error.message)
        raise ValueError(f"{(error.argument_name or '').split('/')[0]} {message}") from None
    if remaining:
        option = remaining[0].partition("=")[0]
        raise ValueError(f"unknown option {option}; valid options: {', '.join(sorted(valid))}")
    if file_model is not None and config.model is not file_model:  # --model was given: extend the file's mapping
        config.model = JSONMapping({**file_model, **config.model})
    return config
