"""Head fine-tuning on the accelerate loop pretraining uses (modeling_place/training/finetune.py): 2-process DDP equals
one process with the doubled batch; a killed run resumes to bit-identical weights; the best validated epoch is kept,
also across a resume."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from accelerate.state import AcceleratorState
from safetensors.torch import load_file, save_file

from modeling_place import PlaceConfig, PlaceForImageClassification
from modeling_place.training.finetune import FitConfig, HeadTask, HeadTrainer, fit
from tests.helpers import micro_config, spawn_launcher

ROWS, LABELS = 16, 3


def reset_accelerator_state() -> None:
    """accelerate keeps one process-wide state (precision, accumulation): a run that sets its own starts clean."""
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    reset_accelerator_state()
    yield
    reset_accelerator_state()


def micro_head(dropout: float = 0.0) -> PlaceForImageClassification:
    """A micro multi-label classification head that fine-tunes its encoder (the default)."""
    torch.manual_seed(0)
    config = PlaceConfig(**micro_config(), num_labels=LABELS, problem_type="multi_label_classification",
                         classifier_dropout=dropout)
    return PlaceForImageClassification(config)


def head_task(head: PlaceForImageClassification) -> HeadTask:
    """16 smooth random images with random labels; each epoch its own shuffle; validation: minus the loss."""
    generator = torch.Generator().manual_seed(3)
    pixels = F.interpolate(torch.rand(ROWS, 3, 4, 4, generator=generator), size=head.config.image_size, mode="bilinear")
    labels = (torch.rand(ROWS, LABELS, generator=generator) > 0.5).float()

    @torch.no_grad()
    def validate() -> float:
        device = next(head.parameters()).device
        return -head(pixel_values=pixels.to(device), labels=labels.to(device)).loss.item()

    order = lambda epoch: [torch.randperm(ROWS, generator=torch.Generator().manual_seed(epoch))]  # noqa: E731
    return HeadTask(head, ROWS, order, lambda rows: {"pixel_values": pixels[rows], "labels": labels[rows]}, validate)


def run_config(**overrides) -> FitConfig:
    return FitConfig(**{"epochs": 2, "lr": 1e-2, "batch_size": 8, "progress_bar": False, "mixed_precision": "no",
                        **overrides})


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def _ddp_worker(folder: str) -> None:
    import torch.distributed as dist

    # one thread per rank: two ranks share the machine's cores
    torch.set_num_threads(1)
    head = micro_head()
    result = fit(head_task(head), run_config(batch_size=4), log=lambda _: None)
    if dist.get_rank() == 0:
        save_file(weights(head), f"{folder}/ddp.safetensors")
        summary = {"world": dist.get_world_size(), **{k: result[k] for k in ("steps", "samples", "best_epoch")}}
        Path(folder, "ddp.json").write_text(json.dumps(summary))


def test_two_process_head_fine_tune_takes_twice_the_batch_and_matches_one_process_with_it(tmp_path):
    spawn_launcher(_ddp_worker, args=(str(tmp_path),), num_processes=2)
    ddp = json.loads((tmp_path / "ddp.json").read_text())
    # 2 ranks x batch 4 = 8 rows per step: 16 rows are 2 steps per epoch, as one process with batch 8
    assert ddp["world"] == 2 and ddp["steps"] == 4 and ddp["samples"] == 2 * ROWS
    head = micro_head()
    single = fit(head_task(head), run_config(batch_size=8), log=lambda _: None)
    assert (single["steps"], single["samples"], single["best_epoch"]) == (4, 2 * ROWS, ddp["best_epoch"])
    ranks, start = load_file(tmp_path / "ddp.safetensors"), weights(micro_head())
    trained = weights(head)
    assert any(not torch.equal(trained[k], start[k]) for k in start)  # the encoder trained too
    # The attention's key bias has an exactly zero gradient (softmax ignores a shift shared by all keys): Adam
    # normalises its rounding noise, which differs with gloo's summation order, into steps of up to lr.
    dim = head.config.vision_config.model_args["embed_dim"]
    key_bias = "vision_model.timm_model.blocks.0.attn.qkv.bias"
    for tensors in (ranks, trained):
        tensors[key_bias] = torch.cat([tensors[key_bias][:dim], tensors[key_bias][2 * dim:]])
    for name, value in trained.items():  # gloo's all-reduce sums in another order than one process
        torch.testing.assert_close(ranks[name], value, rtol=1e-4, atol=1e-5, msg=name)


def kill_after_checkpoint(monkeypatch, step: int) -> None:
    """The next run raises right after it wrote its checkpoint of `step` (a kill between two steps)."""
    original = HeadTrainer._write_checkpoint

    def write_then_die(self):
        folder = original(self)
        if self.progress.step == step:
            raise KeyboardInterrupt(f"killed after the checkpoint of step {step}")
        return folder

    monkeypatch.setattr(HeadTrainer, "_write_checkpoint", write_then_die)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> tuple[dict[str, torch.Tensor], dict]:
    """An uninterrupted 3-epoch run (4 steps per epoch, checkpoints every step), with dropout: RNG matters."""
    reset_accelerator_state()
    head = micro_head(dropout=0.3)
    config = run_config(epochs=3, batch_size=4, run_dir=str(tmp_path_factory.mktemp("straight")), checkpoint_every=1)
    result = fit(head_task(head), config, log=lambda _: None)
    return weights(head), result


@pytest.mark.parametrize("kill_step", [6, 8], ids=["inside-epoch-1", "epoch-boundary"])
def test_a_killed_head_run_resumes_to_bit_identical_weights(tmp_path, monkeypatch, straight_run, kill_step):
    config = run_config(epochs=3, batch_size=4, run_dir=str(tmp_path / "run"), checkpoint_every=1)
    kill_after_checkpoint(monkeypatch, kill_step)
    with pytest.raises(KeyboardInterrupt):
        fit(head_task(micro_head(dropout=0.3)), config, log=lambda _: None)
    monkeypatch.undo()
    newest = sorted((tmp_path / "run" / "checkpoints").iterdir())[-1]
    assert newest.name == f"checkpoint_{kill_step}"
    assert {p.suffix for p in newest.iterdir()} == {".json", ".safetensors"}  # nothing pickled
    state = json.loads((newest / "trainer_state.json").read_text())
    assert (state["epoch"], state["batch_in_epoch"]) == ((1, 2) if kill_step == 6 else (2, 0))
    head = micro_head(dropout=0.3)  # a new process would build the same fresh head, then load the checkpoint
    resumed = fit(head_task(head), config, log=lambda _: None)
    expected, straight = straight_run
    assert resumed["history"] == straight["history"] and resumed["best_epoch"] == straight["best_epoch"]
    assert resumed["samples"] == straight["samples"] == 3 * ROWS
    got = weights(head)
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=0, msg=name)


class Regressor(torch.nn.Module):
    """A linear regressor with the head interface (`loss` in the output)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(3, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(loss=torch.nn.functional.mse_loss(self.head(x), labels))


def regression_task(model: Regressor, scores: list[float], states: list[torch.Tensor]) -> HeadTask:
    inputs = torch.randn(32, 3, generator=torch.Generator().manual_seed(1))
    targets = inputs @ torch.tensor([[1.0], [-2.0], [0.5]])
    remaining = iter(scores)

    def validate() -> float:
        states.append(model.head.weight.detach().clone())
        return next(remaining)

    return HeadTask(model, 32, lambda epoch: [range(32)], lambda rows: {"x": inputs[rows], "labels": targets[rows]},
                    validate)


def test_the_best_validated_epoch_is_kept_also_when_the_run_was_killed_after_it(tmp_path, monkeypatch):
    config = run_config(epochs=4, batch_size=16, lr=0.1, run_dir=str(tmp_path / "run"))
    torch.manual_seed(0)
    straight_states: list[torch.Tensor] = []
    straight = fit(regression_task(Regressor(), [0.1, 0.9, 0.2, 0.3], straight_states),
                   run_config(epochs=4, batch_size=16, lr=0.1), log=lambda _: None)
    assert straight["best_epoch"] == 1 and straight["best_validation"] == 0.9
    kill_after_checkpoint(monkeypatch, 4)  # 2 steps per epoch: the checkpoint after epoch 1's validation
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        fit(regression_task(Regressor(), [0.1, 0.9], []), config, log=lambda _: None)
    monkeypatch.undo()
    torch.manual_seed(0)
    model, states = Regressor(), []
    resumed = fit(regression_task(model, [0.2, 0.3], states), config, log=lambda _: None)  # epochs 2 and 3 only
    assert [h["validation"] for h in resumed["history"]] == [0.1, 0.9, 0.2, 0.3]
    assert resumed["best_epoch"] == 1 and resumed["best_validation"] == 0.9
    # the weights of epoch 1 (from the checkpoint's best.safetensors), not those of the last epoch
    assert torch.equal(model.head.weight, straight_states[1]) and not torch.equal(states[-1], straight_states[1])
    assert torch.equal(states[-1], straight_states[-1])


def test_gradient_accumulation_of_two_half_batches_is_one_step_of_the_whole_batch():
    results, models = {}, {}
    for name, batch_size, accumulate in (("accumulated", 16, 2), ("whole", 32, 1)):
        torch.manual_seed(0)
        models[name] = Regressor()
        task = regression_task(models[name], [0.0, 1.0], [])
        results[name] = fit(task, run_config(batch_size=batch_size, grad_accum=accumulate), log=lambda _: None)
        reset_accelerator_state()
    assert results["accumulated"]["steps"] == results["whole"]["steps"] == 2  # one step per epoch
    assert results["accumulated"]["samples"] == results["whole"]["samples"] == 64
    torch.testing.assert_close(models["accumulated"].head.weight, models["whole"].head.weight, rtol=1e-5, atol=1e-6)
