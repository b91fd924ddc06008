"""FSDP2 (`fully_shard`) on 2 gloo CPU ranks: a sharded PLACE model trains, its checkpoint gathers whole tensors and
restores model and optimizer into another sharded model, and its saved folder loads with `AutoModel.from_pretrained`.

accelerate enables FSDP only on accelerators (on CPU its FSDP plugin falls back to DDP), so the ranks shard the model
as accelerate's FSDP2 preparation does (each transformer block, then the root) after `prepare_for_fsdp`."""

import json
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from transformers import AutoModel

from modeling_place import PlaceConfig, PlaceModel
from tests.helpers import micro_config, random_batch, spawn_launcher

BLOCKS = ("Block", "BertLayer")  # examples/accelerate/fsdp_multinode.yaml wraps these (and PlaceVPOELayer)


def _sharded_model(seed: int):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from modeling_place.training.sharding import prepare_for_fsdp

    torch.manual_seed(seed)
    model = PlaceModel(PlaceConfig(**micro_config()))
    prepare_for_fsdp(model)  # logit_scale is 0-d: FSDP refuses it as such
    mesh = init_device_mesh("cpu", (torch.distributed.get_world_size(),))
    for module in model.modules():
        if type(module).__name__ in BLOCKS:
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2)


def _step(model, optimizer, seed: int) -> None:
    torch.manual_seed(seed)  # the same dropout masks for both models of a comparison
    batch = random_batch(model.config, 4, seed=seed + torch.distributed.get_rank())
    model(**batch, return_loss=True).loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def _fsdp_worker(folder: str) -> None:
    from modeling_place.training.checkpoint import load_checkpoint, save_checkpoint
    from modeling_place.training.sharding import full_model_state, is_sharded, save_pretrained_gathered

    torch.set_num_threads(1)  # two ranks share the machine's cores
    accelerator, out = Accelerator(cpu=True), Path(folder)
    model, optimizer = _sharded_model(seed=0)
    _step(model, optimizer, seed=10)
    save_checkpoint(accelerator, out / "checkpoints", 1, model, optimizer, None, {"step": 1}, keep=1)
    save_pretrained_gathered(accelerator, model, out / "folder")
    trained = full_model_state(model)
    other, other_optimizer = _sharded_model(seed=1)  # other weights, fresh optimizer: all replaced by the checkpoint
    state = load_checkpoint(accelerator, out / "checkpoints" / "checkpoint_1", other, other_optimizer, None)
    restored = full_model_state(other)
    for network, opt in ((model, optimizer), (other, other_optimizer)):  # one more step: Adam's moments matter
        _step(network, opt, seed=20)
    after, other_after = full_model_state(model), full_model_state(other)
    qkv = dict(model.named_parameters())["vision_model.timm_model.blocks.0.attn.qkv.weight"]
    if accelerator.is_main_process:
        save_file(trained, str(out / "trained.safetensors"))
        save_file(restored, str(out / "restored.safetensors"))
        save_file(after, str(out / "after.safetensors"))
        save_file(other_after, str(out / "other_after.safetensors"))
        (out / "facts.json").write_text(json.dumps({
            "sharded": is_sharded(model), "state": state, "local_rows": qkv.to_local().shape[0],
            "full_rows": qkv.shape[0], "world": accelerator.num_processes}))


def test_fsdp_checkpoint_restores_and_saved_folder_loads_with_auto_model(tmp_path):
    spawn_launcher(_fsdp_worker, args=(str(tmp_path),), num_processes=2)
    facts = json.loads((tmp_path / "facts.json").read_text())
    assert facts["world"] == 2 and facts["sharded"] and facts["state"] == {"step": 1}
    assert facts["local_rows"] * 2 == facts["full_rows"]  # really sharded: each rank holds half of the rows
    trained = load_file(tmp_path / "trained.safetensors")
    assert trained["logit_scale"].shape == () and not any("parametrizations" in key for key in trained)
    checkpoint = load_file(tmp_path / "checkpoints" / "checkpoint_1" / "model.safetensors")
    loaded = AutoModel.from_pretrained(tmp_path / "folder")
    assert type(loaded) is PlaceModel and json.loads((tmp_path / "folder" / "config.json").read_text())[
        "architectures"] == ["PlaceModel"]
    fresh = PlaceModel(PlaceConfig(**micro_config())).state_dict()
    assert set(trained) == set(checkpoint) == set(fresh)
    for name, value in loaded.state_dict().items():
        torch.testing.assert_close(value, trained[name], rtol=0, atol=0, msg=name)
        torch.testing.assert_close(checkpoint[name], trained[name], rtol=0, atol=0, msg=name)
    for name, value in load_file(tmp_path / "restored.safetensors").items():
        torch.testing.assert_close(value, trained[name], rtol=0, atol=0, msg=name)
    other_after = load_file(tmp_path / "other_after.safetensors")
    for name, value in load_file(tmp_path / "after.safetensors").items():  # the optimizer's moments came back too
        torch.testing.assert_close(other_after[name], value, rtol=0, atol=0, msg=name)
    assert not torch.equal(load_file(tmp_path / "after.safetensors")["logit_scale"], trained["logit_scale"])
