"""Initialising PLACE from the published encoders in their real Hub layouts (tiny widths, exact key names):
timm's `timm/deit_base_patch16_224.fb_in1k` (config.json + model.safetensors) and Bio_ClinicalBERT
(`emilyalsentzer/Bio_ClinicalBERT`: an old-style config.json, vocab.txt and pytorch_model.bin of a
BertForPreTraining), by folder and by Hub id from an offline cache; the recipe that names them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import huggingface_hub.constants
import pytest
import timm
import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertForPreTraining, BertModel

from modeling_place import PlaceConfig, PlaceModel
from modeling_place.training.config import load_train_config
from tests.helpers import micro_config

REPO = Path(__file__).resolve().parents[1]
VIT_ARGS = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 48, "num_heads": 3}
BERT_SHAPE = {"vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 12, "num_attention_heads": 2,
              "intermediate_size": 64, "max_position_embeddings": 64}


def _config() -> PlaceConfig:
    vision = {"architecture": "vit_tiny_patch16_224", "model_args": VIT_ARGS}
    return PlaceConfig(**micro_config(vision_config=vision))


def timm_hub_folder(folder: Path) -> dict[str, torch.Tensor]:
    """A DeiT-B/16-shaped timm checkpoint at tiny width, laid out as timm's Hub repos are (with its head)."""
    torch.manual_seed(1)
    vit = timm.create_model("deit_base_patch16_224", num_classes=10, **VIT_ARGS)
    folder.mkdir(parents=True)
    pretrained_cfg = {"tag": "fb_in1k", "input_size": [3, 32, 32], "interpolation": "bicubic", "crop_pct": 0.875,
                      "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "num_classes": 10,
                      "first_conv": "patch_embed.proj", "classifier": "head"}
    config = {"architecture": "deit_base_patch16_224", "num_classes": 10, "num_features": 48,
              "global_pool": "token", "pretrained_cfg": pretrained_cfg}
    (folder / "config.json").write_text(json.dumps(config))
    save_file(vit.state_dict(), folder / "model.safetensors")
    return vit.state_dict()


def clinical_bert_folder(folder: Path, tf_names: bool) -> dict[str, torch.Tensor]:
    """A 12-layer BERT as Bio_ClinicalBERT's repo lays it out: config.json without model_type, vocab.txt and a
    BertForPreTraining `pytorch_model.bin` (`bert.` + `cls.` keys; `tf_names`: LayerNorm gamma / beta)."""
    torch.manual_seed(2)
    model = BertForPreTraining(BertConfig(**BERT_SHAPE))
    state = {}
    for key, value in model.state_dict().items():
        if tf_names and "LayerNorm" in key:
            key = key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        state[key] = value.clone()
    folder.mkdir(parents=True)
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps({**BERT_SHAPE, "hidden_act": "gelu", "type_vocab_size": 2}))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(95)]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return {k.removeprefix("bert."): v for k, v in model.state_dict().items()}


def offline_hub_cache(cache: Path, repo_id: str, source: Path) -> None:
    """`source`'s files as the Hugging Face cache holds a downloaded snapshot of `repo_id`."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for path in source.iterdir():
        (snapshot / path.name).write_bytes(path.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)


def _assert_same(module: torch.nn.Module, state: dict[str, torch.Tensor], keys) -> None:
    loaded = module.state_dict()
    for key in keys:
        torch.testing.assert_close(loaded[key], state[key], rtol=0, atol=0, msg=key)


def test_timm_hub_folder_sets_the_architecture_and_reports_its_head(tmp_path):
    state = timm_hub_folder(tmp_path / "deit")
    model = PlaceModel.from_encoders(vision=tmp_path / "deit", config=_config())
    assert model.config.vision_config.architecture == "deit_base_patch16_224"
    tower = model.vision_model.timm_model
    _assert_same(tower, state, tower.state_dict())
    assert model.encoder_load_report["vision"] == {"missing": [], "unexpected": [], "ignored": ["head.bias", "head.weight"]}


def test_encoders_resolve_hub_ids_from_the_cache_offline(tmp_path, monkeypatch):
    vit_state = timm_hub_folder(tmp_path / "deit")
    bert_state = clinical_bert_folder(tmp_path / "bert", tf_names=False)
    offline_hub_cache(tmp_path / "hub", "timm/deit_base_patch16_224.fb_in1k", tmp_path / "deit")
    offline_hub_cache(tmp_path / "hub", "emilyalsentzer/Bio_ClinicalBERT", tmp_path / "bert")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model = PlaceModel.from_encoders(vision="timm/deit_base_patch16_224.fb_in1k",
                                     text="emilyalsentzer/Bio_ClinicalBERT", config=_config(), text_layers=6)
    _assert_same(model.vision_model.timm_model, vit_state, ["blocks.1.mlp.fc2.weight", "pos_embed"])
    _assert_same(model.text_model, bert_state, ["encoder.layer.5.output.dense.weight"])
    with pytest.raises(FileNotFoundError, match="neither a local path nor a Hub repo id"):
        PlaceModel.from_encoders(vision="timm/not_cached", config=_config())


@pytest.mark.parametrize("tf_names", [False, True])
def test_clinical_bert_bin_is_read_safely_and_truncated_to_six_layers(tmp_path, tf_names):
    state = clinical_bert_folder(tmp_path / "bert", tf_names)
    model = PlaceModel.from_encoders(text=tmp_path / "bert", config=_config(), text_layers=6)
    assert model.config.text_config.num_hidden_layers == 6 and len(model.text_model.encoder.layer) == 6
    assert model.config.text_config.vocab_size == 100
    _assert_same(model.text_model, state, model.text_model.state_dict())  # every kept tensor, LayerNorms included
    report = model.encoder_load_report["text"]
    assert report["missing"] == []
    assert {key.split(".")[2] for key in report["unexpected"]} == {str(n) for n in range(6, 12)}  # the cut layers
    assert len(report["unexpected"]) == 6 * 16 and all(k.startswith("encoder.layer.") for k in report["unexpected"])
    assert any(k.startswith("cls.predictions") for k in report["ignored"]) and "pooler.dense.weight" in report["ignored"]


class _RunsCode:
    """A pickled object whose unpickling would create a file: what a tampered pytorch_model.bin could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_bin_that_would_run_code_is_refused(tmp_path):
    clinical_bert_folder(tmp_path / "bert", tf_names=False)
    marker = tmp_path / "code_ran"
    torch.save({"bert.embeddings.word_embeddings.weight": _RunsCode(marker)}, tmp_path / "bert" / "pytorch_model.bin")
    with pytest.raises(Exception, match="(?i)weights.only|unpickl"):
        PlaceModel.from_encoders(text=tmp_path / "bert", config=_config())
    assert not marker.exists()


def test_safetensors_bert_from_save_pretrained_is_truncated(tmp_path):
    torch.manual_seed(3)
    bert = BertModel(BertConfig(**BERT_SHAPE))
    bert.save_pretrained(tmp_path / "bert")
    assert (tmp_path / "bert" / "model.safetensors").is_file() and not (tmp_path / "bert" / "pytorch_model.bin").exists()
    model = PlaceModel.from_encoders(text=tmp_path / "bert", config=_config(), text_layers=6)
    _assert_same(model.text_model, bert.state_dict(), model.text_model.state_dict())
    report = model.encoder_load_report["text"]
    assert report["missing"] == [] and len(report["unexpected"]) == 6 * 16
    assert report["ignored"] == ["pooler.dense.bias", "pooler.dense.weight"]


def test_base_mimic_recipe_names_the_published_encoders_and_mgca_schedule():
    config = load_train_config([str(REPO / "examples" / "configs" / "base_mimic.yaml")])
    assert config.preset == "base" and config.dataset == "mimic-cxr"
    assert config.init_vision == "timm/deit_base_patch16_224.fb_in1k"
    assert config.init_text == "emilyalsentzer/Bio_ClinicalBERT" and config.text_layers == 6
    assert (config.lr, config.weight_decay) == (2e-5, 0.05)
    assert config.batch_size * 2 == 144  # per GPU; MGCA's global batch on 2 GPUs
    assert config.max_steps == 217_000 // 144 * 50 and config.warmup_steps == round(0.4 * config.max_steps)
    assert os.path.basename(config.output_dir)
