"""Downstream heads: pretrained-tower loading, losses, Auto classes (installed and remote code), pipelines, training."""

import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import PIL.Image
import pytest
from huggingface_hub.errors import StrictDataclassError
import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForImageClassification,
    AutoModelForImageTextToText,
    AutoModelForObjectDetection,
    AutoModelForSemanticSegmentation,
    pipeline,
)

from modeling_place.processing import PlaceImageProcessor
from modeling_place import (
    PlaceConfig,
    PlaceForImageClassification,
    PlaceForObjectDetection,
    PlaceForReportGeneration,
    PlaceForSemanticSegmentation,
    PlaceModel,
)
from modeling_place.heads_place import assign_boxes_to_patches, box_cxcywh_to_xyxy, evenly_spaced_blocks
from tests.helpers import micro_config

DECODER = {"decoder_hidden_size": 32, "decoder_layers": 1, "decoder_num_heads": 2, "decoder_max_length": 16}
HEADS = {
    AutoModelForImageClassification: (PlaceForImageClassification, {"num_labels": 3}),
    AutoModelForSemanticSegmentation: (PlaceForSemanticSegmentation, {"num_labels": 2}),
    AutoModelForObjectDetection: (PlaceForObjectDetection, {"num_labels": 2}),
    AutoModelForImageTextToText: (PlaceForReportGeneration, DECODER),
}


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory):
    """A saved micro PLACE model (the 'pretraining' checkpoint every head starts from)."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("place")
    PlaceModel(PlaceConfig(**micro_config())).save_pretrained(folder)
    return folder


def _pixels(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(batch, 3, 4, 4, generator=g), size=32, mode="bilinear")


def _head_inputs(head):
    if isinstance(head, PlaceForReportGeneration):
        return {"pixel_values": _pixels(), "input_ids": torch.tensor([[2, 7, 9, 3], [2, 8, 3, 0]])}
    return {"pixel_values": _pixels()}


def _main_output(output):
    return output.logits


# ------------------------------------------------------------------------------------------ pretrained tower
@pytest.mark.parametrize("auto_class", list(HEADS))
def test_head_loads_pretrained_encoder_and_keeps_it_frozen_when_asked(pretrained_dir, auto_class):
    head_class, kwargs = HEADS[auto_class]
    base = PlaceModel.from_pretrained(pretrained_dir)
    head = head_class.from_pretrained(pretrained_dir, freeze_encoder=True, **kwargs)
    for name, value in base.vision_model.state_dict().items():
        torch.testing.assert_close(head.vision_model.state_dict()[name], value, rtol=0, atol=0, msg=name)
    if head.observation_extractor is not None:
        for name, value in base.observation_extractor.state_dict().items():
            torch.testing.assert_close(head.observation_extractor.state_dict()[name], value, rtol=0, atol=0)
    head.train()
    assert head.training and not head.vision_model.training  # frozen towers stay in eval mode
    assert not any(p.requires_grad for p in head.vision_model.parameters())
    output = head(**_head_inputs(head))
    assert torch.isfinite(_main_output(output)).all()


@pytest.mark.parametrize("auto_class", list(HEADS))
def test_head_from_pretraining_folder_reports_only_its_new_weights(pretrained_dir, auto_class):
    head_class, kwargs = HEADS[auto_class]
    head, info = head_class.from_pretrained(pretrained_dir, output_loading_info=True, **kwargs)
    assert len(info["unexpected_keys"]) == 0
    pretrained = {name for name, _ in PlaceModel.from_pretrained(pretrained_dir).named_parameters()}
    # tied weights (the report decoder's output layer is its input embedding) are reported under both names
    new = {name for name, _ in head.named_parameters(remove_duplicate=False) if name not in pretrained}
    assert new and set(info["missing_keys"]) == new


def test_head_still_reports_keys_of_another_model(pretrained_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    state = load_file(pretrained_dir / "model.safetensors")
    state["stranger.weight"] = torch.zeros(2)
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "config.json").write_text((pretrained_dir / "config.json").read_text())
    _, info = PlaceForImageClassification.from_pretrained(tmp_path, num_labels=3, output_loading_info=True)
    assert set(info["unexpected_keys"]) == {"stranger.weight"}


@pytest.mark.parametrize("pcma_space", ["separate", "joint", "local"])
def test_report_generation_reads_the_pretrained_observations(tmp_path, pcma_space):
    torch.manual_seed(0)
    base = PlaceModel(PlaceConfig(**micro_config(pcma_space=pcma_space))).eval()
    base.save_pretrained(tmp_path)
    head = PlaceForReportGeneration.from_pretrained(tmp_path).eval()
    pixels = _pixels()
    with torch.no_grad():
        observed = base.get_observation_features(pixels)
        patches, observations = head.observations(pixels)
        memory = head.encode_image_memory(pixels)
    torch.testing.assert_close(patches, observed.patch_embeds)
    torch.testing.assert_close(observations, observed.observation_embeds)
    expected = head.observation_memory(observed.observation_embeds) + head.memory_type[1]
    torch.testing.assert_close(memory[:, patches.shape[1]:], expected)
    assert (head.vision_projection is not None) == (pcma_space == "joint")
    assert (head.local_projection is not None) == (pcma_space == "local")


@pytest.mark.parametrize("auto_class", list(HEADS))
def test_heads_fine_tune_the_encoder_by_default(pretrained_dir, auto_class, caplog):
    """Like every transformers `…ForImageClassification`: `from_pretrained(folder, num_labels=…)` trains it all."""
    head_class, kwargs = HEADS[auto_class]
    head = head_class.from_pretrained(pretrained_dir, **kwargs).train()
    assert head.config.freeze_encoder is False and head.vision_model.training
    output = head(**_head_inputs(head))
    _main_output(output).float().square().mean().backward()
    assert head.vision_model.timm_model.patch_embed.proj.weight.grad is not None
    assert head.num_parameters(only_trainable=True) == head.num_parameters()


def test_head_logs_trainable_and_total_parameters(pretrained_dir, caplog):
    head = PlaceForImageClassification.from_pretrained(pretrained_dir, num_labels=3, freeze_encoder=True)
    with caplog.at_level(logging.INFO, logger="modeling_place.heads_place"):
        head.train()
        head.train()  # logged once, at the first switch to training
    trainable, total = head.num_parameters(only_trainable=True), head.num_parameters()
    assert 0 < trainable < total
    expected = f"{trainable:,} of {total:,} parameters trainable (frozen encoder)"
    assert [expected in message for message in caplog.messages].count(True) == 1, caplog.messages


@pytest.mark.parametrize("freeze_encoder", [True, False])
def test_lora_adapters_on_the_encoder_get_gradients(pretrained_dir, freeze_encoder):
    """PEFT LoRA on the ViT's attention: the adapters train even when the head froze its encoder, and
    `.train()` (which PEFT and every trainer call) does not freeze them again."""
    peft = pytest.importorskip("peft")  # a test extra (setup.py); importorskip only guards a bare install
    head = PlaceForImageClassification.from_pretrained(pretrained_dir, num_labels=3, freeze_encoder=freeze_encoder)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["qkv"], modules_to_save=["classifier"])
    model = peft.get_peft_model(head, config)
    model.train()
    model(pixel_values=_pixels(), labels=torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])).loss.backward()
    lora = {name: p for name, p in model.named_parameters() if "lora_" in name}
    assert lora and all(p.requires_grad for p in lora.values())
    assert all(p.grad is not None for p in lora.values()), "LoRA adapters got no gradient"
    # B starts at zero, so only B has a non-zero gradient at the first step
    assert all(p.grad.abs().sum() > 0 for name, p in lora.items() if "lora_B" in name)
    frozen_base = [p for name, p in model.named_parameters() if "vision_model" in name and "lora_" not in name]
    assert all(not p.requires_grad and p.grad is None for p in frozen_base)


def test_unknown_head_option_fails_clearly(pretrained_dir):
    with pytest.raises(TypeError, match="head option"):
        PlaceForImageClassification.from_pretrained(pretrained_dir, num_labels=2, decoder_depth=3)


# ------------------------------------------------------------------------------------------- classification
def test_classification_losses_match_torch(pretrained_dir):
    multi = PlaceForImageClassification.from_pretrained(
        pretrained_dir, num_labels=3, problem_type="multi_label_classification")
    labels = torch.tensor([[1, 0, 1], [0, 0, 1]])
    out = multi(_pixels(), labels=labels)
    torch.testing.assert_close(out.loss, F.binary_cross_entropy_with_logits(out.logits, labels.float()))
    single = PlaceForImageClassification.from_pretrained(pretrained_dir, num_labels=3)
    out = single(_pixels(), labels=torch.tensor([2, 0]))
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, torch.tensor([2, 0])))
    # the linear-probe feature is the final-norm CLS token of the pretrained model
    cls = PlaceModel.from_pretrained(pretrained_dir).get_patch_features(_pixels()).pooler_output
    torch.testing.assert_close(out.logits, single.classifier(cls))


# --------------------------------------------------------------------------------------------- segmentation
def test_segmentation_logits_shape_and_both_losses(pretrained_dir):
    assert evenly_spaced_blocks(12, 4) == [2, 5, 8, 11] and evenly_spaced_blocks(1, 4) == [0, 0, 0, 0]
    labels = torch.zeros(2, 32, 32, dtype=torch.long)
    labels[:, 8:20, 8:20] = 1
    labels[1, 0, :] = 255  # ignored row
    for num_labels in (1, 2):
        head = PlaceForSemanticSegmentation.from_pretrained(pretrained_dir, num_labels=num_labels)
        out = head(_pixels(), labels=labels)
        assert out.logits.shape == (2, num_labels, 16, 16)  # 4x the 4x4 patch grid
        assert torch.isfinite(out.loss) and out.loss > 0
    with pytest.raises(ValueError, match="labels"):
        head(_pixels(), labels=labels[:, None])



def test_segmentation_pixel_skip_sees_pixel_detail_and_can_be_switched_off(pretrained_dir):
    with_skip = PlaceForSemanticSegmentation.from_pretrained(pretrained_dir, num_labels=1)
    without = PlaceForSemanticSegmentation.from_pretrained(pretrained_dir, num_labels=1, segmentation_pixel_skip=False)
    assert with_skip.config.segmentation_pixel_skip and without.decoder.pixel_skip is None
    pixels = _pixels()
    detail = pixels.clone()
    detail[:, :, 0, 0] += 1.0  # one pixel, seen by the stem at full resolution with the ViT levels held fixed
    with torch.no_grad():
        levels = with_skip.multi_level_features(pixels)
        change = (with_skip.decoder(levels, 4, detail) - with_skip.decoder(levels, 4, pixels)).abs()
    # local (only GroupNorm statistics reach far away)
    assert change[:, :, :2, :2].amax() > 10 * change[:, :, 8:, 8:].amax() and change.amax() > 1e-3
    assert sum(p.numel() for p in with_skip.decoder.pixel_skip.parameters() if p.requires_grad) > 0
    with pytest.raises(ValueError, match="pixel_values"):
        with_skip.decoder([torch.zeros(1, 16, 48)] * len(with_skip.level_indices), 4)

# ------------------------------------------------------------------------------------------------ detection
def test_patch_assignment_picks_the_smallest_containing_box():
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.5, 0.5], [0.80, 0.80, 0.82, 0.82]])
    assigned = assign_boxes_to_patches(boxes, grid=4).view(4, 4)
    assert (assigned[:2, :2] == 1).all()  # small box wins where both contain the patch centre
    assert assigned[3, 3] == 2  # a box too small to contain any centre still gets its centre's patch
    assert assigned[0, 3] == 0 and (assign_boxes_to_patches(boxes[:0], grid=4) == -1).all()


def test_detection_loss_is_zero_for_boxes_only_where_predictions_are_exact(pretrained_dir):
    head = PlaceForObjectDetection.from_pretrained(pretrained_dir, num_labels=2)
    labels = [{"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.5, 0.5]])},
              {"class_labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}]
    out = head(_pixels(), labels=labels)
    assert out.logits.shape == (2, 16, 2) and out.pred_boxes.shape == (2, 16, 4)
    assert set(out.loss_dict) == {"loss_focal", "loss_l1", "loss_giou"} and torch.isfinite(out.loss)
    exact = torch.tensor([[0.5, 0.5, 0.5, 0.5]]).expand(16, 4)
    _, parts = head.detection_loss(out.logits, torch.stack([exact, exact]), labels)
    assert parts["loss_l1"] == 0 and parts["loss_giou"].abs() < 1e-6


def test_detection_pixel_skip_option_reaches_the_patch_grid(pretrained_dir):
    plain = PlaceForObjectDetection.from_pretrained(pretrained_dir, num_labels=2)
    skip = PlaceForObjectDetection.from_pretrained(pretrained_dir, num_labels=2, detection_pixel_skip=True)
    assert plain.detection_head.pixel_skip is None and len(skip.detection_head.pixel_skip.stem) == 3  # 8 px patches
    out = skip(_pixels(), labels=[{"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.5, 0.5]])}] * 2)
    assert out.logits.shape == (2, 16, 2)
    out.loss.backward()
    assert skip.detection_head.pixel_skip.stem[0][0].weight.grad.abs().sum() > 0


def test_detection_trunk_layers_option_sets_the_convolutions_between_fusion_and_outputs(pretrained_dir):
    labels = [{"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.5, 0.5]])}] * 2
    for layers in (0, 1, 2):
        head = PlaceForObjectDetection.from_pretrained(pretrained_dir, num_labels=2, detection_trunk_layers=layers)
        assert len(head.detection_head.trunk) == layers
        out = head(_pixels(), labels=labels)
        assert out.logits.shape == (2, 16, 2) and out.pred_boxes.shape == (2, 16, 4)
        out.loss.backward()
        assert head.detection_head.fusion.fuse[0].weight.grad.abs().sum() > 0  # the fusion conv still learns
    with pytest.raises((ValueError, StrictDataclassError), match="detection_trunk_layers must be an integer >= 0, got -1"):
        PlaceForObjectDetection.from_pretrained(pretrained_dir, num_labels=2, detection_trunk_layers=-1)


def test_detection_head_saved_before_the_trunk_option_loads_with_two_and_a_saved_choice_is_kept(pretrained_dir, tmp_path):
    head = PlaceForObjectDetection.from_pretrained(pretrained_dir, num_labels=2)
    head.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["detection_trunk_layers"]  # as written before the option existed
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded, info = PlaceForObjectDetection.from_pretrained(tmp_path, output_loading_info=True)
    assert len(loaded.detection_head.trunk) == 2 and not info["missing_keys"] and not info["unexpected_keys"]
    torch.testing.assert_close(loaded(_pixels()).logits, head(_pixels()).logits)
    zero = PlaceForObjectDetection.from_pretrained(pretrained_dir, num_labels=2, detection_trunk_layers=0)
    zero.save_pretrained(tmp_path / "zero")
    assert len(PlaceForObjectDetection.from_pretrained(tmp_path / "zero").detection_head.trunk) == 0


def test_detection_post_processing_maps_boxes_back_and_applies_nms():
    processor = PlaceImageProcessor(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32})
    logits = torch.full((1, 3, 2), -10.0)
    logits[0, 0, 1] = logits[0, 1, 1] = 5.0  # two overlapping boxes of class 1, one kept by NMS
    logits[0, 2, 0] = 4.0
    boxes = torch.tensor([[[0.5, 0.5, 0.5, 0.5], [0.51, 0.5, 0.5, 0.5], [0.25, 0.25, 0.1, 0.1]]])
    result = processor.post_process_object_detection(
        {"logits": logits, "pred_boxes": boxes}, threshold=0.5, target_sizes=[(64, 64)])[0]
    assert result["labels"].tolist() == [1, 0]
    torch.testing.assert_close(result["boxes"][0], torch.tensor([16.0, 16.0, 48.0, 48.0]))
    torch.testing.assert_close(result["boxes"][1], box_cxcywh_to_xyxy(boxes[0, 2]) * 64)


# ---------------------------------------------------------------------------------------- report generation
def test_report_loss_is_shifted_cross_entropy_ignoring_padding(pretrained_dir):
    head = PlaceForReportGeneration.from_pretrained(pretrained_dir, **DECODER)
    inputs = _head_inputs(head)
    out = head(**inputs, labels=inputs["input_ids"])
    ids = inputs["input_ids"]
    targets = ids[:, 1:].masked_fill(ids[:, 1:] == 0, -100)
    expected = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)
    assert out.logits.shape == (2, 4, head.config.text_config.vocab_size)


def test_generate_greedy_and_beam_start_with_cls_and_stop_at_sep(pretrained_dir):
    head = PlaceForReportGeneration.from_pretrained(pretrained_dir, **DECODER).eval()
    pixels = _pixels()
    greedy = head.generate(pixel_values=pixels, max_new_tokens=5)
    beam = head.generate(pixel_values=pixels, max_new_tokens=5, num_beams=3)
    assert greedy.shape[0] == 2 and beam.shape[0] == 2 and (greedy[:, 0] == 2).all() and (beam[:, 0] == 2).all()
    # the greedy sequence is the argmax of a teacher-forced forward on itself
    logits = head(greedy, pixel_values=pixels).logits
    torch.testing.assert_close(logits[:, :-1].argmax(-1), greedy[:, 1:])
    with torch.no_grad():
        head.get_output_embeddings().bias[3] = 1e4  # [SEP] always wins: generation stops after one token
    assert head.generate(pixel_values=pixels, max_new_tokens=5).tolist() == [[2, 3], [2, 3]]


def _talkative_decoder(pretrained_dir, **options):
    """A report head whose random decoder writes varied tokens and never stops early (so sequences compare)."""
    torch.manual_seed(0)
    head = PlaceForReportGeneration.from_pretrained(pretrained_dir, **{**DECODER, "decoder_layers": 2, **options}).eval()
    with torch.no_grad():
        head.get_input_embeddings().weight.normal_(std=1.0)  # tied: the output layer too
        head.get_output_embeddings().bias[head.config.report_eos_token_id] = -1e4
    return head


def test_cached_and_uncached_decoding_give_the_same_tokens(pretrained_dir, monkeypatch):
    head, pixels = _talkative_decoder(pretrained_dir), _pixels()
    lengths, encoded = [], []
    decoder_forward, encode = head.report_decoder.forward, head.encode_image_memory
    monkeypatch.setattr(head.report_decoder, "forward", lambda **kw: lengths.append(kw["input_ids"].shape[1]) or decoder_forward(**kw))
    monkeypatch.setattr(head, "encode_image_memory", lambda p: encoded.append(p.shape[0]) or encode(p))
    for options in ({}, {"num_beams": 3}, {"num_beams": 2, "num_return_sequences": 2}):
        lengths.clear(), encoded.clear()
        cached = head.generate(pixel_values=pixels, max_new_tokens=8, **options)
        assert encoded == [2] and lengths == [1] * 8  # the image once, before beams expand the batch; one token a step
        uncached = head.generate(pixel_values=pixels, max_new_tokens=8, use_cache=False, **options)
        assert cached.shape[1] == 9 and len(set(cached[0].tolist())) > 3, cached  # varied, full-length sequences
        assert torch.equal(cached, uncached), options
    torch.manual_seed(1)
    sampled = head.generate(pixel_values=pixels, max_new_tokens=8, do_sample=True, top_k=0)
    torch.manual_seed(1)
    assert torch.equal(sampled, head.generate(pixel_values=pixels, max_new_tokens=8, do_sample=True, top_k=0, use_cache=False))


def test_prompts_continue_and_left_padding_changes_nothing(pretrained_dir):
    """A prompt is a prefix ([CLS] + tokens): batched with left padding (as the pipeline does) or alone, the same."""
    head, pixels = _talkative_decoder(pretrained_dir), _pixels()
    prompts = [[2, 7, 9, 11], [2, 8]]
    alone = [head.generate(input_ids=torch.tensor([prompt]), pixel_values=pixels[i : i + 1], max_new_tokens=6)[0]
             for i, prompt in enumerate(prompts)]
    batch = torch.tensor([[2, 7, 9, 11], [0, 0, 2, 8]])
    together = head.generate(input_ids=batch, attention_mask=(batch != 0).long(), pixel_values=pixels, max_new_tokens=6)
    assert together[0].tolist() == alone[0].tolist() and together[1, 2:].tolist() == alone[1].tolist()
    assert alone[0][:4].tolist() == prompts[0] and len(alone[1]) == 2 + 6
    # max_new_tokens beyond the position table stops at decoder_max_length (16), prompt included
    assert head.generate(input_ids=torch.tensor([prompts[0]]), pixel_values=pixels[:1], max_new_tokens=50).shape[1] == 16
    with pytest.raises(ValueError, match="decoder_max_length"):
        head(input_ids=torch.full((1, 17), 5), pixel_values=pixels[:1])


def test_report_loss_ignores_minus_100_padding_and_masked_tokens(pretrained_dir):
    head = PlaceForReportGeneration.from_pretrained(pretrained_dir, **DECODER)
    ids = torch.tensor([[2, 7, 9, 12, 3], [2, 8, 3, 0, 0]])
    labels = ids.clone()
    labels[0, 2] = -100
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])  # the first report's [SEP] masked out
    out = head(input_ids=ids, attention_mask=mask, pixel_values=_pixels(), labels=labels)
    keep = torch.tensor([[True, False, True, False], [True, True, False, False]])  # next tokens that count
    logits = out.logits[:, :-1][keep]
    torch.testing.assert_close(out.loss, F.cross_entropy(logits, ids[:, 1:][keep]))
    # the pretraining keys of a report batch are accepted and change nothing; generate refuses them
    extra = {"sentence_ids": torch.zeros_like(ids), "sentence_hashes": torch.ones(2, 4, dtype=torch.long)}
    again = head(input_ids=ids, attention_mask=mask, pixel_values=_pixels(), labels=labels, **extra)
    torch.testing.assert_close(again.loss, out.loss)
    with pytest.raises(ValueError, match="text_mode='prompt'"):
        head.generate(input_ids=ids, pixel_values=_pixels(), **extra)


def test_resize_token_embeddings_grows_the_vocabulary(pretrained_dir, tmp_path):
    head = PlaceForReportGeneration.from_pretrained(pretrained_dir, **DECODER)
    old = head.config.text_config.vocab_size
    head.resize_token_embeddings(old + 7)
    assert head.config.text_config.vocab_size == old + 7 == head.report_decoder.config.vocab_size
    assert head.get_output_embeddings().weight is head.get_input_embeddings().weight  # still tied
    ids = torch.tensor([[2, old + 3, old + 6, 3]])  # new tokens in and out
    out = head(input_ids=ids, pixel_values=_pixels(1), labels=ids)
    assert out.logits.shape == (1, 4, old + 7) and torch.isfinite(out.loss)
    out.loss.backward()
    assert head.get_input_embeddings().weight.grad[old + 3].abs().sum() > 0
    head.save_pretrained(tmp_path)
    assert PlaceForReportGeneration.from_pretrained(tmp_path).get_input_embeddings().num_embeddings == old + 7


def test_a_folder_with_the_old_decoder_is_refused(pretrained_dir, tmp_path):
    """Weights of the hand-written decoder (before transformers' one) must not load as a randomly started decoder."""
    from safetensors.torch import load_file, save_file

    PlaceForReportGeneration.from_pretrained(pretrained_dir, **DECODER).save_pretrained(tmp_path)
    state = {k: v for k, v in load_file(tmp_path / "model.safetensors").items() if not k.startswith("report_decoder.")}
    old_keys = ["token_embedding.weight", "position_embedding.weight", "layers.0.self_attn.qkv.weight",
                "layers.0.cross_attn.q_proj.weight", "final_norm.weight", "lm_head.weight", "lm_head.bias"]
    state.update({f"report_decoder.{key}": torch.zeros(3, 2) for key in old_keys})
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    for loader in (PlaceForReportGeneration, AutoModelForImageTextToText):
        with pytest.raises(ValueError, match=r"hand-written report decoder.*report_decoder\.final_norm\.weight.*Re-train"):
            loader.from_pretrained(tmp_path)


# ---------------------------------------------------------------------------------------------- Auto classes
def test_installed_auto_classes_round_trip(pretrained_dir, tmp_path):
    for auto_class, (head_class, kwargs) in HEADS.items():
        head = head_class.from_pretrained(pretrained_dir, **kwargs).eval()
        head.save_pretrained(tmp_path / head_class.__name__)
        loaded = auto_class.from_pretrained(tmp_path / head_class.__name__).eval()
        assert type(loaded) is head_class
        with torch.no_grad():
            torch.testing.assert_close(_main_output(loaded(**_head_inputs(loaded))), _main_output(head(**_head_inputs(head))))


REMOTE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    class BlockPackage:  # the package must not be importable: only the folders' custom code may be used
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("modeling_place", "processing", "evaluation"):
                raise ImportError("blocked " + name)
    sys.meta_path.insert(0, BlockPackage())
    import torch
    import transformers
    from safetensors.torch import load_file, save_file
    root = sys.argv[1]
    for folder, auto_name in json.load(open(root + "/heads.json")).items():
        model = getattr(transformers, auto_name).from_pretrained(folder, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            logits = model(**load_file(folder + "/inputs.safetensors")).logits
        save_file({"logits": logits.contiguous()}, folder + "/remote_out.safetensors")
    """
)


def test_every_head_loads_as_remote_code_without_the_package(pretrained_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    folders, expected = {}, {}
    for auto_class, (head_class, kwargs) in HEADS.items():
        head = head_class.from_pretrained(pretrained_dir, **kwargs).eval()
        folder = tmp_path / head_class.__name__
        head.save_pretrained(folder)
        auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
        assert auto_map[auto_class.__name__] == f"heads_place.{head_class.__name__}"
        assert (folder / "heads_place.py").exists() and (folder / "modeling_place.py").exists()
        save_file(_head_inputs(head), folder / "inputs.safetensors")
        folders[str(folder)] = auto_class.__name__
        with torch.no_grad():
            expected[str(folder)] = head(**_head_inputs(head)).logits
    (tmp_path / "heads.json").write_text(json.dumps(folders))
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": ""}
    subprocess.run([sys.executable, "-c", REMOTE_SCRIPT, str(tmp_path)], check=True, cwd=tmp_path, env=env)
    for folder, logits in expected.items():
        # same code and weights; a fresh process may pick other oneDNN convolution kernels (last-bit differences)
        torch.testing.assert_close(load_file(f"{folder}/remote_out.safetensors")["logits"], logits, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------- pipelines
def test_pipelines_on_a_pil_image(pretrained_dir):
    processor = PlaceImageProcessor(size={"height": 36, "width": 36}, crop_size={"height": 32, "width": 32})
    image = PIL.Image.fromarray((np.random.default_rng(0).random((50, 40)) * 255).astype(np.uint8))
    names = {0: "background", 1: "pneumothorax"}
    classifier = PlaceForImageClassification.from_pretrained(
        pretrained_dir, num_labels=2, id2label=names, problem_type="multi_label_classification")
    predictions = pipeline("image-classification", model=classifier, image_processor=processor)(image)
    assert {p["label"] for p in predictions} == set(names.values()) and all(0 < p["score"] < 1 for p in predictions)
    segmenter = PlaceForSemanticSegmentation.from_pretrained(pretrained_dir, num_labels=2, id2label=names)
    segments = pipeline("image-segmentation", model=segmenter, image_processor=processor)(image)
    assert segments and all(s["mask"].size == (40, 50) and s["label"] in names.values() for s in segments)
    detector = PlaceForObjectDetection.from_pretrained(pretrained_dir, num_labels=2, id2label=names)
    detections = pipeline("object-detection", model=detector, image_processor=processor)(image, threshold=0.0)
    assert detections and all(0 <= d["box"]["xmin"] <= d["box"]["xmax"] <= 40 for d in detections)


# ------------------------------------------------------------------------------------------------- training
def _train(head, batch, steps=30, lr=3e-3):
    optimizer = torch.optim.AdamW([p for p in head.parameters() if p.requires_grad], lr=lr)
    head.train()
    losses = []
    for _ in range(steps):
        loss = head(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def test_every_head_fits_a_fixed_batch(pretrained_dir):
    pixels = _pixels(4, seed=1)
    masks = torch.zeros(4, 32, 32, dtype=torch.long)
    masks[:2, 4:16, 4:16] = 1
    masks[2:, 16:28, 12:30] = 1
    boxes = [{"class_labels": torch.tensor([i % 2]), "boxes": torch.tensor([[0.3 + 0.1 * i, 0.4, 0.3, 0.4]])}
             for i in range(4)]
    reports = torch.tensor([[2, 10, 11, 12, 3], [2, 20, 21, 3, 0], [2, 10, 30, 3, 0], [2, 40, 41, 42, 3]])
    cases = [
        # a linear probe on a random micro encoder needs a larger step
        (PlaceForImageClassification, {"num_labels": 2, "classifier_lr": 0.05},
         {"pixel_values": pixels, "labels": torch.tensor([0, 1, 0, 1])}),
        (PlaceForSemanticSegmentation, {"num_labels": 2}, {"pixel_values": pixels, "labels": masks}),
        (PlaceForObjectDetection, {"num_labels": 2}, {"pixel_values": pixels, "labels": boxes}),
        (PlaceForReportGeneration, DECODER, {"pixel_values": pixels, "input_ids": reports, "labels": reports}),
    ]
    for head_class, kwargs, batch in cases:
        torch.manual_seed(0)
        lr = kwargs.pop("classifier_lr", 3e-3)
        head = head_class.from_pretrained(pretrained_dir, freeze_encoder=True, **kwargs)  # the heads alone learn
        losses = _train(head, batch, lr=lr)
        assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), f"{head_class.__name__}: {losses[:3]} -> {losses[-3:]}"
