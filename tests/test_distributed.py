"""Two CPU ranks (tests.helpers.spawn_launcher, accelerate's launcher with spawned ranks) give the same losses and gradients as one process, full batch."""

import torch
import torch.distributed as dist

from safetensors.torch import load_file, save_file

from modeling_place import PlaceConfig, PlaceModel
from tests.helpers import micro_config, random_batch, spawn_launcher

BATCH = 8


def _run(model: PlaceModel, batch: dict) -> tuple[dict, dict]:
    out = model(**batch, return_loss=True)
    out.loss.backward()
    losses = {name: getattr(out, name).detach() for name in ("loss", "loss_ita", "loss_pcma", "loss_ce")}
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return losses, grads


def _rank_worker(out_dir: str) -> None:
    # the launcher initialises the gloo process group itself; read rank and world size from it.
    rank, world = dist.get_rank(), dist.get_world_size()
    # one thread per rank: two ranks share the machine's cores
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = PlaceModel(PlaceConfig(**micro_config())).eval()  # eval: no dropout, so ranks are comparable
    batch = random_batch(model.config, BATCH, seed=1)
    half = BATCH // world
    local = {k: v[rank * half : (rank + 1) * half] for k, v in batch.items()}
    losses, grads = _run(model, local)
    for tensor in [*losses.values(), *grads.values()]:  # what DDP does to gradients; mean of the logged losses
        dist.all_reduce(tensor)
        tensor /= world
    if rank == 0:
        save_file({**{f"loss/{k}": v for k, v in losses.items()}, **{f"grad/{k}": v for k, v in grads.items()}},
                  f"{out_dir}/ranks.safetensors")


def test_two_ranks_match_one_process_full_batch(tmp_path):
    spawn_launcher(_rank_worker, args=(str(tmp_path),), num_processes=2)
    ranks = load_file(tmp_path / "ranks.safetensors")
    torch.manual_seed(0)
    model = PlaceModel(PlaceConfig(**micro_config())).eval()
    losses, grads = _run(model, random_batch(model.config, BATCH, seed=1))
    for name, value in losses.items():
        torch.testing.assert_close(ranks[f"loss/{name}"], value, rtol=1e-5, atol=1e-6, msg=name)
    assert set(grads) == {k.removeprefix("grad/") for k in ranks if k.startswith("grad/")}
    for name, grad in grads.items():
        torch.testing.assert_close(ranks[f"grad/{name}"], grad, rtol=1e-4, atol=1e-6, msg=name)
