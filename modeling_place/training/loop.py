"""The accelerate-driven loop that pretraining (`PlaceTrainer`) and head fine-tuning (`HeadTrainer`) share.

`AcceleratedLoop` owns what both need: the `Accelerator` (device placement, mixed precision, gradient accumulation,
DDP, trackers), the step / epoch / position-in-epoch counters, the optimizer step (accumulation, clipping, scheduler),
the epoch iterator that resumes mid-epoch without replaying data, a progress bar, and atomic pickle-free checkpoints
(`checkpoint.py`) with exact resume. A subclass says what one batch trains (`_train_batch`) and what happens after
an optimizer step (`_after_step`: logging, validation, checkpoints) or an epoch (`_after_epoch`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration
from safetensors.torch import load_file
from tqdm.auto import tqdm

from . import checkpoint as checkpointing
from .data import distributed_state


class TrainProgress:
    """Counters saved with every checkpoint (as `trainer_state.json`, see `checkpoint.py`)."""

    def __init__(self) -> None:
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.samples = 0
        self.skipped = 0

    def state_dict(self) -> dict[str, int]:
        return dict(vars(self))

    def load_state_dict(self, state: dict[str, int]) -> None:
        unknown = set(state) - set(vars(self))
        if unknown:
            raise ValueError(f"unknown trainer state entries {sorted(unknown)}")
        vars(self).update({k: int(v) for k, v in state.items()})


def resolve_mixed_precision(choice: str) -> str:
    """`auto` → bf16 where the hardware runs it fast (Ampere+ GPUs; CPUs with AVX512-BF16 or AMX), else fp32.

    Without native bf16 a CPU emulates it ~50x slower than fp32 (seen on an AMD EPYC without AVX512-BF16).
    """
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or getattr(
        torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return "bf16" if native else "no"


def make_accelerator(project_dir: str | Path | None, mixed_precision: str, grad_accum: int, trackers: list[str],
                     find_unused_parameters: bool) -> Accelerator:
    """The `Accelerator` of a run: `mixed_precision` as resolved by the caller ("bf16", "fp16" or "no");
    trackers write under `project_dir`."""
    distributed_state()  # raises where a launch asked for N > 1 processes and started one
    # A frozen or switched-off part leaves trainable parameters without gradients; DDP must be told.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)
    # Checkpoints are written by checkpoint.py, not accelerate's save_state (pickled state, not atomic).
    project = ProjectConfiguration(project_dir=str(project_dir)) if project_dir is not None else None
    return Accelerator(
        cpu=not torch.cuda.is_available(),  # see modeling_place.training.data.distributed_state
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=grad_accum,
        log_with=trackers or None,
        project_config=project,
        kwargs_handlers=[ddp],
    )


class AcceleratedLoop:
    """The shared loop; a subclass prepares `model`, `optimizer`, `scheduler` and `train_loader` with
    `self.accelerator`, and implements `_train_batch`, `_after_step` and (optionally) `_after_epoch`."""

    desc = "train"
    extra_checkpoint_files: tuple[str, ...] = ()  # the names `_extra_tensors` returns

    def __init__(self, accelerator: Accelerator, run_dir: str | Path | None, keep_checkpoints: int,
                 max_grad_norm: float | None, progress_bar: bool) -> None:
        checkpointing.require_supported(accelerator)
        self.accelerator = accelerator
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.keep_checkpoints, self.max_grad_norm, self.show_progress = keep_checkpoints, max_grad_norm, progress_bar
        self.progress = TrainProgress()
        self.model: Any = None
        self.optimizer: Any = None
        self.scheduler: Any = None
        self.train_loader: Any = None
        self.bar: tqdm | None = None
        self.start_step, self.start_time = 0, time.perf_counter()

    # -- one epoch -----------------------------------------------------------------------------------------
    def _epoch_batches(self) -> Any:
        # Through the prepared loader: accelerate's DataLoaderShard keeps its own epoch counter (0 in a restarted
        # process) and pushes it into the sampler when iterated, which would replay epoch 0's order after a resume.
        self.train_loader.set_epoch(self.progress.epoch)
        if self.progress.batch_in_epoch:
            return self.accelerator.skip_first_batches(self.train_loader, self.progress.batch_in_epoch)
        return self.train_loader

    def _run_epoch(self) -> bool:
        """Train the rest of the current epoch; False when `_after_step` stopped it early (end of training)."""
        for batch in self._epoch_batches():
            result = self._train_batch(batch)
            self.progress.batch_in_epoch += 1
            if not self.accelerator.sync_gradients:
                continue
            self.progress.step += 1
            self.bar.update(1)
            if self._after_step(result):
                return False
        self.progress.epoch += 1
        self.progress.batch_in_epoch = 0
        self._after_epoch()
        return True

    def _backward_and_step(self, loss: torch.Tensor) -> None:
        """Backward, then (at the end of an accumulation) clipping, the optimizer and the scheduler; call it
        inside `accelerator.accumulate(model)`, where accelerate scales the loss and skips DDP's sync."""
        self.accelerator.backward(loss)
        if self.accelerator.sync_gradients and self.max_grad_norm is not None:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.optimizer.step()
        if self.accelerator.sync_gradients and self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _train_batch(self, batch: Any) -> Any:
        raise NotImplementedError

    def _after_step(self, result: Any) -> bool:
        """After an optimizer step (progress.step counts it); True stops the training."""
        raise NotImplementedError

    def _after_epoch(self) -> None:
        """After an epoch (progress.epoch counts it)."""

    def _open_bar(self, total: int) -> None:
        self.start_step, self.start_time = self.progress.step, time.perf_counter()
        self.bar = tqdm(total=total, initial=self.progress.step, desc=self.desc,
                        disable=not (self.show_progress and self.accelerator.is_local_main_process))

    # -- checkpoints -------------------------------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        """Complete checkpoints of this run (`checkpoints/checkpoint_<step>`), oldest first."""
        return checkpointing.complete_checkpoints(self.run_dir / "checkpoints") if self.run_dir is not None else []

    def _trainer_state(self) -> dict[str, Any]:
        """What `trainer_state.json` holds: the counters (a subclass may add JSON entries)."""
        return self.progress.state_dict()

    def _load_trainer_state(self, state: dict[str, Any]) -> None:
        self.progress.load_state_dict(state)

    def _extra_tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        """Further safetensors files of a checkpoint (`<name>.safetensors`), e.g. the best epoch's weights."""
        return {}

    def _load_extra_tensors(self, tensors: dict[str, dict[str, torch.Tensor]]) -> None:
        """Restore what `_extra_tensors` saved (one entry per file found)."""

    def _before_resume(self, checkpoint: Path) -> None:
        """Checks before `checkpoint` is loaded (e.g. that it holds the same model)."""

    def _write_checkpoint(self) -> Path:
        return checkpointing.save_checkpoint(
            self.accelerator, self.run_dir / "checkpoints", self.progress.step, self.model, self.optimizer,
            self.scheduler, self._trainer_state(), keep=self.keep_checkpoints, extra=self._extra_tensors())

    def _load_newest_checkpoint(self) -> Path | None:
        """Restore the newest complete checkpoint of `run_dir` (model, optimizer, scheduler, RNG, counters)."""
        newest = checkpointing.newest_resumable(self.run_dir / "checkpoints") if self.run_dir is not None else None
        if newest is None:
            return None
        self._before_resume(newest)
        state = checkpointing.load_checkpoint(self.accelerator, newest, self.model, self.optimizer, self.scheduler)
        self._load_trainer_state(state)
        self._load_extra_tensors({name: load_file(str(newest / f"{name}.safetensors"))
                                  for name in self.extra_checkpoint_files if (newest / f"{name}.safetensors").exists()})
        self.accelerator.print(f"resumed from {newest} at step {self.progress.step}")
        return newest

    def _append_metrics(self, record: dict[str, Any], filename: str) -> None:
        """One JSON line per log to `run_dir/<filename>` (curves without a tracker). A resumed run re-logs the
        steps after its checkpoint: readers keep the last record per (kind, step)."""
        if self.accelerator.is_main_process and self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(self.run_dir / filename, "a", encoding="utf-8") as log:
                log.write(json.dumps(record) + "\n")

    def end(self) -> None:
        self.accelerator.end_training()


def flat_config(values: dict[str, Any]) -> dict[str, Any]:
    """Tracker-friendly config: nested mappings and lists become JSON strings."""
    return {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in values.items()}
