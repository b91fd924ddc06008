"""Configuration of PLACE: the single source of truth for the towers and every objective's knobs.

`PlaceConfig` carries a timm vision sub-config (`TimmWrapperConfig`), a BERT-family text sub-config and the
fields of the three objectives of METHOD.md (ITA, PCMA with the VPOE, correlation exploration). Presets
`tiny` and `base` come from `PlaceConfig.from_preset(name)`.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

from transformers import BertConfig, PreTrainedConfig, TimmWrapperConfig
from transformers.configuration_utils import SubConfigSpec

# Presets: the tower shapes only; every PLACE field keeps its default unless a preset needs otherwise.
_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "vision_config": {
            "architecture": "vit_tiny_patch16_224",
            # 128 px (64 patches): 2.5x cheaper per step than 224 px, so a 2-core CPU run sees 3x the data.
            "model_args": {"img_size": 128, "depth": 4, "embed_dim": 192, "num_heads": 3},
        },
        "text_config": {
            "vocab_size": 4096,
            "hidden_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 512,
            "max_position_embeddings": 256,
        },
        "vpoe_num_heads": 3,
        "fusion_num_heads": 3,
        "text_pooling": "mean",  # the tiny preset trains its text tower from scratch (see PlaceConfig)
        # The VPOE measured best at 1,200 CPU steps (docs/RESULTS.md, section 8): queries that can look at a
        # place ground 2x better, and a sentence reads its best observation's map.
        "num_queries": 32,
        "pcma_matching": "hard",
        "vpoe_key_positions": "sincos",
    },
    "base": {
        "vision_config": {"architecture": "vit_base_patch16_224", "model_args": {"img_size": 224}},
        "text_config": {
            "vocab_size": 30522,
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "max_position_embeddings": 512,
        },
        "vpoe_num_heads": 12,
        "fusion_num_heads": 12,
    },
}

_DEFAULT_VISION = dict(_PRESETS["tiny"]["vision_config"])
_DEFAULT_TEXT = dict(_PRESETS["tiny"]["text_config"])


class PlaceConfig(PreTrainedConfig):
    r"""
    Configuration of a [`PlaceModel`].

    Args:
        vision_config (`dict` or `TimmWrapperConfig`): the timm ViT (`architecture` + `model_args`, e.g. `img_size`).
        text_config (`dict` or `BertConfig`): the BERT-family text tower.
        projection_dim (`int`, defaults to 128): d, the size of every aligned embedding (global, V-POR, T-POR).
        num_queries (`int`, defaults to 16): M, the VPOE's learnable pathology queries.
        vpoe_layers (`int`, defaults to 2): depth of the VPOE decoder.
        vpoe_num_heads (`int`, defaults to 3): attention heads of the VPOE (must divide the vision width).
        max_sentences (`int`, defaults to 16): K, sentences kept per report.
        logit_scale_init (`float`, defaults to 1/0.07): initial ITA logit scale; clamped to `logit_scale_max`.
        tau_match (`float`, defaults to 0.1): temperature of the sentence-to-observation soft matching.
        tau_pcma (`float`, defaults to 0.1): temperature of the PCMA InfoNCE.
        pcma_matching (`"soft"` or `"hard"`): METHOD.md's softmax over observations at `tau_match`, or the
            best-matching observation only (the `tiny` preset's choice, with `vpoe_key_positions="sincos"`;
            docs/RESULTS.md, section 8). Grounding maps follow the same matching.
        vpoe_attention (`"softmax"` or `"competitive"`): the VPOE's cross-attention, a softmax over patches per
            query, or Slot Attention's softmax over queries per patch (queries compete for patches, so they
            cannot all settle on one).
        observation_tokens (`"queries"` or `"patches"`): where the V-PORs come from: the VPOE's M learned queries
            (METHOD.md), or every patch token itself, normalised and projected (M = N, attention = identity), which
            makes PCMA a FILIP-style sentence-to-patch alignment and grounding a sentence-to-patch similarity map
            (the candidate fix for collapsed observations; docs/RESULTS.md).
        vpoe_key_positions (`"none"`, `"sincos"` or `"sincos_values"`): what the VPOE's cross-attention keys carry besides the patch
            tokens: nothing (METHOD.md), or a fixed 2-D sine-cosine position code added to every key (DETR), so a
            query can attend to a place and not only to content; the values stay the patch tokens. The class
            default is METHOD.md's "none", so folders saved before the option load unchanged; the `tiny` preset
            turns it on. `"sincos_values"` adds the code to the values too, so a V-POR also says where its
            query looked, and a sentence that names a side and zone can match by place (docs/RESULTS.md,
            section 11).
        vpoe_input_block (`int` or `None`): which patch tokens the VPOE reads: the final-norm tokens (`None`,
            METHOD.md), or the output of ViT block k (1-based; 0 = the position-embedded patch embeddings, before
            any mixing). Deep tokens carry the whole image, so any query can describe any finding wherever it
            looks; earlier ones carry less of it. On the tiny preset's schedule this did not move the matched
            query onto the lesion (docs/RESULTS.md, section 11). The global embedding, the correlation head and
            every downstream head keep the final-norm tokens.
        pcma_diversity (`float`, defaults to 0): weight of a term added to L_PCMA, the mean squared cosine between
            an image's different V-PORs (keeps the observations from collapsing into one global vector).
        text_pooling (`"cls"` or `"mean"`): the report's global token, CLS (METHOD.md; right for a pretrained
            text tower) or the mean over real tokens (trains far sooner from scratch; the `tiny` preset's choice).
        ce_mode (`"dense"` or `"masked"`): correlation exploration on the main forward's patches, or on a
            second forward with `mask_ratio` of the patch embeddings replaced by a learned mask token.
        ce_dim (`int`, defaults to 64): d_c, the width of the correlation embedding.
        fusion_num_heads (`int`): heads of the patch-to-report fusion block.
        lambda_ita, lambda_pcma, lambda_ce (`float`): loss weights; 0 switches an objective off.
        vpoe_query_init_std (`float`, defaults to 1.0): std of the VPOE queries at initialisation. At 0.02 the
            first cross-attention output swamps them and the V-PORs start nearly identical (cosine 0.96 on the
            tiny preset); 1.0 (DETR's scale) starts them distinct (0.04). See docs/EVALUATION.md.
    """

    model_type = "place"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=TimmWrapperConfig, init_kwargs=_DEFAULT_VISION),
        "text_config": SubConfigSpec(config_class=BertConfig, init_kwargs=_DEFAULT_TEXT),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    projection_dim: int = 128
    num_queries: int = 16
    vpoe_layers: int = 2
    vpoe_num_heads: int = 3
    max_sentences: int = 16
    logit_scale_init: float = 1 / 0.07
    logit_scale_max: float = 100.0
    tau_match: float = 0.1
    tau_pcma: float = 0.1
    pcma_matching: Literal["soft", "hard"] = "soft"
    vpoe_attention: Literal["softmax", "competitive"] = "softmax"
    observation_tokens: Literal["queries", "patches"] = "queries"
    vpoe_key_positions: Literal["none", "sincos", "sincos_values"] = "none"
    vpoe_input_block: int | None = None
    pcma_diversity: float = 0.0
    text_pooling: Literal["cls", "mean"] = "cls"
    ce_mode: Literal["dense", "masked"] = "dense"
    mask_ratio: float = 0.5
    ce_dim: int = 64
    fusion_num_heads: int = 3
    lambda_ita: float = 1.0
    lambda_pcma: float = 1.0
    lambda_ce: float = 1.0
    initializer_range: float = 0.02
    vpoe_query_init_std: float = 1.0

    def __post_init__(self, **kwargs: Any) -> None:
        # A partial dict sub-config keeps the defaults it does not override.
        if isinstance(self.vision_config, dict):
            self.vision_config = {**copy.deepcopy(_DEFAULT_VISION), **self.vision_config}
        if isinstance(self.text_config, dict):
            self.text_config = {**_DEFAULT_TEXT, **self.text_config}
        super().__post_init__(**kwargs)
        self.validate_place_fields()

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "PlaceConfig":
        """Build the `tiny` (CPU tests, quick runs) or `base` (ViT-B/16 + BERT-base) configuration."""
        if name not in _PRESETS:
            raise ValueError(f"Unknown PLACE preset {name!r}; choose one of {sorted(_PRESETS)}.")
        return cls(**{**copy.deepcopy(_PRESETS[name]), **overrides})

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, **kwargs: Any) -> "PlaceConfig":
        """Load a saved configuration; a checkpoint of another model type fails with a clear error."""
        config_dict, _ = cls.get_config_dict(pretrained_model_name_or_path, **kwargs)
        found = config_dict.get("model_type")
        if found is not None and found != cls.model_type:
            raise ValueError(
                f"{pretrained_model_name_or_path} holds a {found!r} checkpoint, not a PLACE model "
                f"(model_type {cls.model_type!r}). Load it with its own class, or pass a PLACE folder."
            )
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @property
    def image_size(self) -> int:
        """Input resolution of the vision tower (its `img_size` model argument, 224 by default)."""
        return int((self.vision_config.model_args or {}).get("img_size", 224))

    @property
    def patch_size(self) -> int:
        """Patch size of the ViT, from `model_args` or the architecture name (`..._patch16_...`)."""
        args = self.vision_config.model_args or {}
        if "patch_size" in args:
            return int(args["patch_size"])
        for part in self.vision_config.architecture.split("_"):
            if part.startswith("patch") and part[5:].isdigit():
                return int(part[5:])
        raise ValueError(
            f"vision_config: cannot infer the patch size of {self.vision_config.architecture!r}; "
            "set vision_config.model_args['patch_size']."
        )

    @property
    def loss_weights(self) -> dict[str, float]:
        return {"ita": self.lambda_ita, "pcma": self.lambda_pcma, "ce": self.lambda_ce}

    def validate_place_fields(self) -> None:
        """Raise a `ValueError` naming the first field whose value cannot work."""
        positive_ints = ("projection_dim", "num_queries", "vpoe_layers", "vpoe_num_heads", "max_sentences",
                         "ce_dim", "fusion_num_heads")
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"PlaceConfig.{name} must be a positive integer, got {value!r}.")
        for name in ("tau_match", "tau_pcma", "logit_scale_init", "logit_scale_max", "initializer_range",
                     "vpoe_query_init_std"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"PlaceConfig.{name} must be a finite positive number, got {value!r}.")
        if self.logit_scale_init > self.logit_scale_max:
            raise ValueError(
                f"PlaceConfig.logit_scale_init ({self.logit_scale_init}) exceeds logit_scale_max "
                f"({self.logit_scale_max})."
            )
        self._validate_choices_and_weights()

    def _validate_choices_and_weights(self) -> None:
        if self.ce_mode not in ("dense", "masked"):
            raise ValueError(f"PlaceConfig.ce_mode must be 'dense' or 'masked', got {self.ce_mode!r}.")
        if self.text_pooling not in ("cls", "mean"):
            raise ValueError(f"PlaceConfig.text_pooling must be 'cls' or 'mean', got {self.text_pooling!r}.")
        if self.pcma_matching not in ("soft", "hard"):
            raise ValueError(f"PlaceConfig.pcma_matching must be 'soft' or 'hard', got {self.pcma_matching!r}.")
        if self.vpoe_attention not in ("softmax", "competitive"):
            raise ValueError(f"PlaceConfig.vpoe_attention must be 'softmax' or 'competitive', got {self.vpoe_attention!r}.")
        if self.observation_tokens not in ("queries", "patches"):
            raise ValueError(
                f"PlaceConfig.observation_tokens must be 'queries' or 'patches', got {self.observation_tokens!r}."
            )
        if self.vpoe_key_positions not in ("none", "sincos", "sincos_values"):
            raise ValueError(
                "PlaceConfig.vpoe_key_positions must be 'none', 'sincos' or 'sincos_values', "
                f"got {self.vpoe_key_positions!r}."
            )
        if self.vpoe_input_block is not None and (
            not isinstance(self.vpoe_input_block, int) or isinstance(self.vpoe_input_block, bool) or self.vpoe_input_block < 0
        ):
            raise ValueError(
                "PlaceConfig.vpoe_input_block must be None (final-norm tokens) or a ViT block number >= 0 "
                f"(0: the patch embeddings), got {self.vpoe_input_block!r}."
            )
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"PlaceConfig.mask_ratio must lie in (0, 1), got {self.mask_ratio!r}.")
        if not (isinstance(self.pcma_diversity, (int, float)) and math.isfinite(self.pcma_diversity)
                and self.pcma_diversity >= 0):
            raise ValueError(f"PlaceConfig.pcma_diversity must be a finite number >= 0, got {self.pcma_diversity!r}.")
        for name, weight in self.loss_weights.items():
            if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
                raise ValueError(f"PlaceConfig.lambda_{name} must be a finite number >= 0, got {weight!r}.")
        if self.lambda_ita == 0 and self.lambda_pcma == 0:
            # CE alone learns no image-report alignment and leaves the projection heads untrained.
            raise ValueError("PlaceConfig.lambda_ita and lambda_pcma are both 0: at least one alignment loss is needed.")
        if not self.vision_config.architecture.startswith(("vit_", "deit")):
            raise ValueError(
                f"PlaceConfig.vision_config.architecture must be a timm ViT (patch tokens are needed), "
                f"got {self.vision_config.architecture!r}."
            )
        if self.text_config.hidden_size % self.text_config.num_attention_heads:
            raise ValueError("PlaceConfig.text_config.hidden_size must be divisible by num_attention_heads.")


__all__ = ["PlaceConfig"]
