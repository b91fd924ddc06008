"""FSDP for PLACE models: what sharding needs from them, and whole-tensor state dicts of a sharded model.

accelerate shards a model with FSDP on GPUs (`distributed_type: FSDP`, `fsdp_version: 2` in
examples/accelerate/fsdp_multinode.yaml). Two things stop a PLACE model there unless `prepare_for_fsdp` ran first:
FSDP (1 and 2) refuses 0-d parameters (`PlaceModel.logit_scale`), and accelerate's FSDP2 preparation asks the model
for its input/output embeddings, which PLACE's classes do not name (transformers then raises).

Checkpoints and saved folders hold whole tensors under the model's usual names: `full_model_state` gathers them
(torch's `get_model_state_dict(full_state_dict=True, cpu_offload=True)`, what `accelerator.get_state_dict` runs
for FSDP2), so a folder saved from an FSDP run loads with `AutoModel.from_pretrained`.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch.nn.utils import parametrize

# torch's name for a parametrized tensor: [<module>.]parametrizations.<name>.original
PARAMETRIZED = re.compile(r"^(?:(?P<owner>.*)\.)?parametrizations\.(?P<name>[^.]+)\.original$")


class _Scalar(torch.nn.Module):
    """Stores a 0-d parameter as a 1-element one (which FSDP shards) and gives the module the 0-d value."""

    def forward(self, stored: torch.Tensor) -> torch.Tensor:
        return stored.reshape(())

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        return value.reshape(1)


def prepare_for_fsdp(model: torch.nn.Module) -> None:
    """Make `model` shardable by FSDP before `accelerator.prepare` (see the module docstring); in place."""
    for name, parameter in list(model.named_parameters()):
        if parameter.ndim == 0:
            owner_name, _, leaf = name.rpartition(".")
            owner = model.get_submodule(owner_name)
            original = type(owner)
            parametrize.register_parametrization(owner, leaf, _Scalar(), unsafe=True)
            # torch swaps in a `Parametrized<Class>` subclass: keep the saved `architectures` and custom-code files
            # (which follow the class's name and module) those of the model's own class.
            type(owner).__name__, type(owner).__qualname__ = original.__name__, original.__qualname__
            type(owner).__module__ = original.__module__
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        try:
            getattr(model, getter)()
        except NotImplementedError:  # no single embedding table: nothing for accelerate to carve out
            setattr(model, getter, lambda: None)


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether FSDP manages `model`'s parameters (FSDP2's DTensors, or an FSDP1 wrapper)."""
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.tensor import DTensor

    return (any(isinstance(p, DTensor) for p in model.parameters())
            or any(isinstance(m, FullyShardedDataParallel) for m in model.modules()))


def plain_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`a.parametrizations.b.original` (1 element) → `a.b` (0-d): the names and shapes of the unsharded model."""
    plain = {}
    for key, value in state.items():
        match = PARAMETRIZED.match(key)
        if match:
            key = f"{match['owner']}.{match['name']}" if match["owner"] else match["name"]
            value = value.reshape(())
        plain[key] = value
    return plain


def parametrized_names(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `plain_names` for the tensors that `prepare_for_fsdp` parametrized in `model`."""
    stored = {next(iter(plain_names({key: torch.zeros(1)}))): key
              for key in model.state_dict() if PARAMETRIZED.match(key)}
    return {stored.get(key, key): value.reshape(1) if key in stored else value for key, value in state.items()}


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's tensors under its plain names, on the CPU; collective under FSDP (every rank calls it,
    rank 0 gets the tensors, the others an empty dict)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return plain_names(get_model_state_dict(model, options=options))


def load_full_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load whole tensors (plain names, e.g. from `full_model_state`) into a sharded model; every rank passes them."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, parametrized_names(model, state), options=StateDictOptions(full_state_dict=True))


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's whole state keyed by parameter names (collective under FSDP; rank 0 gets it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def save_pretrained_gathered(accelerator: Any, model: torch.nn.Module, output_dir: Any) -> None:
    """`save_pretrained` of a prepared model, whole tensors under plain names even when FSDP sharded it (every rank
    calls this; the main process writes)."""
    state = full_model_state(model) if is_sharded(model) else None
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(output_dir, state_dict=state)
