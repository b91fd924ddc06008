"""Image–report pairs for pretraining: datasets, bad-sample skipping, the processor-driven collator.

A bad sample (unreadable image, empty or non-string report) is replaced by the next good one and counted, so
every batch keeps its size: the contrastive all-gather needs equal batches on every rank.
"""

from __future__ import annotations

import os
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from torch.utils.data import Dataset, Sampler

from modeling_place.processing.image_processing_place import PlaceImageProcessor, decode_image_bytes, load_image_file
from modeling_place.processing.processing_place import PlaceProcessor
from modeling_place.processing.tokenization_place import load_tokenizer, train_wordpiece_tokenizer

from .config import TrainConfig

MAX_CONSECUTIVE_BAD = 64


#: The launch that really starts 2 ranks on CPU (gloo); the same as `--config_file examples/accelerate/cpu_ddp.yaml`.
CPU_DDP_LAUNCH = ("accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no "
                  "--dynamo_backend no")
ALLOW_SINGLE_PROCESS = "PLACE_ALLOW_SINGLE_PROCESS"


def distributed_state() -> Any:
    """accelerate's shared process state; on a machine without CUDA it must be told `cpu=True`, or
    `accelerate launch --multi_gpu` starts N independent single-process runs instead of gloo DDP.
    Raises when the launch asked for several processes and started one (`require_requested_processes`)."""
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    require_requested_processes(state.num_processes)
    return state


def require_requested_processes(num_processes: int) -> None:
    """Fail loudly where `accelerate launch` was asked for N > 1 processes but started this one alone.

    accelerate's single-process launcher (taken by `--cpu --num_processes N`, a bare `--num_processes N` without
    GPUs, a MULTI_CPU config without mpirun) sets MASTER_PORT only when asked for more than one process and, unlike
    torchrun, no WORLD_SIZE: such a run trains on one rank while its user believes in N.
    """
    env = os.environ
    launched_by_accelerate = "ACCELERATE_DYNAMO_BACKEND" in env  # set by every `accelerate launch`
    if num_processes > 1 or not launched_by_accelerate or env.get(ALLOW_SINGLE_PROCESS) == "1":
        return
    if "MASTER_PORT" in env and "WORLD_SIZE" not in env:
        script = sys.argv[0] if sys.argv and sys.argv[0] not in ("", "-c") else "examples/pretrain.py"
        raise RuntimeError(
            "accelerate launch was asked for several processes but started 1 (its single-process launcher: "
            "`--cpu`, `--num_processes N` without GPUs, or a MULTI_CPU config without mpirun). "
            f"On CPU, start 2 gloo ranks with:\n  {CPU_DDP_LAUNCH} {script} ...\n"
            f"(or --config_file examples/accelerate/cpu_ddp.yaml). Set {ALLOW_SINGLE_PROCESS}=1 if MASTER_PORT is "
            "set for another reason and one process is what you want.")


@dataclass
class PairSplits:
    """Train and validation tables with the names of their image and report columns."""

    train: Any
    validation: Any
    image_column: str
    text_column: str
    skipped_rows: int = 0  # table rows a reader skipped as malformed (data_options skip_bad_rows=True)


def load_pair_splits(config: TrainConfig) -> PairSplits:
    """The synthetic pretraining split, or a real dataset by reader name (modeling_place.data.readers_place)."""
    if config.dataset == "synthetic":
        from modeling_place.data.synthetic_cxr import build_split

        state = distributed_state()
        # The main process builds the cache, the others reuse it. Under DDP it generates in-process: forked
        # generator workers inherit the gloo sockets and desynchronise the ranks' collectives when they exit.
        with state.main_process_first():
            workers = 2 if state.num_processes == 1 else 1
            splits = build_split("pretrain", seed=config.data_seed, size=config.synthetic_size, num_proc=workers)
        train, validation, image_column, text_column = splits["train"], splits["validation"], "image", "report"
    else:
        if config.data_root is None:
            raise ValueError(f"dataset {config.dataset!r} needs --data_root (the folder of its official layout, or "
                             "place-prepare's output for 'prepared')")
        splits = _read_real_splits(config)
        if "train" not in splits:
            raise ValueError(f"dataset {config.dataset!r} at {config.data_root} has no 'train' split: {list(splits)}")
        # place-prepare --image-cache adds an `image` column of resized encoded images: read it, not the originals
        image_column = "image" if "image" in splits["train"].column_names else "image_path"
        train, validation, text_column = splits["train"], splits.get("validation"), "text"
        bad_rows = getattr(splits, "bad_rows", None)
        skipped_rows = bad_rows.summary()["skipped"] if bad_rows is not None else 0
    for name, table in (("train", train), ("validation", validation)):
        if table is not None:
            _require_columns(table, (image_column, text_column), f"{config.dataset} {name} split")
    if validation is not None:  # validation_pairs=0 switches validation off
        count = min(len(validation), config.validation_pairs)
        validation = validation.select(range(count)) if count else None
    return PairSplits(train, validation, image_column, text_column, skipped_rows if config.dataset != "synthetic" else 0)


def _read_real_splits(config: TrainConfig) -> Any:
    """A real dataset: place-prepare's saved tables (`dataset="prepared"`) or a reader over the official layout."""
    if config.dataset == "prepared":
        from datasets import load_from_disk

        folder = Path(config.data_root) / "dataset"
        if not folder.is_dir():
            raise ValueError(f"{config.data_root} is not a place-prepare output with --format arrow (no dataset/)")
        return load_from_disk(str(folder))
    from modeling_place.data.readers_place import load_dataset_by_name

    return load_dataset_by_name(config.dataset, config.data_root, **config.data_options)


def _require_columns(table: Any, columns: tuple[str, ...], where: str) -> None:
    missing = [column for column in columns if column not in table.column_names]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; found {table.column_names}")


def decode_image(value: Any, draft_size: int | None = None) -> Any:
    """A path, an `Image(decode=False)` dict or an image object → a fully decoded image (raises ValueError);
    JPEGs at the smallest DCT scale keeping both sides >= `draft_size` (`decode_image_bytes`)."""
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return decode_image_bytes(value["bytes"], value.get("path"), draft_size)
        value = value.get("path")
    if isinstance(value, str):
        return load_image_file(value, draft_size)
    if value is None:
        raise ValueError("image is missing")
    return value


class ImageReportPairs(Dataset):
    """Pairs from a `datasets` table; a bad row is replaced by the next good one and counted in `skipped`."""

    def __init__(self, table: Any, image_column: str, text_column: str, processor: PlaceProcessor,
                 jpeg_draft: bool = True) -> None:
        from datasets import Image

        if image_column in table.features and isinstance(table.features[image_column], Image):
            table = table.cast_column(image_column, Image(decode=False))  # decode here, where errors are caught
        self.table, self.image_column, self.text_column = table, image_column, text_column
        self.processor = processor
        # Full-size JPEGs (MIMIC-CXR-JPG: ~2,500 x 3,000) decode at >= 2x the processor's resize size in draft
        # mode, several times faster than a full decode and within a grey level after the resize
        # (benchmarks/input_pipeline.py measures both); `jpeg_draft=False` decodes every pixel.
        self.draft_size = 2 * max(processor.image_processor.size["height"], processor.image_processor.size["width"])
        self.draft_size = self.draft_size if jpeg_draft else None

    def __len__(self) -> int:
        return len(self.table)

    def _load(self, index: int) -> dict[str, Any]:
        row = self.table[index]
        text = row[self.text_column]
        if not self.processor.is_valid_report(text):
            raise ValueError(f"row {index}: empty or invalid report {text!r:.60}")
        return {"image": decode_image(row[self.image_column], self.draft_size), "text": text, "index": index}

    def __getitem__(self, index: int) -> dict[str, Any]:
        for offset in range(MAX_CONSECUTIVE_BAD):
            try:
                sample = self._load((index + offset) % len(self))
            except (ValueError, OSError, FileNotFoundError):
                continue
            sample["skipped"] = offset
            return sample
        raise RuntimeError(f"{MAX_CONSECUTIVE_BAD} consecutive bad samples from row {index}: is the data readable?")


class PlaceCollator:
    """Runs `PlaceProcessor` on a list of samples; train-time augmentation is seeded by the samples' indices,
    so a batch is the same whatever worker builds it and whether or not the run was resumed."""

    def __init__(self, processor: PlaceProcessor, train: bool, seed: int = 0) -> None:
        self.processor, self.train, self.seed = processor, train, seed

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        indices = np.array([sample["index"] for sample in samples], dtype=np.int64)
        batch_seed = zlib.crc32(indices.tobytes(), self.seed) 
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(batch_seed)
            batch = self.processor(
                images=[sample["image"] for sample in samples],
                text=[sample["text"] for sample in samples],
                train=self.train,
                return_tensors="pt",
            )
        features = dict(batch)
        features["skipped"] = torch.tensor(sum(sample["skipped"] for sample in samples))
        return features


class EpochShuffleSampler(Sampler[int]):
    """A fresh permutation per epoch from `(seed, epoch)`: reproducible across restarts and ranks."""

    def __init__(self, length: int, seed: int) -> None:
        self.length, self.seed, self.epoch = length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=generator).tolist())


def build_tokenizer(config: TrainConfig, splits: PairSplits) -> Any:
    """A local tokenizer (config.tokenizer, else init_text's) or a WordPiece vocabulary trained on the reports."""
    source = config.tokenizer or config.init_text
    if source is not None:
        from modeling_place.modeling_place import resolve_pretrained

        return load_tokenizer(resolve_pretrained(source), model_max_length=config.max_length)
    reports = (text for text in splits.train[splits.text_column] if isinstance(text, str) and text.strip())
    return train_wordpiece_tokenizer(reports, vocab_size=config.vocab_size, model_max_length=config.max_length)


def build_processor(tokenizer: Any, image_size: int, max_sentences: int, max_length: int) -> PlaceProcessor:
    """Processor whose crop equals the vision tower's input size (resize to 8/7 of it first, as 256 → 224)."""
    resize = round(image_size * 8 / 7)
    image_processor = PlaceImageProcessor(
        size={"height": resize, "width": resize}, crop_size={"height": image_size, "width": image_size}
    )
    return PlaceProcessor(image_processor, tokenizer, max_sentences=max_sentences, max_length=max_length)


def run_processor(config: TrainConfig, splits: PairSplits, max_sentences: int, image_size: int) -> PlaceProcessor:
    """The run's processor, built once by the main process and saved in `run_dir/processor`.

    Every rank and every resumed run loads that saved copy. The trained vocabulary is deterministic
    (`train_wordpiece_tokenizer`), but the copy pins it against a changed corpus or a newer scheme.
    """
    saved = Path(config.run_dir) / "processor"
    state = distributed_state()
    with state.main_process_first():
        if state.is_main_process and not (config.resume and (saved / "processor_config.json").exists()):
            tokenizer = build_tokenizer(config, splits)
            build_processor(tokenizer, image_size, max_sentences, config.max_length).save_pretrained(saved)
        return PlaceProcessor.from_pretrained(saved)


def build_model_and_processor(config: TrainConfig, splits: PairSplits) -> tuple[Any, PlaceProcessor]:
    """The PLACE model of `config` (pretrained towers loaded after construction) and its processor."""
    from accelerate.utils import set_seed

    from modeling_place import PlaceConfig, PlaceModel

    model_config = PlaceConfig.from_preset(config.preset, **config.model)
    processor = run_processor(config, splits, model_config.max_sentences, model_config.image_size)
    model_config.text_config.vocab_size = len(processor.tokenizer)
    if config.text_layers is not None:
        model_config.text_config.num_hidden_layers = config.text_layers
    set_seed(config.seed)  # the initial weights are part of the run's reproducibility
    if not (config.init_vision or config.init_text):
        return PlaceModel(model_config), processor
    model = PlaceModel.from_encoders(vision=config.init_vision, text=config.init_text, config=model_config,
                                     text_layers=config.text_layers)
    for tower, keys in model.encoder_load_report.items():
        print(f"pretrained {tower} tower: {len(keys['unexpected'])} unexpected keys {keys['unexpected'][:3]}, "
              f"{len(keys['ignored'])} ignored (heads) {keys['ignored'][:3]}, missing {keys['missing']}")
    return model, processor
