"""PLACE: Pathological-Level Alignment and Correlation Exploration for chest X-ray representation learning.

Read top to bottom: building blocks (attention, MLP), the Visual Pathology Observation Extractor (VPOE), the
correlation-exploration head, then `PlacePreTrainedModel` and `PlaceModel`. The losses live in
`loss_place.py`; docs/METHOD.md in the repository documents every equation.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as activation_checkpoint
from transformers import BertConfig, BertModel, PreTrainedModel, TimmWrapperModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput, logging

from .configuration_place import PlaceConfig
from .loss_place import (
    correlation_loss,
    correlation_target,
    distributed_context,
    gather_with_grad,
    ita_loss,
    matching_weights,
    observation_similarity,
    pcma_loss,
)


logger = logging.get_logger(__name__)

# ----------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------
@dataclass
class PlaceOutput(ModelOutput):
    """Output of [`PlaceModel`]; losses are set only with `return_loss=True`.

    `logits_per_image` is `(B, B)` image-to-report similarity scaled by the logit scale;
    `observation_embeds` are the V-PORs `(B, M, d)` and `observation_attentions` where they look `(B, M, N)`;
    `sentence_embeds` are the T-PORs `(B, K, d)` with `sentence_mask` `(B, K)`; with `return_loss=True` and a joint
    `pcma_space`, `patch_embeds` are the normalised joint-space patches `(B, N, d)` the PCMA patch term reads.
    `last_hidden_state` holds the ViT's final-norm tokens `(B, prefix + N, D_v)` and `pooler_output` the global image
    embedding again (`image_embeds`), so that an image-only call (no `input_ids`) serves
    `pipeline("image-feature-extraction")`, whose default reads the first field set and `pool=True` `pooler_output`.
    """

    loss: Tensor | None = None
    loss_ita: Tensor | None = None
    loss_pcma: Tensor | None = None
    loss_ce: Tensor | None = None
    logits_per_image: Tensor | None = None
    logits_per_text: Tensor | None = None
    image_embeds: Tensor | None = None
    text_embeds: Tensor | None = None
    observation_embeds: Tensor | None = None
    observation_attentions: Tensor | None = None
    sentence_embeds: Tensor | None = None
    sentence_mask: Tensor | None = None
    patch_embeds: Tensor | None = None
    last_hidden_state: Tensor | None = None
    pooler_output: Tensor | None = None


@dataclass
class PlaceObservationOutput(ModelOutput):
    """V-PORs of a batch of images: `observation_embeds (B, M, d)`, `observation_attentions (B, M, N)`, and the
    global `image_embeds (B, d)` of the same ViT pass."""

    observation_embeds: Tensor | None = None
    observation_attentions: Tensor | None = None
    patch_embeds: Tensor | None = None
    image_embeds: Tensor | None = None


@dataclass
class PlaceSentenceOutput(ModelOutput):
    """T-PORs of a batch of reports: `sentence_embeds (B, K, d)` normalised, `sentence_mask (B, K)`."""

    sentence_embeds: Tensor | None = None
    sentence_mask: Tensor | None = None
    last_hidden_state: Tensor | None = None


# ----------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------
class PlaceAttention(nn.Module):
    """Multi-head attention on SDPA; returns head-averaged weights only when asked (VPOE grounding)."""

    def __init__(self, dim: int, num_heads: int, kv_dim: int | None = None) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.kv_proj = nn.Linear(kv_dim or dim, 2 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def _split_heads(self, x: Tensor) -> Tensor:
        batch, length, dim = x.shape
        return x.view(batch, length, self.num_heads, dim // self.num_heads).transpose(1, 2)

    def forward(
        self,
        query: Tensor,
        key_value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = False,
        key_position: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """`key_padding_mask` is `(B, Lk)` with True for keys that take part; `key_position` `(Lk, D)` is added
        to the keys only (DETR): a query can look for a place, and what it reads stays the content."""
        q = self._split_heads(self.q_proj(query))
        k, v = (self._split_heads(t) for t in self._keys_values(key_value, key_position))
        if q.shape[0] == 1:  # one query set for a batch of keys (the VPOE's first layer): broadcast, not copied
            q = q.expand(k.shape[0], -1, -1, -1)
        mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :].bool()
        if need_weights:
            weights = self._weights(q, k, mask)
            out = weights @ v
        else:
            weights = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = out.transpose(1, 2).flatten(2)
        return self.out_proj(out), None if weights is None else weights.mean(dim=1)

    def _keys_values(self, key_value: Tensor, key_position: Tensor | None) -> tuple[Tensor, Tensor]:
        keys, values = self.kv_proj(key_value).chunk(2, dim=-1)
        if key_position is None:
            return keys, values
        # W_k (x + p) + b_k = (W_k x + b_k) + W_k p: project the (N, D) code once, not once per image
        return keys + F.linear(key_position, self.kv_proj.weight[: keys.shape[-1]]), values

    def _weights(self, q: Tensor, k: Tensor, mask: Tensor | None) -> Tensor:
        """`(B, H, Lq, Lk)` softmax attention weights, computed in fp32."""
        scores = ((q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])).float()
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return scores.softmax(dim=-1).to(q.dtype)


class PlaceMLP(nn.Module):
    """Linear → GELU → Linear."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class PlaceVPOELayer(nn.Module):
    """Pre-norm decoder layer: query self-attention → cross-attention to patches → MLP."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.self_norm = nn.LayerNorm(dim)
        self.self_attn = PlaceAttention(dim, num_heads)
        self.cross_norm = nn.LayerNorm(dim)
        self.cross_attn = PlaceAttention(dim, num_heads)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = PlaceMLP(dim, 4 * dim, dim)

    def forward(
        self, queries: Tensor, patches: Tensor, need_weights: bool, key_position: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        normed = self.self_norm(queries)
        queries = queries + self.self_attn(normed, normed)[0]
        attended, weights = self.cross_attn(
            self.cross_norm(queries), patches, need_weights=need_weights, key_position=key_position
        )
        queries = queries + attended
        return queries + self.mlp(self.mlp_norm(queries)), weights


def sincos_positions_2d(num_patches: int, dim: int) -> Tensor:
    """Fixed 2-D sine-cosine codes `(N, dim)` of a square patch grid (row-major): half the channels code the
    row, half the column, each as sines and cosines at geometric frequencies (MAE, DETR)."""
    grid = math.isqrt(num_patches)
    if grid * grid != num_patches:
        raise ValueError(f"sine-cosine key positions need a square patch grid, got {num_patches} patches.")
    frequencies = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    angles = torch.arange(grid, dtype=torch.float32)[:, None] * frequencies  # (grid, dim/4)
    codes = torch.cat([angles.sin(), angles.cos()], dim=1)  # (grid, dim/2)
    rows = codes[:, None, :].expand(grid, grid, -1)
    cols = codes[None, :, :].expand(grid, grid, -1)
    return torch.cat([rows, cols], dim=-1).reshape(num_patches, dim)


@functools.lru_cache(maxsize=8)
def _key_positions(num_patches: int, dim: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """`sincos_positions_2d` built once per grid, device and dtype: the VPOE reads it on every forward (read-only)."""
    return sincos_positions_2d(num_patches, dim).to(device=device, dtype=dtype)


def vit_forward(vit: nn.Module, pixel_values: Tensor, patch_mask: Tensor | None = None,
                mask_token: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """A timm ViT's final-norm tokens `(B, prefix + N, D_v)` through its public `forward_features` (timm's own
    gradient checkpointing applies), and its patch embeddings `(B, N, D_v)`: the purely local tokens before the
    position embedding and any attention, read by a forward hook on `patch_embed`. `patch_mask (B, N)` swaps
    those embeddings for `mask_token` in the forward pass (the "masked" correlation exploration)."""
    taken: list[Tensor] = []

    def read_embeddings(module: nn.Module, inputs: Any, embeddings: Tensor) -> Tensor | None:
        taken.append(embeddings)
        if patch_mask is None:
            return None
        return torch.where(patch_mask.unsqueeze(-1), mask_token.to(embeddings.dtype), embeddings)

    handle = vit.patch_embed.register_forward_hook(read_embeddings)
    try:
        tokens = vit.forward_features(pixel_values.to(vit.patch_embed.proj.weight.dtype))
    finally:
        handle.remove()
    return tokens, taken[0]


def joint_space_patches(model: nn.Module, patches: Tensor, embeddings: Tensor) -> Tensor | None:
    """The patches' joint-space embeddings `(B, N, d)` a joint VPOE pools (None for `pcma_space="separate"`): the
    image projection of the final-norm `patches`, or (`"local"`) the local projection of the patch `embeddings`.
    `model` is a `PlaceModel` or a head holding the same projections."""
    space = model.config.pcma_space
    if space == "separate":
        return None
    return model.local_projection(embeddings) if space == "local" else model.vision_projection(patches)


class PlaceObservationExtractor(nn.Module):
    """VPOE: M learnable queries decode the patch tokens into V-PORs, each with its map over the patches.

    `pcma_space="separate"` (the paper's VPOE): a V-POR is the decoded query under the VPOE's own projection,
    and its map is the last decoder layer's cross-attention. `pcma_space="joint"`: a single-head pooling
    attention places each decoded query on the patch grid, and the V-POR is the attention-weighted mean of the
    patches' joint-space embeddings, so it can only say what lies under its map (docs/METHOD.md, section 15).
    """

    def __init__(self, config: PlaceConfig, vision_dim: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.zeros(config.num_queries, vision_dim))
        self.patch_norm = nn.LayerNorm(vision_dim)
        self.layers = nn.ModuleList(PlaceVPOELayer(vision_dim, config.vpoe_num_heads) for _ in range(config.vpoe_layers))
        self.final_norm = nn.LayerNorm(vision_dim)
        self.joint = config.pcma_space != "separate"
        if self.joint:
            self.pool_query = nn.Linear(vision_dim, vision_dim)
            self.pool_key = nn.Linear(vision_dim, vision_dim)
        else:
            self.projection = PlaceMLP(vision_dim, vision_dim, config.projection_dim)
        self.key_positions = config.vpoe_key_positions != "none"
        if self.key_positions and vision_dim % 4:
            raise ValueError(
                f"vpoe_key_positions={config.vpoe_key_positions!r} needs a vision width divisible by 4, got {vision_dim}."
            )

    def forward(self, patches: Tensor, patch_embeds: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """`patches (B, N, D_v)` (and, joint space, their embeddings `(B, N, d)`) → normalised V-PORs `(B, M, d)`
        and their maps `(B, M, N)`."""
        patches = self.patch_norm(patches)
        # Batch 1: the first layer's query self-attention and cross-attention queries are the same for every
        # image, so they are computed once and broadcast; the residual after the cross-attention has the batch.
        queries = self.queries.unsqueeze(0)
        positions = _key_positions(*patches.shape[1:], patches.device, patches.dtype) if self.key_positions else None
        weights = None
        for index, layer in enumerate(self.layers):
            last = index == len(self.layers) - 1 and not self.joint
            queries, weights = layer(queries, patches, last, positions)
        queries = self.final_norm(queries.expand(patches.shape[0], -1, -1))
        if not self.joint:
            return F.normalize(self.projection(queries), dim=-1), weights
        if patch_embeds is None:
            raise ValueError("a joint-space VPOE needs the patches' joint-space embeddings (`patch_embeds`).")
        maps = self.pooling_attention(queries, patches, positions)
        return F.normalize(maps @ patch_embeds.to(maps.dtype), dim=-1), maps

    def pooling_attention(self, queries: Tensor, patches: Tensor, positions: Tensor | None) -> Tensor:
        """Single-head softmax attention of the decoded queries over the patches (keys carry the positions)."""
        keys = self.pool_key(patches if positions is None else patches + positions)
        scores = self.pool_query(queries) @ keys.transpose(1, 2) / math.sqrt(keys.shape[-1])
        return scores.float().softmax(dim=-1)


class PlaceCorrelationHead(nn.Module):
    """Correlation exploration: patches attend to the report (fusion block), then map to d_c."""

    def __init__(self, config: PlaceConfig, vision_dim: int, text_dim: int) -> None:
        super().__init__()
        self.query_norm = nn.LayerNorm(vision_dim)
        self.text_norm = nn.LayerNorm(text_dim)
        self.cross_attn = PlaceAttention(vision_dim, config.fusion_num_heads, kv_dim=text_dim)
        self.mlp_norm = nn.LayerNorm(vision_dim)
        self.mlp = PlaceMLP(vision_dim, 4 * vision_dim, vision_dim)
        self.output = PlaceMLP(vision_dim, vision_dim, config.ce_dim)

    def forward(self, patches: Tensor, text_states: Tensor, text_mask: Tensor | None) -> Tensor:
        """`(B, N, D_v)` patches + `(B, L, D_t)` report states → `(B, N, d_c)` correlation embeddings."""
        fused = patches + self.cross_attn(self.query_norm(patches), self.text_norm(text_states), text_mask)[0]
        fused = fused + self.mlp(self.mlp_norm(fused))
        return self.output(fused)


def sentence_mean_pool(token_states: Tensor, sentence_ids: Tensor, max_sentences: int) -> tuple[Tensor, Tensor]:
    """Mean of the token states of each sentence (ids −1 are ignored): `(B, K, D)` and a `(B, K)` mask."""
    slots = torch.arange(max_sentences, device=sentence_ids.device)
    membership = (sentence_ids.unsqueeze(-1) == slots).to(token_states.dtype)  # (B, L, K)
    sums = membership.transpose(1, 2) @ token_states
    counts = membership.sum(dim=1)
    return sums / counts.clamp(min=1).unsqueeze(-1), counts > 0


# ----------------------------------------------------------------------------------------------------------
# Pretrained model base
# ----------------------------------------------------------------------------------------------------------
def _write_card(folder: str | os.PathLike, repo_id: str | None = None, overwrite: bool = False) -> None:
    """The model card of a saved folder, when the package (which holds the card templates) is installed."""
    try:  # Hub custom code runs without the package too: then no card is written (and no import is required)
        from modeling_place.publishing import write_model_card
    except ImportError:
        return
    write_model_card(folder, repo_id=repo_id, overwrite=overwrite)


def _write_auto_map_aliases(folder: str | os.PathLike, model_class: type) -> None:
    """Add the Auto classes a model serves beside its own to a saved `config.json`'s `auto_map`.

    `register_for_auto_class` takes one Auto class per model class, but [`PlaceModel`] is also the
    zero-shot-image-classification model: without the alias a folder would not load in that pipeline as Hub code.
    """
    aliases, own = getattr(model_class, "_extra_auto_classes", ()), getattr(model_class, "_auto_class", None)
    path = os.path.join(folder, "config.json")
    if not aliases or own is None or not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as file:
        config = json.load(file)
    reference = (config.get("auto_map") or {}).get(own)
    if reference is None:
        return
    config["auto_map"].update({name: reference for name in aliases})
    with open(path, "w", encoding="utf-8") as file:
        file.write(json.dumps(config, indent=2, sort_keys=True) + "\n")


class PlacePreTrainedModel(PreTrainedModel):
    config: PlaceConfig
    config_class = PlaceConfig
    base_model_prefix = "place"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    # Residual blocks that device-map sharding (accelerate `device_map="auto"`) must keep whole: timm's ViT `Block`,
    # the VPOE layer, BERT's layer (also the report decoder's layer).
    _no_split_modules = ["Block", "PlaceVPOELayer", "BertLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, PlaceObservationExtractor):
            nn.init.normal_(module.queries, std=self.config.vpoe_query_init_std)
        elif isinstance(module, PlaceModel):
            nn.init.constant_(module.logit_scale, math.log(self.config.logit_scale_init))
            if module.mask_token is not None:
                nn.init.normal_(module.mask_token, std=std)

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """`PreTrainedModel.save_pretrained`, then the PLACE model card as README.md (package installed only)."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            _write_auto_map_aliases(save_directory, type(self))
            _write_card(save_directory)

    def _upload_modified_files(self, working_dir: str | os.PathLike, repo_id: str, *args: Any, **kwargs: Any) -> Any:
        # `push_to_hub` saves the Hub's (or a generic) card over ours after `save_pretrained`: ours goes back in
        _write_card(working_dir, repo_id, overwrite=True)
        return super()._upload_modified_files(working_dir, repo_id, *args, **kwargs)

    def _set_gradient_checkpointing(self, enable: bool = True, *args: Any, **kwargs: Any) -> None:
        """Checkpoint the BERT layers (transformers) and the ViT blocks (timm's own flag)."""
        super()._set_gradient_checkpointing(enable, *args, **kwargs)
        for module in self.modules():
            if isinstance(module, TimmWrapperModel):
                module.timm_model.set_grad_checkpointing(enable)


# ----------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------
class PlaceModel(PlacePreTrainedModel):
    """Image and report towers, the VPOE, and the three PLACE objectives (ITA, PCMA, correlation exploration)."""

    # Also `AutoModelForZeroShotImageClassification` (the pretrained card's pipeline tag): registered in
    # __init__.py for the installed package and written into `auto_map` by `save_pretrained` for Hub code.
    _extra_auto_classes = ("AutoModelForZeroShotImageClassification",)

    def __init__(self, config: PlaceConfig) -> None:
        super().__init__(config)
        self.vision_model = TimmWrapperModel(config.vision_config)
        self.text_model = BertModel(config.text_config, add_pooling_layer=False)
        vision_dim = self.vision_model.timm_model.embed_dim
        text_dim = config.text_config.hidden_size
        if vision_dim % config.vpoe_num_heads or vision_dim % config.fusion_num_heads:
            raise ValueError(
                f"PlaceConfig.vpoe_num_heads ({config.vpoe_num_heads}) and fusion_num_heads "
                f"({config.fusion_num_heads}) must divide the vision width {vision_dim}."
            )
        self.vision_projection = PlaceMLP(vision_dim, vision_dim, config.projection_dim)
        self.text_projection = PlaceMLP(text_dim, text_dim, config.projection_dim)
        # Joint space: sentences share the report's projection (and patches the image's), so one space holds all.
        joint = config.pcma_space != "separate"
        self.sentence_projection = None if joint else PlaceMLP(text_dim, text_dim, config.projection_dim)
        # "local": patches enter the joint space from their purely local embeddings, under a projection of their own
        local = config.pcma_space == "local"
        self.local_projection = PlaceMLP(vision_dim, vision_dim, config.projection_dim) if local else None
        self.observation_extractor = PlaceObservationExtractor(config, vision_dim)
        # The correlation head is a training-only proxy: ablations without it carry no unused parameters.
        self.correlation_head = PlaceCorrelationHead(config, vision_dim, text_dim) if config.lambda_ce > 0 else None
        use_mask_token = config.lambda_ce > 0 and config.ce_mode == "masked"
        self.mask_token = nn.Parameter(torch.zeros(1, 1, vision_dim)) if use_mask_token else None
        self.logit_scale = nn.Parameter(torch.tensor(math.log(config.logit_scale_init)))
        self.post_init()

    # -- towers ------------------------------------------------------------------------------------------
    @property
    def num_prefix_tokens(self) -> int:
        return self.vision_model.timm_model.num_prefix_tokens

    def encode_image_tokens(self, pixel_values: Tensor, patch_mask: Tensor | None = None) -> Tensor:
        """Run the ViT: final-norm tokens `(B, prefix + N, D_v)`. `patch_mask (B, N)` replaces the masked patch
        embeddings by the learned mask token before the position embedding ("masked" correlation exploration)."""
        return self.encode_image(pixel_values, patch_mask)[0]

    def encode_image(self, pixel_values: Tensor, patch_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Final-norm tokens `(B, prefix + N, D_v)` and the local patch embeddings `(B, N, D_v)` of one ViT pass."""
        mask_token = None if patch_mask is None else self.mask_token
        return vit_forward(self.vision_model.timm_model, pixel_values, patch_mask, mask_token)

    def encode_text_tokens(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """BERT token states `(B, L, D_t)`."""
        return self.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def get_input_embeddings(self) -> nn.Embedding:
        """The report tower's word embeddings (so `resize_token_embeddings` grows the vocabulary)."""
        return self.text_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.text_model.set_input_embeddings(value)

    # -- uniform verbs -----------------------------------------------------------------------------------
    def get_image_features(self, pixel_values: Tensor, **kwargs: Any) -> BaseModelOutputWithPooling:
        """Global image embedding (normalised, `(B, d)`) in `pooler_output`; ViT tokens in `last_hidden_state`."""
        tokens = self.encode_image_tokens(pixel_values)
        return BaseModelOutputWithPooling(last_hidden_state=tokens, pooler_output=self._image_embeds(tokens))

    def get_text_features(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, **kwargs: Any
    ) -> BaseModelOutputWithPooling:
        """Global report embedding (normalised, `(B, d)`) in `pooler_output`; token states in `last_hidden_state`."""
        states = self.encode_text_tokens(input_ids, attention_mask)
        return BaseModelOutputWithPooling(
            last_hidden_state=states, pooler_output=self._text_embeds(states, attention_mask)
        )

    def _image_embeds(self, tokens: Tensor) -> Tensor:
        return F.normalize(self.vision_projection(tokens[:, 0]), dim=-1)

    def _text_embeds(self, states: Tensor, attention_mask: Tensor | None) -> Tensor:
        if self.config.text_pooling == "cls":
            pooled = states[:, 0]
        elif attention_mask is None:
            pooled = states.mean(dim=1)
        else:
            # Mean over real tokens: a from-scratch text tower's CLS starts nearly identical for every report,
            # which stalls contrastive learning at log(B) for hundreds of steps; the token mean does not.
            weights = attention_mask.to(states.dtype).unsqueeze(-1)
            pooled = (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return F.normalize(self.text_projection(pooled), dim=-1)

    def get_patch_features(self, pixel_values: Tensor) -> BaseModelOutputWithPooling:
        """Final-norm patch tokens `(B, N, D_v)` in `last_hidden_state`; the final-norm CLS in `pooler_output`."""
        tokens = self.encode_image_tokens(pixel_values)
        return BaseModelOutputWithPooling(last_hidden_state=tokens[:, self.num_prefix_tokens :], pooler_output=tokens[:, 0])

    def get_patch_embeddings(self, pixel_values: Tensor) -> Tensor:
        """Patches in the joint space, normalised `(B, N, d)`: the image projection of each final-norm patch token
        (BioViL's patch embeddings: their cosine with a sentence embedding is a grounding map), or with
        `pcma_space="local"` the local projection of each patch embedding."""
        tokens, embeddings = self.encode_image(pixel_values)
        patches = tokens[:, self.num_prefix_tokens :]
        joint = joint_space_patches(self, patches, embeddings)
        return F.normalize(self.vision_projection(patches) if joint is None else joint, dim=-1)

    def get_observation_features(self, pixel_values: Tensor) -> PlaceObservationOutput:
        """V-PORs `(B, M, d)`, their maps over the patches `(B, M, N)` and the global embedding, one ViT pass."""
        tokens, observations, attentions = self._observe(pixel_values)
        return PlaceObservationOutput(
            observations, attentions, tokens[:, self.num_prefix_tokens :], self._image_embeds(tokens)
        )

    def _observe(self, pixel_values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One ViT pass: final-norm tokens, V-PORs and their attention maps."""
        tokens, embeddings = self.encode_image(pixel_values)
        patches = tokens[:, self.num_prefix_tokens :]
        observations, attentions = self.observation_extractor(patches, joint_space_patches(self, patches, embeddings))
        return tokens, observations, attentions

    def get_sentence_features(
        self, input_ids: Tensor, attention_mask: Tensor | None, sentence_ids: Tensor
    ) -> PlaceSentenceOutput:
        """T-PORs: normalised projections of the mean token state of each sentence, `(B, K, d)`."""
        states = self.encode_text_tokens(input_ids, attention_mask)
        return self._sentence_features(states, sentence_ids)

    def _sentence_features(self, states: Tensor, sentence_ids: Tensor) -> PlaceSentenceOutput:
        pooled, mask = sentence_mean_pool(states, sentence_ids, self.config.max_sentences)
        projection = self.text_projection if self.sentence_projection is None else self.sentence_projection
        return PlaceSentenceOutput(F.normalize(projection(pooled), dim=-1), mask, states)

    def observation_scores(
        self, sentence_embeds: Tensor, pixel_values: Tensor | None = None, observation_embeds: Tensor | None = None
    ) -> Tensor:
        """s(t, i) of docs/METHOD.md for sentences `(..., d)` against images `(B, ...)`: returns `(..., B)`."""
        if observation_embeds is None:
            if pixel_values is None:
                raise ValueError("observation_scores needs pixel_values or observation_embeds.")
            observation_embeds = self.get_observation_features(pixel_values).observation_embeds
        flat = sentence_embeds.reshape(-1, sentence_embeds.shape[-1])
        scores = observation_similarity(flat, observation_embeds, self.config.tau_match, self.config.pcma_matching)
        return scores.reshape(*sentence_embeds.shape[:-1], observation_embeds.shape[0])

    def ground(self, pixel_values: Tensor, sentence_embeds: Tensor) -> Tensor:
        """Heat maps Σ_m a_m(t)·A_m of sentences `(B, K, d)` over their paired images, `(B, K, H, W)` in [0, 1].

        a_m(t) is the matching PCMA trained with: a softmax at `tau_match`, or one-hot on the best observation.
        """
        observed = self.get_observation_features(pixel_values)
        sims = torch.einsum("bkd,bmd->bkm", sentence_embeds.float(), observed.observation_embeds.float())
        weights = matching_weights(sims, self.config.tau_match, self.config.pcma_matching)
        return self.heat_maps(weights @ observed.observation_attentions.float(), pixel_values.shape[-2:])

    def heat_maps(self, patch_weights: Tensor, size: tuple[int, int]) -> Tensor:
        """Patch weights `(B, K, N)` upsampled to `size` and scaled to [0, 1] per map: `(B, K, H, W)`."""
        grid = self.config.image_size // self.config.patch_size
        maps = patch_weights.float().view(*patch_weights.shape[:2], grid, grid)
        maps = F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)
        low = maps.amin(dim=(-2, -1), keepdim=True)
        high = maps.amax(dim=(-2, -1), keepdim=True)
        return (maps - low) / (high - low).clamp(min=1e-12)

    # -- forward -----------------------------------------------------------------------------------------
    def forward(
        self,
        pixel_values: Tensor,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        sentence_ids: Tensor | None = None,
        sentence_hashes: Tensor | None = None,
        return_loss: bool = False,
        **kwargs: Any,
    ) -> PlaceOutput:
        """Encode a batch of image–report pairs; with `return_loss=True` also the weighted PLACE loss.

        Without `input_ids` only the image side runs (`image_embeds`, V-PORs, ViT tokens): the call the
        image-feature-extraction pipeline makes."""
        if input_ids is None:
            if return_loss:
                raise ValueError("return_loss=True needs the reports too: pass `input_ids` (PlaceProcessor(text=...)).")
            return self._image_output(pixel_values)
        needs_sentences = return_loss and self.config.lambda_pcma > 0
        if needs_sentences and sentence_ids is None:
            raise ValueError("PCMA (lambda_pcma > 0) needs `sentence_ids`: build the batch with PlaceProcessor.")
        tokens, embeddings = self.encode_image(pixel_values)
        patches = tokens[:, self.num_prefix_tokens :]
        text_states = self.encode_text_tokens(input_ids, attention_mask)
        image_embeds, text_embeds = self._image_embeds(tokens), self._text_embeds(text_states, attention_mask)
        # Training without PCMA (ITA-only, ITA+CE) skips the VPOE and T-PORs: nothing would use them.
        observe = not return_loss or self.config.lambda_pcma > 0
        joint = joint_space_patches(self, patches, embeddings) if observe else None
        observations, attentions = self.observation_extractor(patches, joint) if observe else (None, None)
        use_sentences = observe and sentence_ids is not None
        sentences = self._sentence_features(text_states, sentence_ids) if use_sentences else None
        scale = self.logit_scale.clamp(max=math.log(self.config.logit_scale_max)).exp()
        logits_per_image = scale * image_embeds.float() @ text_embeds.float().t()
        output = PlaceOutput(
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_image.t(),
            image_embeds=image_embeds,
            text_embeds=text_embeds,
            observation_embeds=observations,
            observation_attentions=attentions,
            sentence_embeds=None if sentences is None else sentences.sentence_embeds,
            sentence_mask=None if sentences is None else sentences.sentence_mask,
            last_hidden_state=tokens,
            pooler_output=image_embeds,
        )
        if return_loss:
            output.patch_embeds = None if joint is None else F.normalize(joint, dim=-1)
            self._add_losses(output, pixel_values, patches, text_states, attention_mask, sentence_hashes, scale)
        return output

    def _image_output(self, pixel_values: Tensor) -> PlaceOutput:
        tokens, observations, attentions = self._observe(pixel_values)
        image_embeds = self._image_embeds(tokens)
        return PlaceOutput(image_embeds=image_embeds, observation_embeds=observations,
                           observation_attentions=attentions, last_hidden_state=tokens, pooler_output=image_embeds)

    def _add_losses(
        self,
        output: PlaceOutput,
        pixel_values: Tensor,
        patches: Tensor,
        text_states: Tensor,
        attention_mask: Tensor | None,
        sentence_hashes: Tensor | None,
        scale: Tensor,
    ) -> None:
        """Fill the loss fields of `output`: each objective with a positive weight, gathered across ranks."""
        rank, world = distributed_context()
        offset = rank * pixel_values.shape[0]
        total = torch.zeros((), device=pixel_values.device)
        if self.config.lambda_ita > 0:
            output.loss_ita = ita_loss(
                output.image_embeds, output.text_embeds, gather_with_grad(output.image_embeds),
                gather_with_grad(output.text_embeds), scale, offset, world,
            )
            total = total + self.config.lambda_ita * output.loss_ita
        if self.config.lambda_pcma > 0:
            output.loss_pcma = self._pcma(output, sentence_hashes, offset, world)
            total = total + self.config.lambda_pcma * output.loss_pcma
        if self.config.lambda_ce > 0:
            output.loss_ce = self._correlation_exploration(pixel_values, patches, text_states, attention_mask)
            total = total + self.config.lambda_ce * output.loss_ce
        output.loss = total

    def _pcma(self, output: PlaceOutput, sentence_hashes: Tensor | None, offset: int, world: int) -> Tensor:
        """L_PCMA on the V-PORs, plus `pcma_patch_weight` times the same loss on the joint-space patches."""
        hashes = None if sentence_hashes is None else sentence_hashes.to(output.sentence_mask.device).long()
        loss = self._pcma_against(output.observation_embeds, output, hashes, offset, world)
        if self.config.pcma_patch_weight > 0:
            loss = loss + self.config.pcma_patch_weight * self._pcma_against(output.patch_embeds, output, hashes, offset, world)
        return loss

    def _pcma_against(self, observations: Tensor, output: PlaceOutput, hashes: Tensor | None, offset: int, world: int) -> Tensor:
        return pcma_loss(
            output.sentence_embeds, output.sentence_mask, hashes, observations,
            gather_with_grad(output.sentence_embeds), gather_with_grad(output.sentence_mask),
            None if hashes is None else gather_with_grad(hashes), gather_with_grad(observations),
            self.config.tau_match, self.config.tau_pcma, self.config.pcma_matching, offset, world,
        )

    def _correlation_exploration(
        self, pixel_values: Tensor, patches: Tensor, text_states: Tensor, attention_mask: Tensor | None
    ) -> Tensor:
        """L_CE on the main forward's patches ("dense") or on a second, partly masked forward ("masked")."""
        target = correlation_target(pixel_values, self.config.patch_size)
        if self.config.ce_mode == "masked":
            patch_mask = self.random_patch_mask(patches.shape[0], patches.shape[1], patches.device)
            patches = self.encode_image_tokens(pixel_values, patch_mask)[:, self.num_prefix_tokens :]
        return correlation_loss(self.correlation_head(patches, text_states, attention_mask), target)

    def random_patch_mask(self, batch: int, num_patches: int, device: torch.device) -> Tensor:
        """Exactly round(mask_ratio · N) random patches per image, `(B, N)` boolean."""
        num_masked = max(1, round(self.config.mask_ratio * num_patches))
        ranks = torch.rand(batch, num_patches, device=device).argsort(dim=1).argsort(dim=1)
        return ranks < num_masked

    # -- pretrained towers -------------------------------------------------------------------------------
    @classmethod
    def from_encoders(
        cls, vision: str | os.PathLike | None = None, text: str | os.PathLike | None = None,
        config: PlaceConfig | None = None, text_layers: int | None = None, **config_overrides: Any,
    ) -> "PlaceModel":
        """Build a PLACE model, then load pretrained towers into it (after `post_init`, so they survive).

        Args:
            vision: a timm checkpoint: a `.safetensors` file, or a folder / Hub id laid out as timm's Hub repos
                (`config.json` with `architecture` and `pretrained_cfg`, `model.safetensors`), e.g.
                `timm/deit_base_patch16_224.fb_in1k`; the folder's `architecture` replaces the vision tower's.
            text: a BERT-family folder or Hub id (e.g. `emilyalsentzer/Bio_ClinicalBERT`); its config replaces
                `text_config`. `model.safetensors` is read directly; a `pytorch_model.bin` only through torch's
                restricted `weights_only` unpickler (tensors and plain containers: no code runs).
            text_layers: keep only the first N transformer layers of the text tower (MGCA keeps 6 of 12).

        The missing / unexpected / ignored keys of each tower are logged and kept in `model.encoder_load_report`.
        """
        config = config or PlaceConfig(**config_overrides)
        vision = None if vision is None else resolve_pretrained(vision, _VISION_FILES)
        text = None if text is None else resolve_pretrained(text, _TEXT_FILES)
        architecture = None if vision is None else _timm_architecture(vision)
        if architecture is not None:
            config.vision_config.architecture = architecture
        if text is not None:
            config.text_config = BertConfig.from_pretrained(text)
        if text_layers is not None:
            config.text_config.num_hidden_layers = text_layers
        model = cls(config)
        model.encoder_load_report = model.load_encoders(vision=vision, text=text)
        return model

    def load_encoders(
        self, vision: str | os.PathLike | None = None, text: str | os.PathLike | None = None
    ) -> dict[str, dict[str, list[str]]]:
        """Load pretrained tower weights into this model in place (see `from_encoders`); returns, per tower, the
        checkpoint keys it ignored (classifier / pooler heads), found unexpected (e.g. layers cut by
        `text_layers`) and the tower's keys it missed (an error)."""
        report = {}
        if vision is not None:
            state = _read_timm_state_dict(resolve_pretrained(vision, _VISION_FILES))
            report["vision"] = _load_tower(self.vision_model.timm_model, state, f"vision checkpoint {vision}")
        if text is not None:
            state = _read_bert_state_dict(resolve_pretrained(text, _TEXT_FILES))
            report["text"] = _load_tower(self.text_model, state, f"text model {text}")
        return report


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # "owner/name", as the Hub spells repo ids
_VISION_FILES = ("config.json", "model.safetensors")
_TEXT_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", "vocab.txt", "tokenizer*", "special_tokens_map.json")
# Checkpoint entries no PLACE tower has: classifier heads (timm `head`, `head_dist`, `fc_norm`; BERT pretraining
# `cls.`), BERT's pooler, and position-id buffers older transformers saved.
_IGNORED_PREFIXES = ("head.", "head_dist.", "fc_norm.", "pooler.", "cls.")
_IGNORED_SUFFIXES = ("position_ids",)


def resolve_pretrained(source: str | os.PathLike, patterns: tuple[str, ...] = _TEXT_FILES) -> str:
    """A local file or folder as is; anything else is a Hub repo id, downloaded (only the files matching
    `patterns`) into the Hugging Face cache, or read from it when offline."""
    path = os.fspath(source)
    if os.path.exists(path) or not _HUB_ID.fullmatch(path):
        return path  # a local path (a missing one fails where it is read, with that reader's message)
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id=path, allow_patterns=list(patterns))
    except Exception as error:  # offline without a cached copy, an unknown id, no network
        raise FileNotFoundError(
            f"{path!r} is neither a local path nor a Hub repo id available here ({type(error).__name__}: {error})."
        ) from error


def _timm_architecture(path: str) -> str | None:
    """`architecture` of a timm Hub-style folder's `config.json` (None for a bare file or a folder without one)."""
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        return None
    with open(config_file, encoding="utf-8") as handle:
        return json.load(handle).get("architecture")


def _read_timm_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Weights of a timm ViT from a safetensors file or folder; `timm_model.` prefixes are stripped."""
    from safetensors.torch import load_file

    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "model.safetensors")
    if not path.endswith(".safetensors") or not os.path.isfile(path):
        raise FileNotFoundError(f"vision checkpoint {path!r}: expected a .safetensors file (pickle is not loaded).")
    state = load_file(path)
    return {key.removeprefix("timm_model."): value for key, value in state.items()}


def _read_bert_state_dict(folder: str) -> dict[str, Tensor]:
    """A BERT folder's weights with BertModel's key names: `model.safetensors`, else `pytorch_model.bin` through
    `torch.load(weights_only=True)` (its unpickler rebuilds tensors and plain containers only and refuses any
    other object, so a tampered file cannot run code). `bert.` prefixes (BertForPreTraining) are stripped and
    TF-era LayerNorm `gamma` / `beta` renamed."""
    safetensors_file, bin_file = os.path.join(folder, "model.safetensors"), os.path.join(folder, "pytorch_model.bin")
    if os.path.isfile(safetensors_file):
        from safetensors.torch import load_file

        state = load_file(safetensors_file)
    elif os.path.isfile(bin_file):
        state = torch.load(bin_file, map_location="cpu", weights_only=True, mmap=True)
    else:
        raise FileNotFoundError(f"text model {folder!r}: no model.safetensors or pytorch_model.bin.")
    renames = {".gamma": ".weight", ".beta": ".bias"}
    out = {}
    for key, value in state.items():
        key = key.removeprefix("bert.")
        for old, new in renames.items():
            key = key[: -len(old)] + new if "LayerNorm" in key and key.endswith(old) else key
        out[key] = value
    return out


def _load_tower(module: nn.Module, state: dict[str, Tensor], source: str) -> dict[str, list[str]]:
    """`load_state_dict` that ignores heads, raises on a missing or mis-shaped tower weight (naming them) and
    returns the ignored, unexpected and missing keys (logged)."""
    ignored = sorted(k for k in state if k.startswith(_IGNORED_PREFIXES) or k.endswith(_IGNORED_SUFFIXES))
    state = {k: v for k, v in state.items() if k not in set(ignored)}
    expected = module.state_dict()
    wrong_shape = [k for k, v in state.items() if k in expected and expected[k].shape != v.shape]
    missing = sorted(set(expected) - set(state))
    if wrong_shape or missing:
        raise ValueError(
            f"{source} does not fit this PLACE tower: shape mismatches {wrong_shape[:5]}, missing {missing[:5]}."
        )
    unexpected = sorted(set(state) - set(expected))
    module.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    report = {"missing": missing, "unexpected": unexpected, "ignored": ignored}
    logger.info(f"{source}: loaded {len(expected)} tensors; {len(unexpected)} unexpected, {len(ignored)} ignored.")
    return report


__all__ = ["PlaceModel", "PlaceOutput", "PlacePreTrainedModel", "PlaceObservationOutput", "PlaceSentenceOutput"]
