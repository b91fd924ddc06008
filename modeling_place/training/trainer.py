"""PlaceTrainer: PLACE pretraining on the shared accelerate loop (`loop.py`, which head fine-tuning uses too).

The loop owns mixed precision, gradient accumulation and clipping, rotating checkpoints with exact resume (step,
epoch, position in the epoch, RNG states, scheduler; atomic and pickle-free: checkpoint.py), trackers and a progress
bar. This trainer adds AdamW with weight-decay groups, a cosine schedule with warm-up, periodic validation (loss and
image-to-report Recall@1/5), bad-sample accounting and a guard that stops on a non-finite loss without overwriting
the last good checkpoint.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import DistributedType, set_seed
from torch.utils.data import DataLoader
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from modeling_place import PlaceModel
from modeling_place.processing.processing_place import PlaceProcessor
from modeling_place.publishing import write_model_card

from .config import TrainConfig
from .data import EpochShuffleSampler, ImageReportPairs, PairSplits, PlaceCollator
from .loop import AcceleratedLoop, TrainProgress, flat_config, make_accelerator, resolve_mixed_precision
from .sharding import prepare_for_fsdp, save_pretrained_gathered

__all__ = ["NonFiniteLossError", "PlaceTrainer", "TrainProgress", "parameter_groups", "recall_at_k",
           "resolve_mixed_precision"]

# PlaceConfig.to_dict() entries that differ between equal models (library version, where it was loaded from)
VOLATILE_CONFIG_KEYS = frozenset({"transformers_version", "_name_or_path", "_commit_hash", "architectures", "auto_map"})
METRICS_LOG = "metrics.jsonl"  # per-log training and validation records, in run_dir and the saved folder
MODEL_INPUTS = ("pixel_values", "input_ids", "attention_mask", "sentence_ids", "sentence_hashes")
# Parameters that are not weight-decayed besides biases and norms (all 1-D): learned tokens and embeddings.
NO_DECAY_NAMES = ("pos_embed", "cls_token", "reg_token", "queries", "mask_token", "logit_scale", "embeddings")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: matrices decay; biases, norms, learned tokens and embeddings do not."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        skip = parameter.ndim < 2 or any(part in name for part in NO_DECAY_NAMES)
        (no_decay if skip else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def recall_at_k(image_embeds: torch.Tensor, text_embeds: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Image-to-report Recall@k: row i's own report (column i) among its top-k most similar reports."""
    similarity = image_embeds.float() @ text_embeds.float().t()
    own = similarity.diagonal().unsqueeze(1)
    rank = (similarity > own).sum(dim=1)  # reports scored strictly above the true one
    return {f"recall@{k}": (rank < k).float().mean().item() for k in ks}


class PlaceTrainer(AcceleratedLoop):
    """Pretrains a `PlaceModel` on image–report pairs with `accelerate` (1 CPU → many GPUs, same code)."""

    desc = "pretrain"

    def __init__(self, config: TrainConfig, model: PlaceModel, processor: PlaceProcessor, splits: PairSplits) -> None:
        self.config, self.processor = config, processor
        self.skipped_rows = splits.skipped_rows
        # An objective switched off leaves its heads without gradients.
        accelerator = make_accelerator(config.run_dir, resolve_mixed_precision(config.mixed_precision),
                                       config.grad_accum, config.trackers,
                                       find_unused_parameters=min(model.config.loss_weights.values()) == 0)
        super().__init__(accelerator, config.run_dir, config.keep_checkpoints, config.max_grad_norm, config.progress_bar)
        set_seed(config.seed)
        if config.gradient_checkpointing:
            model.activation_checkpointing_enable()
        if accelerator.distributed_type == DistributedType.FSDP:
            prepare_for_fsdp(model)
        optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.lr, betas=(0.9, 0.98))
        # transformers' schedule: linear warm-up from 0, then a half cosine down to min_lr_ratio x lr at max_steps
        self.scheduler = get_cosine_with_min_lr_schedule_with_warmup(
            optimizer, config.warmup_steps, config.max_steps, min_lr_rate=config.min_lr_ratio)
        self.sampler = EpochShuffleSampler(len(splits.train), config.seed)
        train_loader = self._loader(splits.train, splits, train=True)
        val_loader = self._loader(splits.validation, splits, train=False) if splits.validation is not None else None
        self.model, self.optimizer, self.train_loader = self.accelerator.prepare(model, optimizer, train_loader)
        self.val_loader = self.accelerator.prepare(val_loader) if val_loader is not None else None
        self.history: list[dict[str, float]] = []
        self._pending = torch.zeros(2)  # this rank's (samples, skipped) since the last sync
        self.last_validation: tuple[int, dict[str, float]] | None = None

    # -- set-up ------------------------------------------------------------------------------------------
    def _loader(self, table: Any, splits: PairSplits, train: bool) -> DataLoader:
        dataset = ImageReportPairs(table, splits.image_column, splits.text_column, self.processor)
        batch_size = self.config.batch_size
        if not train:  # validation batches must be full on every rank (the loss all-gathers equal shapes)
            if len(dataset) < self.accelerator.num_processes:
                raise ValueError(f"{len(dataset)} validation pairs cannot be shared by "
                                 f"{self.accelerator.num_processes} processes; raise validation_pairs or set it to 0")
            batch_size = min(batch_size, len(dataset) // self.accelerator.num_processes)
        workers = self.config.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self.sampler if train else None,
            drop_last=True,
            collate_fn=PlaceCollator(self.processor, train=train and self.config.augment, seed=self.config.seed),
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            # Its own generator: starting an epoch's iterator must not draw from the global RNG, or a resumed
            # run (whose iterator starts mid-epoch) would see different dropout masks than an uninterrupted one.
            generator=torch.Generator().manual_seed(self.config.seed),
        )

    # -- checkpoints -------------------------------------------------------------------------------------
    def maybe_resume(self) -> bool:
        """Load the newest complete checkpoint of `run_dir` (model, optimizer, scheduler, RNG, counters)."""
        return self.config.resume and self._load_newest_checkpoint() is not None

    def _model_config(self) -> dict[str, Any]:
        """The model's configuration minus what does not change the weights' meaning (versions, paths)."""
        config = self.accelerator.unwrap_model(self.model).config.to_dict()
        # through JSON, as saved: integer label ids become strings
        return json.loads(json.dumps({k: v for k, v in config.items() if k not in VOLATILE_CONFIG_KEYS}))

    def _before_resume(self, checkpoint: Path) -> None:
        self._check_same_model()

    def _check_same_model(self) -> None:
        """Refuse to resume checkpoints of a differently configured model (a changed default, other flags)."""
        saved_path = self.run_dir / "model_config.json"
        if not saved_path.exists():  # run directories from before this record existed
            return
        saved, current = _pretraining_fields(json.loads(saved_path.read_text())), _pretraining_fields(self._model_config())
        differing = sorted(k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k))
        if differing:
            details = ", ".join(f"{k}: checkpoint {saved.get(k)!r}, now {current.get(k)!r}"
                                if not isinstance(current.get(k), dict) else f"{k} (sub-config)" for k in differing[:5])
            raise ValueError(f"{self.run_dir} holds checkpoints of a different model ({details}). Pass the same "
                             "--model overrides, a new --run_dir, or --resume=false to start over.")

    def _sync_counters(self) -> None:
        """Add every rank's samples and bad samples since the last sync to the global counters: measured, not
        inferred from the process count, so a launch that silently started one rank shows in `samples`."""
        samples, skipped = self.accelerator.reduce(self._pending.to(self.accelerator.device), "sum").tolist()
        self.progress.samples += int(samples)
        self.progress.skipped += int(skipped)
        self._pending.zero_()

    def save_checkpoint(self) -> None:
        self._raise_if_nonfinite()  # never overwrite a good checkpoint with diverged weights
        self._sync_counters()
        self._write_checkpoint()
        if self.accelerator.is_main_process:
            self.config.save(self.run_dir / "train_config.json")
            (self.run_dir / "model_config.json").write_text(json.dumps(self._model_config(), indent=2, sort_keys=True))

    # -- loop --------------------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Train to `max_steps` (resuming if a checkpoint exists); returns a summary of the run."""
        self.maybe_resume()
        self.accelerator.init_trackers("place-pretrain", config=flat_config(self.config.to_dict()))
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=self.accelerator.device)
        self._open_bar(self.config.max_steps)
        initial = self.evaluate() if self.start_step == 0 and self.val_loader is not None else None
        while self.progress.step < self.config.max_steps:
            self._run_epoch()
        self.bar.close()
        self._raise_if_nonfinite()
        return self._summary(initial, self.start_step, time.perf_counter() - self.start_time)

    def _train_batch(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self.model.train()
        # CPU tensors from the collator: counting them needs no device sync
        self._pending += torch.tensor([batch["pixel_values"].shape[0], int(batch["skipped"])], dtype=torch.float32)
        with self.accelerator.accumulate(self.model):
            output = self.model(**{k: batch[k] for k in MODEL_INPUTS}, return_loss=True)
            self._nonfinite |= ~torch.isfinite(output.loss.detach())
            self._backward_and_step(output.loss)
        return torch.stack([_value(output, n) for n in ("loss", "loss_ita", "loss_pcma", "loss_ce")]).detach()

    def _after_step(self, losses: torch.Tensor) -> bool:
        step = self.progress.step
        if step % self.config.log_every == 0 or step == self.config.max_steps:
            self._log_train(losses)
        if self.val_loader is not None and (step % self.config.eval_every == 0 or step == self.config.max_steps):
            self.accelerator.log(self.evaluate(), step=step)
        if step % self.config.checkpoint_every == 0 or step == self.config.max_steps:
            self.save_checkpoint()
        return step >= self.config.max_steps

    def _log_train(self, losses: torch.Tensor) -> None:
        self._raise_if_nonfinite()
        self._sync_counters()
        self._check_bad_fraction()
        values = dict(zip(("loss", "loss_ita", "loss_pcma", "loss_ce"), self.accelerator.reduce(losses, "mean").tolist()))
        elapsed = max(time.perf_counter() - self.start_time, 1e-9)
        global_batch = self.config.batch_size * self.config.grad_accum * self.accelerator.num_processes
        values.update(lr=self.scheduler.get_last_lr()[0], samples_per_s=(self.progress.step - self.start_step) * global_batch / elapsed)
        self.history.append({"step": self.progress.step, **values})
        self._append_metrics({"kind": "train", "step": self.progress.step, **values}, METRICS_LOG)
        self.accelerator.log(values, step=self.progress.step)
        self.bar.set_postfix(loss=f"{values['loss']:.3f}", sps=f"{values['samples_per_s']:.1f}")

    def _raise_if_nonfinite(self) -> None:
        if hasattr(self, "_nonfinite") and bool(self.accelerator.reduce(self._nonfinite.float(), "sum") > 0):
            last = self.checkpoints()
            raise NonFiniteLossError(
                f"the loss became NaN/inf at or before step {self.progress.step}; training stopped. "
                f"Last good checkpoint: {last[-1] if last else 'none (no checkpoint was saved yet)'}. "
                "Lower the learning rate or use mixed_precision=no, then resume."
            )

    def _check_bad_fraction(self) -> None:
        fraction = self.progress.skipped / max(1, self.progress.samples)
        if fraction > self.config.max_bad_fraction:
            raise RuntimeError(
                f"{self.progress.skipped} of {self.progress.samples} samples were unreadable or had empty reports "
                f"({fraction:.1%} > max_bad_fraction={self.config.max_bad_fraction}); check the data."
            )

    # -- validation --------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation loss (each objective) and image-to-report Recall@1/5 over the validation pairs."""
        self.model.eval()
        losses, images, texts = [], [], []
        for batch in self.val_loader:
            output = self.model(**{k: batch[k] for k in MODEL_INPUTS}, return_loss=True)
            losses.append(torch.stack([_value(output, n) for n in ("loss", "loss_ita", "loss_pcma", "loss_ce")]))
            images.append(self.accelerator.gather_for_metrics(output.image_embeds))
            texts.append(self.accelerator.gather_for_metrics(output.text_embeds))
        mean = self.accelerator.reduce(torch.stack(losses).mean(0), "mean").tolist()
        metrics = {f"val_{name}": value for name, value in zip(("loss", "loss_ita", "loss_pcma", "loss_ce"), mean)}
        metrics.update({f"val_{k}": v for k, v in recall_at_k(torch.cat(images), torch.cat(texts)).items()})
        self.accelerator.print(f"step {self.progress.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
                               flush=True)
        self.last_validation = (self.progress.step, metrics)
        self._append_metrics({"kind": "validation", "step": self.progress.step, **metrics}, METRICS_LOG)
        return metrics

    # -- results -----------------------------------------------------------------------------------------
    def _summary(self, initial: dict[str, float] | None, start_step: int, seconds: float) -> dict[str, Any]:
        self._sync_counters()
        final = {}
        if self.val_loader is not None:
            step, metrics = self.last_validation or (-1, {})
            final = metrics if step == self.progress.step else self.evaluate()
        global_batch = self.config.batch_size * self.config.grad_accum * self.accelerator.num_processes
        return {
            "steps": self.progress.step,
            "seconds": seconds,
            "samples_per_s": (self.progress.step - start_step) * global_batch / max(seconds, 1e-9),
            "skipped_samples": self.progress.skipped,
            "skipped_rows": self.skipped_rows,
            "samples": self.progress.samples,
            "initial_validation": initial,
            "final_validation": final,
            "last_train_log": self.history[-1] if self.history else None,
        }

    def save_pretrained(self, output_dir: str | Path, summary: dict[str, Any] | None = None) -> None:
        """Model (safetensors + Hub custom code), processor, training config and summary → `output_dir`."""
        self.accelerator.wait_for_everyone()
        output_dir = Path(output_dir)
        save_pretrained_gathered(self.accelerator, self.model, output_dir)  # under FSDP every rank gathers
        if not self.accelerator.is_main_process:
            return
        self.processor.save_pretrained(output_dir)
        self.config.save(output_dir / "train_config.json")
        if summary is not None:
            (output_dir / "training_summary.json").write_text(json.dumps(summary, indent=2))
        if (self.run_dir / METRICS_LOG).exists():
            shutil.copyfile(self.run_dir / METRICS_LOG, output_dir / METRICS_LOG)
        # model.save_pretrained wrote the card before the processor and train_config.json (its data and licence)
        write_model_card(output_dir)


def _value(output: Any, name: str) -> torch.Tensor:
    value = getattr(output, name)
    return value.detach().float() if value is not None else torch.zeros((), device=output.loss.device)


def _pretraining_fields(config: dict[str, Any]) -> dict[str, Any]:
    """The configuration fields that make two pretraining models differ: the heads' options are not read by
    pretraining, and a retired option at its neutral value changes nothing (run_dirs from before either)."""
    from modeling_place.configuration_place import HEAD_OPTION_NAMES, RETIRED_OPTIONS

    return {k: v for k, v in config.items()
            if k not in HEAD_OPTION_NAMES and not (k in RETIRED_OPTIONS and v == RETIRED_OPTIONS[k])}
