"""Head fine-tuning on the loop pretraining uses (`loop.py`): what the downstream protocols' `fit` runs.

A `HeadTask` says what to train: the model, the order of an epoch's training rows (`epoch_order`), how a batch of
rows becomes model inputs (`make_batch`: run lazily in the training process, only for the batches that are trained,
so a resumed epoch skips the others without building them) and a validation score (higher is better).
`HeadTrainer` trains it for `epochs`, validates after each, restores the best epoch's trainable weights at the end,
and with a `run_dir` writes checkpoints (every `checkpoint_every` steps and at each epoch end) that resume exactly.

Under DDP each rank takes every N-th batch of the same epoch order (accelerate's `BatchSamplerShard`), so one step
consumes N x `batch_size` rows: the rows one process takes with an N-times larger batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from accelerate.utils import broadcast
from torch.utils.data import DataLoader, Dataset, Sampler

from .loop import AcceleratedLoop, flat_config, make_accelerator

LR_SCHEDULES = ("cosine", "constant")  # how the rate moves over the epochs (`--lr_schedule`)
HEAD_METRICS_LOG = "metrics.jsonl"  # one record per epoch in run_dir


@dataclass
class FitConfig:
    """How a head trains (the protocols build it from their flags: `downstream.fit_config`)."""

    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 32  # per process
    grad_accum: int = 1
    lr_schedule: str = "cosine"  # one of LR_SCHEDULES
    weight_decay: float = 1e-4
    max_grad_norm: float | None = None
    mixed_precision: str = "auto"  # "auto" (bf16 on a GPU that runs it, fp32 elsewhere), "bf16", "fp16", "no"
    seed: int = 0  # seeds each batch's augmentation (with the batch's rows)
    run_dir: str | None = None  # checkpoints (exact resume) and metrics.jsonl; None writes neither
    checkpoint_every: int = 0  # optimizer steps between checkpoints inside an epoch; 0: at epoch ends only
    keep_checkpoints: int = 1
    resume: bool = True  # continue from run_dir's newest checkpoint when there is one
    trackers: list[str] = field(default_factory=list)  # "tensorboard", "trackio", ...
    logging_dir: str | None = None  # the trackers' folder when there is no run_dir
    progress_bar: bool = True
    project: str = "place-head"  # the trackers' project (run) name

    def __post_init__(self) -> None:
        checks = {"epochs": self.epochs >= 1, "lr": self.lr > 0, "batch_size": self.batch_size >= 1,
                  "grad_accum": self.grad_accum >= 1, "lr_schedule": self.lr_schedule in LR_SCHEDULES,
                  "mixed_precision": self.mixed_precision in ("auto", "bf16", "fp16", "no"),
                  "checkpoint_every": self.checkpoint_every >= 0, "keep_checkpoints": self.keep_checkpoints >= 1}
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            choices = f" (one of {LR_SCHEDULES})" if bad[0] == "lr_schedule" else ""
            raise ValueError(f"FitConfig: invalid value for {bad[0]}: {getattr(self, bad[0])!r}{choices}")


@dataclass
class HeadTask:
    """What a head fine-tune trains on: `epoch_order(epoch)` gives the epoch's training row indices as segments
    (a batch never spans two: a small label fraction is passed over several times per epoch, each pass its own
    shuffle); `make_batch(rows)` the model's keyword arguments (with `labels`) for those rows."""

    model: torch.nn.Module
    num_rows: int
    epoch_order: Callable[[int], Sequence[Sequence[int]]]
    make_batch: Callable[[list[int]], dict[str, Any]]
    validate: Callable[[], float]


def head_mixed_precision(choice: str) -> str:
    """`auto` → bf16 on a GPU that runs it, fp32 elsewhere (a CPU head keeps the fp32 protocol's numbers, and
    emulated bf16 is slow); "bf16", "fp16" and "no" are taken as given."""
    if choice != "auto":
        return choice
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def epoch_learning_rate(lr: float, epoch: int, epochs: int) -> float:
    """Half-cosine from `lr` at epoch 0 towards 0 (never reached: the last epoch still trains)."""
    return lr * 0.5 * (1 + math.cos(math.pi * epoch / max(epochs, 1)))


@contextlib.contextmanager
def rows_seeded(rows: Sequence[int], seed: int) -> Iterator[None]:
    """Seed torch's global generator from the batch's rows (restored after): an augmented batch is then the same
    whenever it is built (accelerate's loader builds the next batch before the current one trains) and after a
    resume; the training's own draws (dropout) are untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(zlib.crc32(np.asarray(rows, dtype=np.int64).tobytes(), seed))
        yield


class EpochBatches(Sampler[list[int]]):
    """Batches of `batch_size` rows along `order(epoch)`'s segments; `set_epoch` picks the epoch (accelerate
    pushes it into `batch_sampler.sampler`, one level deeper under DDP: hence `sampler` is this object)."""

    def __init__(self, order: Callable[[int], Sequence[Sequence[int]]], batch_size: int) -> None:
        self.order, self.batch_size, self.drop_last, self.epoch = order, batch_size, False, 0
        self.sampler = self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        for segment in self.order(self.epoch):
            rows = [int(row) for row in segment]
            for start in range(0, len(rows), self.batch_size):
                yield rows[start : start + self.batch_size]

    def __len__(self) -> int:
        return sum(math.ceil(len(segment) / self.batch_size) for segment in self.order(self.epoch))


class RowBatches(Dataset):
    """A batch of row indices → `(rows in it, make_batch(rows))`, built where the loader asks for it."""

    def __init__(self, task: HeadTask) -> None:
        self.task = task

    def __len__(self) -> int:
        return self.task.num_rows

    def __getitems__(self, rows: list[int]) -> tuple[int, dict[str, Any]]:
        return len(rows), self.task.make_batch(rows)


def _as_is(batch: Any) -> Any:
    return batch


class HeadTrainer(AcceleratedLoop):
    """Fine-tunes a head (`HeadTask`) with validation after every epoch; the best epoch's weights are kept."""

    desc = "fine-tune"
    extra_checkpoint_files = ("best",)  # the best epoch's trainable weights, so a resumed run keeps its pick

    def __init__(self, task: HeadTask, config: FitConfig, log: Callable[[str], None] = print) -> None:
        # A head trains part of its encoder at most (unused towers, frozen blocks): DDP must look for unused ones.
        precision = head_mixed_precision(config.mixed_precision)
        accelerator = make_accelerator(config.run_dir or config.logging_dir, precision, config.grad_accum,
                                       config.trackers, find_unused_parameters=True)
        if str(accelerator.distributed_type).endswith("FSDP"):
            raise NotImplementedError("heads train with DDP or one process (their best-epoch copy holds whole "
                                      "tensors); FSDP is for pretraining: launch heads with a multi_gpu config")
        super().__init__(accelerator, config.run_dir, config.keep_checkpoints, config.max_grad_norm,
                         config.progress_bar)
        self.task, self.config, self.log = task, config, log
        trainable = [p for p in task.model.parameters() if p.requires_grad]
        self.trainable_keys = _trainable_state_keys(task.model)
        optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
        # Its own generator: starting an epoch's iterator must not draw from the global RNG, or a resumed run
        # (whose iterator starts mid-epoch) would see other dropout masks than an uninterrupted one.
        loader = DataLoader(RowBatches(task), batch_sampler=EpochBatches(task.epoch_order, config.batch_size),
                            collate_fn=_as_is, generator=torch.Generator().manual_seed(config.seed))
        self.model, self.optimizer, self.train_loader = self.accelerator.prepare(task.model, optimizer, loader)
        self.history: list[dict[str, float]] = []
        self.best_epoch, self.best_validation = -1, -math.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self._epoch_loss = torch.zeros(2)  # this rank's (sum of batch losses, batches) in the current epoch
        self._pending_rows = torch.zeros(1)  # this rank's rows since the last count

    def train(self) -> dict[str, Any]:
        """Train the remaining epochs (resuming from `run_dir` if it holds a checkpoint); restore the best epoch's
        trainable weights. Returns the validation history, the best epoch and its score, steps, samples, processes,
        device and precision."""
        if self.config.resume:
            self._load_newest_checkpoint()
        self.accelerator.init_trackers(self.config.project, config=flat_config(dataclasses.asdict(self.config)))
        steps_per_epoch = math.ceil(len(self.train_loader) / self.config.grad_accum)
        self._open_bar(self.config.epochs * steps_per_epoch)
        while self.progress.epoch < self.config.epochs:
            self._set_epoch_rate()
            self._run_epoch()
        self.bar.close()
        self.accelerator.unwrap_model(self.model, keep_fp32_wrapper=False)  # the saved head's forward loses autocast
        if self.best_state is not None:
            self.task.model.load_state_dict(self.best_state, strict=False)
        for tracker in self.accelerator.trackers:  # not end_training(): it also ends DDP, which later heads use
            tracker.finish()
        return {"history": self.history, "best_epoch": self.best_epoch, "best_validation": float(self.best_validation),
                "steps": self.progress.step, "samples": self.progress.samples,
                "processes": self.accelerator.num_processes, "device": self.accelerator.device.type,
                "mixed_precision": self.accelerator.mixed_precision}

    def _set_epoch_rate(self) -> None:
        # At a constant rate the dense heads' validation scores still jumped between the last epochs (10 %
        # segmentation: 0.69, 0.48, 0.73), so the pick compared noise; decaying it lets each head settle first.
        epoch, config = self.progress.epoch, self.config
        rate = epoch_learning_rate(config.lr, epoch, config.epochs) if config.lr_schedule == "cosine" else config.lr
        for group in self.optimizer.param_groups:
            group["lr"] = rate

    def _train_batch(self, batch: tuple[int, dict[str, Any]]) -> torch.Tensor:
        rows, inputs = batch
        self.model.train()
        with self.accelerator.accumulate(self.model):
            loss = self.model(**inputs).loss
            self._backward_and_step(loss)
        self._epoch_loss += torch.tensor([loss.item(), 1.0])
        self._pending_rows += rows
        return loss

    def _after_step(self, loss: torch.Tensor) -> bool:
        every = self.config.checkpoint_every
        # the last step of an epoch is checkpointed after its validation (`_after_epoch`)
        end_of_epoch = self.accelerator.gradient_state.end_of_dataloader
        if self.run_dir is not None and every and self.progress.step % every == 0 and not end_of_epoch:
            self._save()
        return False

    def _after_epoch(self) -> None:
        epoch = self.progress.epoch - 1
        self._count_rows()
        self.task.model.eval()
        score = torch.tensor([self.task.validate()], dtype=torch.float64, device=self.accelerator.device)
        score = float(broadcast(score).item())  # every rank validated alike; rank 0's score decides for all
        loss_sum, batches = self.accelerator.reduce(self._epoch_loss.to(self.accelerator.device), "sum").tolist()
        record = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"],
                  "train_loss": loss_sum / batches if batches else float("nan"), "validation": score}
        self.history.append(record)
        self._epoch_loss.zero_()
        self.log(f"  epoch {epoch}: loss {record['train_loss']:.4f}, validation {score:.4f}")
        self.accelerator.log(record, step=self.progress.step)
        self._append_metrics({"kind": "validation", "step": self.progress.step, **record}, HEAD_METRICS_LOG)
        if score > self.best_validation:
            self.best_epoch, self.best_validation = epoch, score
            self.best_state = self._trainable_state()
        if self.run_dir is not None:
            self._save()

    def _save(self) -> None:
        self._count_rows()
        self._write_checkpoint()

    def _count_rows(self) -> None:
        """Add every rank's trained rows to `progress.samples`: measured, so a launch that started fewer ranks
        than asked shows in it."""
        rows = self.accelerator.reduce(self._pending_rows.to(self.accelerator.device), "sum")
        self.progress.samples += int(rows.item())
        self._pending_rows.zero_()

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        """The trainable weights (and buffers) of the head, copied to the CPU."""
        state = self.task.model.state_dict()
        return {key: state[key].detach().to("cpu", copy=True) for key in self.trainable_keys}

    # -- checkpoint contents -----------------------------------------------------------------------------
    def _trainer_state(self) -> dict[str, Any]:
        selection = {"history": self.history, "best_epoch": self.best_epoch,
                     "best_validation": self.best_validation if self.best_epoch >= 0 else None,
                     "epoch_loss": self._epoch_loss.tolist()}
        return {**self.progress.state_dict(), "selection": selection}

    def _load_trainer_state(self, state: dict[str, Any]) -> None:
        selection = state.pop("selection")
        self.progress.load_state_dict(state)
        self.history, self.best_epoch = selection["history"], selection["best_epoch"]
        self.best_validation = selection["best_validation"] if self.best_epoch >= 0 else -math.inf
        self._epoch_loss = torch.tensor(selection["epoch_loss"])

    def _extra_tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"best": self.best_state} if self.best_state is not None else {}

    def _load_extra_tensors(self, tensors: dict[str, dict[str, torch.Tensor]]) -> None:
        self.best_state = tensors.get("best")


def _trainable_state_keys(model: torch.nn.Module) -> list[str]:
    """State-dict keys of trainable parameters and of buffers (e.g. running statistics: they change in training)."""
    frozen = {name for name, parameter in model.named_parameters() if not parameter.requires_grad}
    return [key for key in model.state_dict() if key not in frozen]


def fit(task: HeadTask, config: FitConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train `task` with `config` on the shared accelerate loop (`HeadTrainer`); returns its history, the best
    epoch and its validation score (its weights are in `task.model`)."""
    return HeadTrainer(task, config, log).train()
