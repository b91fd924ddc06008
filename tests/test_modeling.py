"""PlaceConfig / PlaceModel: shapes, validation, both loading paths, pretrained towers, checkpointing, overfitting."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import timm
import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModel, BertConfig, BertModel

import modeling_place.modeling_place as modeling_module
from modeling_place import PlaceConfig, PlaceModel
from tests.helpers import micro_config, random_batch


@pytest.fixture
def micro_model() -> PlaceModel:
    torch.manual_seed(0)
    return PlaceModel(PlaceConfig(**micro_config())).eval()


def test_forward_shapes_and_uniform_verbs(micro_model):
    config = micro_model.config
    batch = random_batch(config, 3)
    out = micro_model(**batch, return_loss=True)
    d, m, k, n = config.projection_dim, config.num_queries, config.max_sentences, (32 // 8) ** 2
    assert out.logits_per_image.shape == (3, 3) and out.image_embeds.shape == (3, d)
    assert out.observation_embeds.shape == (3, m, d) and out.observation_attentions.shape == (3, m, n)
    assert out.sentence_embeds.shape == (3, k, d) and out.sentence_mask.shape == (3, k)
    torch.testing.assert_close(out.observation_attentions.sum(-1), torch.ones(3, m))
    for name in ("loss", "loss_ita", "loss_pcma", "loss_ce"):
        assert torch.isfinite(getattr(out, name)), name
    image = micro_model.get_image_features(batch["pixel_values"]).pooler_output
    torch.testing.assert_close(image, out.image_embeds)
    text = micro_model.get_text_features(batch["input_ids"], batch["attention_mask"]).pooler_output
    torch.testing.assert_close(text, out.text_embeds)
    assert micro_model.get_patch_features(batch["pixel_values"]).last_hidden_state.shape == (3, n, 48)


def test_image_only_forward_serves_feature_extraction(micro_model):
    batch = random_batch(micro_model.config, 2)
    with torch.no_grad():
        full, image_only = micro_model(**batch), micro_model(pixel_values=batch["pixel_values"])
    assert image_only.logits_per_image is None and image_only.text_embeds is None
    torch.testing.assert_close(image_only.image_embeds, full.image_embeds)
    torch.testing.assert_close(image_only.observation_embeds, full.observation_embeds)
    torch.testing.assert_close(image_only.last_hidden_state, full.last_hidden_state)
    # the image-feature-extraction pipeline reads output[0] (pool=False) or output["pooler_output"] (pool=True)
    torch.testing.assert_close(image_only[0], image_only.image_embeds)
    torch.testing.assert_close(image_only["pooler_output"], image_only.image_embeds)
    with pytest.raises(ValueError, match="input_ids"):
        micro_model(pixel_values=batch["pixel_values"], return_loss=True)


def test_resize_token_embeddings_grows_the_report_vocabulary(micro_model, tmp_path):
    old = micro_model.config.text_config.vocab_size
    micro_model.resize_token_embeddings(old + 7)
    assert micro_model.get_input_embeddings().num_embeddings == old + 7
    assert micro_model.config.text_config.vocab_size == old + 7
    batch = random_batch(micro_model.config, 2)
    batch["input_ids"][0, 1] = old + 6  # a new token id reaches the text tower
    with torch.no_grad():
        assert torch.isfinite(micro_model(**batch).logits_per_image).all()
    micro_model.save_pretrained(tmp_path)
    assert PlaceModel.from_pretrained(tmp_path).get_input_embeddings().num_embeddings == old + 7


def test_no_split_modules_name_every_residual_block(micro_model):
    """`device_map="auto"` must keep each ViT block, VPOE layer and BERT layer whole."""
    from modeling_place import PlacePreTrainedModel

    present = {type(module).__name__ for module in micro_model.modules()}
    assert set(PlacePreTrainedModel._no_split_modules) <= present  # no stale names
    # post_init merges the children's lists (BertModel's, TimmWrapperModel's) into the instance's
    assert {"Block", "PlaceVPOELayer", "BertLayer"} <= set(micro_model._no_split_modules)


def test_zero_shot_auto_class_loads_the_pretrained_model(micro_model, tmp_path):
    from transformers import AutoModelForZeroShotImageClassification

    micro_model.save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForZeroShotImageClassification"] == auto_map["AutoModel"] == "modeling_place.PlaceModel"
    assert type(AutoModelForZeroShotImageClassification.from_pretrained(tmp_path)) is PlaceModel


def test_observation_scores_and_grounding(micro_model):
    batch = random_batch(micro_model.config, 2)
    sentences = micro_model.get_sentence_features(batch["input_ids"], batch["attention_mask"], batch["sentence_ids"])
    scores = micro_model.observation_scores(sentences.sentence_embeds, batch["pixel_values"])
    assert scores.shape == (2, micro_model.config.max_sentences, 2)
    maps = micro_model.ground(batch["pixel_values"], sentences.sentence_embeds)
    assert maps.shape == (2, micro_model.config.max_sentences, 32, 32)
    assert maps.min() >= 0 and maps.max() <= 1
    observed = micro_model.get_observation_features(batch["pixel_values"])
    sims = torch.einsum("kd,md->km", sentences.sentence_embeds[0], observed.observation_embeds[0])
    attentions = observed.observation_attentions[0]

    def expected_map(weights: torch.Tensor) -> torch.Tensor:
        heat = torch.nn.functional.interpolate((weights @ attentions).view(1, 1, 4, 4), size=(32, 32),
                                               mode="bilinear", align_corners=False)[0, 0]
        return (heat - heat.min()) / (heat.max() - heat.min())

    # soft matching (the default) grounds a sentence on Σ_m softmax_m(sim / τ_match) A_m
    assert micro_model.config.pcma_matching == "soft"
    soft = torch.softmax(sims[0] / micro_model.config.tau_match, dim=-1)
    torch.testing.assert_close(maps[0, 0], expected_map(soft), atol=1e-5, rtol=1e-5)
    # hard matching, on its best observation's attention map alone
    micro_model.config.pcma_matching = "hard"
    hard_maps = micro_model.ground(batch["pixel_values"], sentences.sentence_embeds)
    torch.testing.assert_close(hard_maps[0, 0], expected_map(torch.nn.functional.one_hot(sims[0].argmax(), 4).float()),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"ce_mode": "sparse"}, "ce_mode"),
        ({"mask_ratio": 1.0}, "mask_ratio"),
        ({"num_queries": 0}, "num_queries"),
        ({"tau_match": -0.1}, "tau_match"),
        ({"lambda_ita": 0.0, "lambda_pcma": 0.0}, "lambda_ita"),
        ({"lambda_ce": float("nan")}, "lambda_ce"),
        ({"logit_scale_init": 200.0}, "logit_scale_init"),
        ({"pcma_matching": "fuzzy"}, "pcma_matching"),
        ({"text_pooling": "max"}, "text_pooling"),
        ({"vpoe_key_positions": "learned"}, "vpoe_key_positions"),
        ({"vpoe_query_init_std": 0.0}, "vpoe_query_init_std"),
        ({"pcma_space": "shared"}, "pcma_space"),
        ({"num_queries": "16"}, "num_queries"),
        ({"freeze_encoder": 1}, "freeze_encoder"),
        ({"detection_trunk_layers": -1}, "detection_trunk_layers"),
        ({"decoder_layers": 0}, "decoder_layers"),
        ({"vision_config": {"architecture": "resnet50"}}, "architecture"),
    ],
)
def test_invalid_config_names_the_field(overrides, field):
    """`@strict` checks every declared type (head options included); `validate_place` the invariants."""
    with pytest.raises((ValueError, StrictDataclassError), match=field):
        PlaceConfig(**micro_config(**overrides))


@pytest.mark.parametrize(
    "saved, message",
    [
        ({"vpoe_input_block": 1}, "trained with vpoe_input_block=1"),
        ({"observation_tokens": "queries"}, "ignoring retired option 'observation_tokens'"),
        ({"pcma_diversity": 1.0, "vpoe_attention": "competitive"}, "vpoe_attention"),
        ({"vpoe_key_positions": "sincos_values"}, "loading as 'sincos'"),
    ],
)
def test_a_folder_with_a_retired_option_loads_with_a_warning_naming_it(tmp_path, saved, message):
    PlaceConfig(**micro_config()).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **saved}))
    with pytest.warns(UserWarning, match=message):
        config = PlaceConfig.from_pretrained(tmp_path)
    assert not set(saved) - {"vpoe_key_positions"} & set(config.to_dict())
    assert config.vpoe_key_positions in ("none", "sincos")


def test_mean_text_pooling_ignores_padding():
    torch.manual_seed(0)
    model = PlaceModel(PlaceConfig(**micro_config(text_pooling="mean"))).eval()
    ids = torch.randint(5, 100, (1, 8))
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 8), torch.zeros(1, 4)], dim=1).long()
    with torch.no_grad():
        short = model.get_text_features(ids, torch.ones_like(ids)).pooler_output
        long = model.get_text_features(padded, mask).pooler_output
        cls_model = PlaceModel(PlaceConfig(**micro_config())).eval()
        cls_model.load_state_dict(model.state_dict())
        cls = cls_model.get_text_features(ids, torch.ones_like(ids)).pooler_output
    torch.testing.assert_close(short, long, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(short, cls, atol=1e-3)  # the option changes what is pooled


def test_unit_scale_queries_start_with_distinct_observations():
    pixels = random_batch(PlaceConfig(**micro_config()), 4)["pixel_values"]
    cosines = {}
    for std in (0.02, 1.0):
        torch.manual_seed(0)
        model = PlaceModel(PlaceConfig(**micro_config(num_queries=8, vpoe_query_init_std=std))).eval()
        with torch.no_grad():
            observations = model.get_observation_features(pixels).observation_embeds
        cosine = observations @ observations.transpose(1, 2)
        cosines[std] = cosine[:, ~torch.eye(8, dtype=torch.bool)].mean().item()
    assert cosines[1.0] < 0.5 < cosines[0.02]


def test_key_positions_move_only_the_keys_and_code_the_grid():
    from modeling_place.modeling_place import PlaceAttention, sincos_positions_2d

    torch.manual_seed(0)
    attention = PlaceAttention(8, 2)
    queries, patches = torch.randn(1, 3, 8), torch.randn(1, 4, 8)
    positions = sincos_positions_2d(4, 8)
    plain, plain_weights = attention(queries, patches, need_weights=True)
    zero, zero_weights = attention(queries, patches, need_weights=True, key_position=torch.zeros(4, 8))
    torch.testing.assert_close(zero_weights, plain_weights)  # a zero code changes nothing
    placed, placed_weights = attention(queries, patches, need_weights=True, key_position=positions)
    key_weight, value_weight = attention.kv_proj.weight.chunk(2)
    key_bias, value_bias = attention.kv_proj.bias.chunk(2)
    q = attention.q_proj(queries)[0].view(3, 2, 4)
    k = ((patches[0] + positions) @ key_weight.T + key_bias).view(4, 2, 4)
    v = (patches[0] @ value_weight.T + value_bias).view(4, 2, 4)  # values carry no position
    per_head = [((q[:, h] @ k[:, h].T) / 2.0).softmax(-1) for h in range(2)]
    expected = attention.out_proj(torch.cat([w @ v[:, h] for h, w in enumerate(per_head)], dim=1))
    torch.testing.assert_close(placed[0], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(placed_weights[0], sum(per_head) / 2, atol=1e-5, rtol=1e-5)
    # rows and columns of a 2x2 grid: the first half codes the row, the second the column
    assert torch.equal(positions[0, :4], positions[1, :4]) and torch.equal(positions[0, 4:], positions[2, 4:])
    assert not torch.equal(positions[0], positions[3])
    with pytest.raises(ValueError, match="square"):
        sincos_positions_2d(6, 8)


def test_key_positions_config_trains_and_changes_the_observations():
    config = PlaceConfig(**micro_config(vpoe_key_positions="sincos"))
    torch.manual_seed(0)
    model = PlaceModel(config)
    batch = random_batch(config, 2)
    model(**batch, return_loss=True).loss.backward()
    assert model.observation_extractor.queries.grad is not None
    plain = PlaceModel(PlaceConfig(**micro_config())).eval()
    plain.load_state_dict(model.state_dict())  # no new parameters: the codes are fixed
    model.eval()
    with torch.no_grad():
        placed = model.get_observation_features(batch["pixel_values"]).observation_attentions
        unplaced = plain.get_observation_features(batch["pixel_values"]).observation_attentions
    assert not torch.allclose(placed, unplaced, atol=1e-4)


@pytest.mark.parametrize("space", ["joint", "local"])
def test_joint_space_observations_pool_projected_patches_under_their_maps(space):
    config = PlaceConfig(**micro_config(pcma_space=space, vpoe_key_positions="sincos"))
    torch.manual_seed(0)
    model = PlaceModel(config)
    assert model.sentence_projection is None and not hasattr(model.observation_extractor, "projection")
    batch = random_batch(config, 4)
    output = model(**batch, return_loss=True)
    output.loss.backward()  # every parameter trains: DDP would wait forever for an unused one
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    model.eval()
    with torch.no_grad():
        observed = model.get_observation_features(batch["pixel_values"])
        if space == "local":  # the local projection of the patch embeddings, before positions and attention
            local = model.vision_model.timm_model.patch_embed(batch["pixel_values"])
            patch_embeds = model.local_projection(local)
        else:
            patch_embeds = model.vision_projection(observed.patch_embeds)
        torch.testing.assert_close(model.get_patch_embeddings(batch["pixel_values"]),
                                   torch.nn.functional.normalize(patch_embeds, dim=-1))
        vpoe = model.observation_extractor
        for b in range(2):  # loop reference: V-POR m = normalise(sum_n A[m, n] * W_v(patch_n))
            for m in range(config.num_queries):
                pooled = sum(observed.observation_attentions[b, m, n] * patch_embeds[b, n] for n in range(patch_embeds.shape[1]))
                torch.testing.assert_close(observed.observation_embeds[b, m], torch.nn.functional.normalize(pooled, dim=0),
                                           atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(observed.observation_attentions.sum(-1), torch.ones(4, config.num_queries))
        sentences = model.get_sentence_features(batch["input_ids"], batch["attention_mask"], batch["sentence_ids"])
        expected = torch.nn.functional.normalize(model.text_projection(
            modeling_module.sentence_mean_pool(sentences.last_hidden_state, batch["sentence_ids"], config.max_sentences)[0]), dim=-1)
    torch.testing.assert_close(sentences.sentence_embeds, expected)  # T-PORs share the report's projection
    assert vpoe.pool_key.weight.grad is not None


def test_patch_embeddings_are_the_normalised_image_projection_of_each_patch():
    torch.manual_seed(0)
    model = PlaceModel(PlaceConfig(**micro_config())).eval()
    pixels = random_batch(model.config, 2)["pixel_values"]
    with torch.no_grad():
        embeds = model.get_patch_embeddings(pixels)
        patches = model.get_patch_features(pixels).last_hidden_state
    grid = model.config.image_size // model.config.patch_size
    assert embeds.shape == (2, grid * grid, model.config.projection_dim)
    torch.testing.assert_close(embeds, torch.nn.functional.normalize(model.vision_projection(patches), dim=-1))

def test_vpoe_heads_must_divide_vision_width():
    with pytest.raises(ValueError, match="vpoe_num_heads"):
        PlaceModel(PlaceConfig(**micro_config(vpoe_num_heads=5)))


def test_presets():
    tiny, base = PlaceConfig.from_preset("tiny"), PlaceConfig.from_preset("base")
    assert tiny.vision_config.model_args["depth"] == 4 and base.text_config.num_hidden_layers == 12
    assert base.vision_config.architecture == "vit_base_patch16_224" and base.patch_size == 16
    # the tiny preset carries the VPOE measured best on the CPU (RESULTS.md, section 8); the class keeps docs/METHOD.md's
    assert (tiny.num_queries, tiny.pcma_matching, tiny.vpoe_key_positions) == (32, "hard", "sincos")
    assert (base.num_queries, base.pcma_matching, base.vpoe_key_positions) == (16, "soft", "none")
    with pytest.raises(ValueError, match="preset"):
        PlaceConfig.from_preset("huge")


def test_installed_auto_classes_round_trip(micro_model, tmp_path):
    micro_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    assert isinstance(AutoConfig.from_pretrained(tmp_path), PlaceConfig)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is PlaceModel
    batch = random_batch(micro_model.config, 2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits_per_image, micro_model(**batch).logits_per_image, rtol=0, atol=0)


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    class BlockPackage:  # the package must not be importable: only the folder's custom code may be used
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("modeling_place", "processing"):
                raise ImportError("blocked " + name)
    sys.meta_path.insert(0, BlockPackage())
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModel
    folder = sys.argv[1]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    batch = load_file(folder + "/batch.safetensors")
    with torch.no_grad():
        out = model(**batch)
    save_file({"logits": out.logits_per_image.contiguous()}, folder + "/remote_out.safetensors")
    """
)


def test_remote_code_round_trip_without_package(micro_model, tmp_path):
    from safetensors.torch import load_file

    micro_model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"]["AutoModel"] == "modeling_place.PlaceModel"
    batch = random_batch(micro_model.config, 2)
    save_file(batch, tmp_path / "batch.safetensors")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": ""}
    subprocess.run([sys.executable, "-c", REMOTE_SCRIPT, str(tmp_path)], check=True, cwd=tmp_path, env=env)
    with torch.no_grad():
        expected = micro_model(**batch).logits_per_image
    torch.testing.assert_close(load_file(tmp_path / "remote_out.safetensors")["logits"], expected, rtol=0, atol=0)


def test_other_model_type_fails_clearly(tmp_path):
    BertModel(BertConfig(**micro_config()["text_config"])).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'bert' checkpoint, not a PLACE model"):
        PlaceModel.from_pretrained(tmp_path)


def test_from_encoders_keeps_pretrained_towers(tmp_path):
    config = PlaceConfig(**micro_config())
    vit = timm.create_model(config.vision_config.architecture, num_classes=0, **config.vision_config.model_args)
    save_file(vit.state_dict(), tmp_path / "vit.safetensors")
    bert = BertModel(BertConfig(**micro_config()["text_config"]), add_pooling_layer=False)
    bert.save_pretrained(tmp_path / "bert")
    model = PlaceModel.from_encoders(vision=tmp_path / "vit.safetensors", text=tmp_path / "bert", config=config)
    for name, value in vit.state_dict().items():
        torch.testing.assert_close(model.vision_model.timm_model.state_dict()[name], value, msg=name)
    for name, value in bert.state_dict().items():
        torch.testing.assert_close(model.text_model.state_dict()[name], value, msg=name)
    with pytest.raises(FileNotFoundError, match="safetensors"):
        model.load_encoders(vision=tmp_path / "vit.pth")


def test_from_encoders_rejects_mismatched_tower(tmp_path):
    other = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, patch_size=8, depth=1, embed_dim=24,
                              num_heads=3)
    save_file(other.state_dict(), tmp_path / "vit.safetensors")
    with pytest.raises(ValueError, match="does not fit"):
        PlaceModel.from_encoders(vision=tmp_path / "vit.safetensors", config=PlaceConfig(**micro_config()))


@pytest.mark.parametrize("pcma_space", ["separate", "joint", "local"])
def test_gradient_checkpointing_gives_same_loss_and_gradients(pcma_space):
    no_dropout = {**micro_config()["text_config"], "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    config = PlaceConfig(**micro_config(text_config=no_dropout, pcma_space=pcma_space))
    torch.manual_seed(0)
    model = PlaceModel(config).train()
    batch = random_batch(config, 4)

    def loss_and_grad():
        model.zero_grad()
        loss = model(**batch, return_loss=True).loss
        loss.backward()
        return loss.detach(), model.vision_model.timm_model.patch_embed.proj.weight.grad.clone()

    plain = loss_and_grad()
    model.activation_checkpointing_enable()
    assert model.vision_model.timm_model.grad_checkpointing
    checkpointed = loss_and_grad()
    torch.testing.assert_close(checkpointed[0], plain[0])
    torch.testing.assert_close(checkpointed[1], plain[1])

@pytest.mark.parametrize("ce_mode", ["dense", "masked"])
def test_masked_and_dense_modes_train(ce_mode):
    model = PlaceModel(PlaceConfig(**micro_config(ce_mode=ce_mode))).train()
    out = model(**random_batch(model.config, 4), return_loss=True)
    out.loss.backward()
    assert model.correlation_head.output.fc2.weight.grad is not None
    assert (model.mask_token is not None) == (ce_mode == "masked")


def test_ablation_without_ce_has_no_correlation_head():
    model = PlaceModel(PlaceConfig(**micro_config(lambda_ce=0.0)))
    out = model(**random_batch(model.config, 2), return_loss=True)
    assert model.correlation_head is None and out.loss_ce is None
    torch.testing.assert_close(out.loss, out.loss_ita + out.loss_pcma)


def test_pcma_needs_sentence_ids(micro_model):
    batch = random_batch(micro_model.config, 2)
    batch.pop("sentence_ids")
    with pytest.raises(ValueError, match="sentence_ids"):
        micro_model(**batch, return_loss=True)


def test_tiny_preset_overfits_one_batch_all_losses_decrease():
    torch.manual_seed(0)
    config = PlaceConfig.from_preset("tiny")
    model = PlaceModel(config).train()
    batch = random_batch(config, 8, length=32)
    # distinct sentences except one shared by two reports, so PCMA has a reachable optimum
    batch["sentence_hashes"] = (torch.arange(8 * 16).view(8, 16) + 1) * (batch["sentence_hashes"] != 0)
    batch["sentence_hashes"][1, 0] = batch["sentence_hashes"][0, 0]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    history = []
    for _ in range(50):
        out = model(**batch, return_loss=True)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        history.append([out.loss_ita.item(), out.loss_pcma.item(), out.loss_ce.item()])
    first, last = torch.tensor(history[:3]).mean(0), torch.tensor(history[-3:]).mean(0)
    assert (last < 0.85 * first).all(), f"losses did not decrease enough: {first.tolist()} -> {last.tolist()}"
