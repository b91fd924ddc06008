"""Atomic, pickle-free training checkpoints (`run_dir/checkpoints/checkpoint_<step>`).

Why not `accelerator.save_state`: it pickles registered objects (`custom_checkpoint_*.pkl`, loaded with
`weights_only=False`, so a tampered `run_dir` runs code on resume) and writes straight into the final folder, so
a kill during a save leaves a half-written newest checkpoint that every restart then tries to load.

Here every file is safetensors or JSON: the model's weights (`model.safetensors`), the optimizer's tensors
(`optimizer.safetensors`) with its hyper-parameters (`optimizer.json`), the scheduler and gradient scaler
(`scheduler.json`, `scaler.json`), each rank's RNG states (`rng_state_<rank>.json`) and the trainer's counters
(`trainer_state.json`). A checkpoint is written under a temporary name (`.tmp-checkpoint_<step>`) and renamed
when complete; `trainer_state.json` is written last, so a folder without it is incomplete.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from . import sharding

PREFIX = "checkpoint_"
TEMP_PREFIX = ".tmp-"
TRAINER_STATE = "trainer_state.json"  # written last: marks a checkpoint complete
MODEL_FILE, OPTIMIZER_TENSORS, OPTIMIZER_JSON = "model.safetensors", "optimizer.safetensors", "optimizer.json"
SCHEDULER_JSON, SCALER_JSON = "scheduler.json", "scaler.json"
REQUIRED = (MODEL_FILE, OPTIMIZER_TENSORS, OPTIMIZER_JSON, SCHEDULER_JSON, TRAINER_STATE)
LEGACY_FILES = ("custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin")  # accelerate.save_state's


class LegacyCheckpointError(ValueError):
    """A checkpoint written by `accelerator.save_state` (pickled state): not loaded, for safety."""


def require_supported(accelerator: Any) -> None:
    """Fail at start, not at the first save: these checkpoints hold whole tensors (one process, DDP's replicas, or
    FSDP's shards gathered: sharding.py). DeepSpeed and Megatron-LM keep their state in their own engines."""
    kind = str(accelerator.distributed_type).rsplit(".", 1)[-1]
    if kind in ("DEEPSPEED", "MEGATRON_LM"):
        raise NotImplementedError(f"PlaceTrainer's checkpoints do not support {kind} (sharded engine state); "
                                  "train with DDP (examples/accelerate/multi_gpu.yaml), FSDP or a single process")


def checkpoint_step(folder: Path) -> int | None:
    match = re.fullmatch(rf"{PREFIX}(\d+)", folder.name)
    return int(match.group(1)) if match else None


def complete_checkpoints(root: Path) -> list[Path]:
    """The complete checkpoints under `root`, oldest first (incomplete ones are left out silently)."""
    found = [p for p in root.glob(f"{PREFIX}*") if checkpoint_step(p) is not None and _missing(p) == []]
    return sorted(found, key=checkpoint_step)


def newest_resumable(root: Path) -> Path | None:
    """The newest complete checkpoint; each newer incomplete one (a save killed half-way) is skipped with a
    warning naming it. Raises `LegacyCheckpointError` when the newest usable one is in accelerate's pickled format."""
    if not root.is_dir():
        return None
    for temp in sorted(root.glob(f"{TEMP_PREFIX}{PREFIX}*")):
        warnings.warn(f"ignoring {temp}: a checkpoint save was interrupted (it is removed at the next save)", stacklevel=2)
    candidates = sorted((p for p in root.glob(f"{PREFIX}*") if checkpoint_step(p) is not None), key=checkpoint_step)
    for folder in reversed(candidates):
        missing = _missing(folder)
        if not missing:
            return folder
        if any((folder / name).exists() for name in LEGACY_FILES):
            raise LegacyCheckpointError(
                f"{folder} was written by an older PLACE (accelerate's pickled state), which is not loaded because "
                "unpickling can run code. Start over with --resume=false or a new --run_dir.")
        warnings.warn(f"skipping incomplete checkpoint {folder} (missing {', '.join(missing)}); "
                      "resuming from the previous one", stacklevel=2)
    return None


def _missing(folder: Path) -> list[str]:
    return [name for name in REQUIRED if not (folder / name).is_file()]


# -- saving ----------------------------------------------------------------------------------------------
def save_checkpoint(accelerator: Any, root: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, trainer_state: dict[str, Any], keep: int,
                    extra: dict[str, dict[str, torch.Tensor]] | None = None) -> Path:
    """Write `root/checkpoint_<step>` atomically (every rank calls this); keep the newest `keep` checkpoints.

    `scheduler` may be None (a loop that sets its rates itself); `extra` holds further tensors to save, one
    `<name>.safetensors` per entry (e.g. the best epoch's weights of a head)."""
    temp, final = root / f"{TEMP_PREFIX}{PREFIX}{step}", root / f"{PREFIX}{step}"
    main = accelerator.is_main_process
    model_state, optimizer_state = _whole_states(model, optimizer)  # collective under FSDP
    if main:
        for stale in root.glob(f"{TEMP_PREFIX}{PREFIX}*"):  # left by a killed save
            shutil.rmtree(stale)
        temp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    _write_json(temp / f"rng_state_{accelerator.process_index}.json", rng_state())
    if main:
        if model_state is None:
            save_model(accelerator.unwrap_model(model), str(temp / MODEL_FILE))
        else:
            save_file({k: v.contiguous() for k, v in model_state.items()}, str(temp / MODEL_FILE))
        tensors, meta = optimizer_to_safe(optimizer_state)
        save_file(tensors, str(temp / OPTIMIZER_TENSORS))
        _write_json(temp / OPTIMIZER_JSON, meta)
        _write_json(temp / SCHEDULER_JSON, scheduler.state_dict() if scheduler is not None else {})
        for name, tensors in (extra or {}).items():
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(temp / f"{name}.safetensors"))
        if accelerator.scaler is not None:
            _write_json(temp / SCALER_JSON, accelerator.scaler.state_dict())
    accelerator.wait_for_everyone()  # every rank's RNG file is in place before the folder is declared complete
    if main:
        _write_json(temp / TRAINER_STATE, trainer_state)
        if final.exists():  # an incomplete folder of the same step, from a killed run
            shutil.rmtree(final)
        temp.rename(final)
        for old in complete_checkpoints(root)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def _whole_states(model: torch.nn.Module,
                  optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any]]:
    """(model tensors, optimizer state) to write: under FSDP both gathered from the shards (every rank takes part;
    rank 0 gets them, the optimizer's keyed by parameter name), else (None: the model as it is, the optimizer's
    own `state_dict`)."""
    if not sharding.is_sharded(model):
        return None, optimizer.state_dict()
    return sharding.full_model_state(model), sharding.full_optimizer_state(model, optimizer)


def optimizer_to_safe(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer `state_dict` → (tensors for safetensors, the rest for JSON)."""
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_safe(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *meta["scalars"].items()]:
        index, name = key.rsplit(".", 1)  # index: a position, or (FSDP) a dotted parameter name
        state.setdefault(int(index) if index.isdigit() else index, {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> dict[str, Any]:
    """This process's Python, NumPy and torch (CPU and CUDA) generator states, as JSON values."""
    version, internal, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(internal), gauss], "numpy": [name, keys.tolist(), position, has_gauss, cached],
             "torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


# -- loading ---------------------------------------------------------------------------------------------
def load_checkpoint(accelerator: Any, folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any) -> dict[str, Any]:
    """Restore a checkpoint written by `save_checkpoint` into the prepared objects; returns the trainer state.
    Nothing is unpickled: safetensors and JSON only."""
    meta = json.loads((folder / OPTIMIZER_JSON).read_text())
    optimizer_state = optimizer_from_safe(load_file(str(folder / OPTIMIZER_TENSORS)), meta)
    if sharding.is_sharded(model):  # every rank reads the whole tensors and keeps its shards
        sharding.load_full_model_state(model, load_file(str(folder / MODEL_FILE)))
        sharding.load_full_optimizer_state(model, optimizer, optimizer_state)
    else:
        load_model(accelerator.unwrap_model(model), str(folder / MODEL_FILE), device=str(accelerator.device))
        optimizer.load_state_dict(optimizer_state)
    if scheduler is not None:
        scheduler.load_state_dict(json.loads((folder / SCHEDULER_JSON).read_text()))
    if accelerator.scaler is not None and (folder / SCALER_JSON).exists():
        accelerator.scaler.load_state_dict(json.loads((folder / SCALER_JSON).read_text()))
    rng_file = folder / f"rng_state_{accelerator.process_index}.json"
    if rng_file.exists():
        set_rng_state(json.loads(rng_file.read_text()))
    else:  # saved with fewer processes: the run goes on, but not bit-exact
        warnings.warn(f"{folder} has no RNG state for process {accelerator.process_index}; dropout and augmentation "
                      "draws will differ from an uninterrupted run", stacklevel=2)
    return json.loads((folder / TRAINER_STATE).read_text())


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value))
