"""One training configuration object: defaults < YAML/JSON file < command-line `--key=value` overrides."""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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
    model: dict[str, Any] = field(default_factory=dict)
    init_vision: str | None = None  # timm .safetensors checkpoint or folder
    init_text: str | None = None  # local Hugging Face BERT folder (its tokenizer is used too)
    tokenizer: str | None = None  # local tokenizer folder; None trains a WordPiece vocabulary on the reports
    vocab_size: int = 4096
    # data
    dataset: str = "synthetic"  # "synthetic" or a reader name of modeling_place.data.readers_place (e.g. "mimic-cxr")
    data_root: str | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
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
        checks = {
            "batch_size": self.batch_size >= 1, "grad_accum": self.grad_accum >= 1, "max_steps": self.max_steps >= 1,
            "lr": self.lr > 0, "num_workers": self.num_workers >= 0, "warmup_steps": self.warmup_steps >= 0,
            "max_bad_fraction": 0 <= self.max_bad_fraction < 1, "checkpoint_every": self.checkpoint_every >= 1,
            "eval_every": self.eval_every >= 1, "log_every": self.log_every >= 1,
            "keep_checkpoints": self.keep_checkpoints >= 1,
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


def _field_kind(annotation: Any) -> tuple[type, bool]:
    """The base type of a field annotation (`int | None` → int) and whether None is allowed."""
    args = typing.get_args(annotation)
    optional = type(None) in args
    if args and typing.get_origin(annotation) not in (dict, list):
        annotation = next(arg for arg in args if arg is not type(None))
    return typing.get_origin(annotation) or annotation, optional


def _coerce(name: str, raw: str, annotation: Any) -> Any:
    """Turn a command-line string into the field's type (JSON for dicts/lists, YAML-like booleans)."""
    kind, optional = _field_kind(annotation)
    if optional and raw.lower() in ("none", "null"):
        return None
    if kind in (dict, list):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            if kind is list:
                return [item for item in raw.split(",") if item]
            raise ValueError(f"--{name} expects JSON, e.g. --{name}='{{\"lambda_ce\": 0}}', got {raw!r}") from None
    if kind is bool:
        if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"--{name} expects true/false, got {raw!r}")
        return raw.lower() in ("true", "1", "yes")
    if kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            raise ValueError(f"--{name} expects {kind.__name__}, got {raw!r}") from None
    return raw


def _parse_overrides(argv: list[str], types: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    config_file, overrides, items = None, {}, list(argv)
    while items:
        item = items.pop(0)
        if not item.startswith("--"):
            if config_file is not None:
                raise ValueError(f"unexpected argument {item!r}: give one config file, then --key=value overrides")
            config_file = item
            continue
        key, has_value, value = item[2:].partition("=")
        if not has_value:
            if not items:
                raise ValueError(f"--{key} needs a value")
            value = items.pop(0)
        key = key.replace("-", "_")
        if key == "config":
            config_file = value
        elif key not in types:
            raise ValueError(f"unknown option --{key}; valid options: {', '.join(sorted(types))}")
        else:
            overrides[key] = _coerce(key, value, types[key])
    return config_file, overrides


def train_config_usage() -> str:
    """The `--help` text: the call shape, then every option with its default."""
    lines = ["usage: [config.yaml|json] [--key=value ...]  (defaults < file < command line)", "", "options:"]
    defaults = TrainConfig()
    for option in dataclasses.fields(TrainConfig):
        lines.append(f"  --{option.name:<24} default {getattr(defaults, option.name)!r}")
    return "\n".join(lines)


def load_train_config(argv: list[str] | None = None) -> TrainConfig:
    """`[config.yaml|json] [--key=value ...]` → a validated `TrainConfig` (unknown keys are errors).

    `-h` / `--help` prints `train_config_usage()` and exits."""
    if {"-h", "--help"} & set(argv or []):
        print(train_config_usage())
        raise SystemExit(0)
    types = typing.get_type_hints(TrainConfig)
    config_file, overrides = _parse_overrides(list(argv or []), types)
    values = _read_file(config_file) if config_file else {}
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise ValueError(f"config file {config_file}: unknown keys {unknown}; valid keys: {', '.join(sorted(types))}")
    if "model" in overrides and "model" in values:  # a --model override extends the file's model mapping
        overrides["model"] = {**values["model"], **overrides["model"]}
    return TrainConfig(**{**values, **overrides})
