"""Configuration of PLACE: the single source of truth for the towers, every objective and every head.

`PlaceConfig` carries a timm vision sub-config (`TimmWrapperConfig`), a BERT-family text sub-config, the
fields of the three objectives (ITA, PCMA with the VPOE, correlation exploration; docs/METHOD.md) and the
options of the downstream heads. Types are checked by `huggingface_hub`'s `@strict` dataclass validation (as
every transformers v5 config); the invariants between fields live in one method, `validate_place`. Presets
`tiny` and `base` come from `PlaceConfig.from_preset(name)`.
"""


import copy
import math
import warnings
from typing import Any, Literal

from huggingface_hub.dataclasses import strict
from transformers import BertConfig, PreTrainedConfig, TimmWrapperConfig
from transformers.configuration_utils import SubConfigSpec

# Presets: the tower shapes, and the objective settings that differ from the class defaults at that scale.
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
        "text_pooling": "mean",  # a from-scratch text tower (docs/METHOD.md, section 13)
        # docs/RESULTS.md, section 8: queries that can look at a place ground 2x better at 1,200 CPU steps.
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

#: Options removed after docs/RESULTS.md (sections 6-11) found them no better; the git tag
#: `results-negative-options` reproduces those sections. A saved folder carrying one still loads, with a warning.
RETIRED_OPTIONS: dict[str, Any] = {
    "observation_tokens": "queries",
    "vpoe_attention": "softmax",
    "pcma_diversity": 0.0,
    "vpoe_input_block": None,
}

#: The downstream heads' options (`heads_place.py`): declared fields of `PlaceConfig`, overridable as
#: `PlaceFor….from_pretrained(folder, name=value)` and saved with the head.
HEAD_OPTION_NAMES: tuple[str, ...] = (
    "freeze_encoder", "classifier_dropout", "segmentation_levels", "segmentation_decoder_dim",
    "segmentation_pixel_skip", "segmentation_dice_weight", "detection_hidden_dim", "detection_levels",
    "detection_pixel_skip", "detection_trunk_layers", "detection_focal_alpha", "detection_focal_gamma",
    "detection_class_weight", "detection_l1_weight", "detection_giou_weight", "decoder_hidden_size",
    "decoder_layers", "decoder_num_heads", "decoder_max_length", "report_bos_token_id", "report_eos_token_id",
    "report_pad_token_id",
)


@strict(accept_kwargs=True)
class PlaceConfig(PreTrainedConfig):
    r"""
    Configuration of a [`PlaceModel`] and of its downstream heads (docs/METHOD.md gives every equation).

    Towers:
        vision_config (`dict` or `TimmWrapperConfig`): the timm ViT (`architecture` + `model_args`, e.g. `img_size`).
        text_config (`dict` or `BertConfig`): the BERT-family text tower.
        text_pooling (`"cls"` or `"mean"`): the report's global token: CLS, or the mean over real tokens.
    Alignment (ITA, PCMA):
        projection_dim (`int`, 128): d, the size of every aligned embedding (global, patch, V-POR, T-POR).
        logit_scale_init (`float`, 1/0.07): initial ITA logit scale; logit_scale_max (`float`, 100): its clamp.
        num_queries (`int`, 16): M, the VPOE's learnable pathology queries.
        vpoe_layers (`int`, 2): depth of the VPOE decoder; vpoe_num_heads (`int`, 3): its attention heads.
        vpoe_key_positions (`"none"` or `"sincos"`): a fixed 2-D sine-cosine position code on the VPOE's keys.
        vpoe_query_init_std (`float`, 1.0): std of the VPOE queries at initialisation (1.0 starts them distinct).
        max_sentences (`int`, 16): K, sentences kept per report.
        tau_match (`float`, 0.1): temperature of the soft sentence-to-observation matching.
        tau_pcma (`float`, 0.1): temperature of the PCMA InfoNCE.
        pcma_matching (`"soft"` or `"hard"`): a softmax over observations at `tau_match`, or the best one only.
        pcma_space (`"separate"`, `"joint"` or `"local"`): V-PORs and T-PORs under their own projections (the
            paper), or in the global embeddings' space: a V-POR pools the patches' joint-space embeddings under its
            map (`"joint"`: the image projection of the final-norm tokens; `"local"`: a projection of the purely
            local patch embeddings) and a T-POR uses the report projection (docs/METHOD.md, section 15).
        pcma_patch_weight (`float`, 0): weight of a second PCMA term in which every joint-space patch is an
            observation, so a sentence must match the patches where its finding is (needs a joint space).
    Correlation exploration (CE):
        ce_mode (`"dense"` or `"masked"`): on the main forward's patches, or on a second, partly masked forward.
        mask_ratio (`float`, 0.5): fraction of patches masked in `"masked"` mode.
        ce_dim (`int`, 64): d_c, the width of the correlation embedding.
        fusion_num_heads (`int`, 3): heads of the patch-to-report fusion block.
    Loss weights:
        lambda_ita, lambda_pcma, lambda_ce (`float`, 1.0): 0 switches an objective off (not ITA and PCMA both).
        initializer_range (`float`, 0.02): std of the linear layers at initialisation.
    Heads (read by `heads_place.py` only):
        freeze_encoder (`bool`, False): freeze the pretrained encoder (linear probe / frozen backbone). Like every
            transformers `…ForImageClassification`, a head fine-tunes its encoder unless asked; the evaluation
            protocols that freeze it pass `freeze_encoder=True`.
        classifier_dropout (`float`, 0.0): dropout before the classification layer.
        segmentation_levels (`int`, 4): evenly spaced ViT blocks feeding the segmentation decoder.
        segmentation_decoder_dim (`int`, 64): width of the segmentation decoder.
        segmentation_pixel_skip (`bool`, True): a convolutional skip from the image at the output resolution.
        segmentation_dice_weight (`float`, 1.0): weight of the Dice term beside cross-entropy.
        detection_hidden_dim (`int`, 128): width of the box head.
        detection_levels (`int`, 4): ViT blocks fused by the box head (1: the final-norm patch tokens).
        detection_pixel_skip (`bool`, False): the image skip at the patch grid.
        detection_trunk_layers (`int`, 2): 3x3 convolutions after the level fusion (docs/RESULTS.md, section 10).
        detection_focal_alpha, detection_focal_gamma (`float`, 0.25, 2.0): the focal classification loss.
        detection_class_weight, detection_l1_weight, detection_giou_weight (`float`, 1, 5, 2): box loss weights.
        decoder_hidden_size (`int`, 256), decoder_layers (`int`, 3), decoder_num_heads (`int`, 4),
        decoder_max_length (`int`, 128): the report-generation decoder.
        report_bos_token_id, report_eos_token_id, report_pad_token_id (`int`, 2, 3, 0): its special tokens
            ([CLS], [SEP], [PAD] of the BERT vocabulary).
    """

    model_type = "place"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=TimmWrapperConfig, init_kwargs=_DEFAULT_VISION),
        "text_config": SubConfigSpec(config_class=BertConfig, init_kwargs=_DEFAULT_TEXT),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    text_pooling: Literal["cls", "mean"] = "cls"
    projection_dim: int = 128
    logit_scale_init: float = 1 / 0.07
    logit_scale_max: float = 100.0
    num_queries: int = 16
    vpoe_layers: int = 2
    vpoe_num_heads: int = 3
    vpoe_key_positions: Literal["none", "sincos"] = "none"
    vpoe_query_init_std: float = 1.0
    max_sentences: int = 16
    tau_match: float = 0.1
    tau_pcma: float = 0.1
    pcma_matching: Literal["soft", "hard"] = "soft"
    pcma_space: Literal["separate", "joint", "local"] = "separate"
    pcma_patch_weight: float | int = 0.0
    ce_mode: Literal["dense", "masked"] = "dense"
    mask_ratio: float = 0.5
    ce_dim: int = 64
    fusion_num_heads: int = 3
    lambda_ita: float | int = 1.0
    lambda_pcma: float | int = 1.0
    lambda_ce: float | int = 1.0
    initializer_range: float = 0.02
    # -- heads ------------------------------------------------------------------------------------------
    freeze_encoder: bool = False
    classifier_dropout: float | int = 0.0
    segmentation_levels: int = 4
    segmentation_decoder_dim: int = 64
    segmentation_pixel_skip: bool = True
    segmentation_dice_weight: float | int = 1.0
    detection_hidden_dim: int = 128
    detection_levels: int = 4
    detection_pixel_skip: bool = False
    detection_trunk_layers: int = 2
    detection_focal_alpha: float = 0.25
    detection_focal_gamma: float | int = 2.0
    detection_class_weight: float | int = 1.0
    detection_l1_weight: float | int = 5.0
    detection_giou_weight: float | int = 2.0
    decoder_hidden_size: int = 256
    decoder_layers: int = 3
    decoder_num_heads: int = 4
    decoder_max_length: int = 128
    report_bos_token_id: int = 2
    report_eos_token_id: int = 3
    report_pad_token_id: int = 0

    def __post_init__(self, **kwargs: Any) -> None:
        _drop_retired_options(kwargs)
        # A partial dict sub-config keeps the defaults it does not override.
        if isinstance(self.vision_config, dict):
            self.vision_config = {**copy.deepcopy(_DEFAULT_VISION), **self.vision_config}
        if isinstance(self.text_config, dict):
            self.text_config = {**_DEFAULT_TEXT, **self.text_config}
        super().__post_init__(**kwargs)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "PlaceConfig":
        """Build the `tiny` (CPU tests, quick runs) or `base` (ViT-B/16 + BERT-base) configuration."""
        if name not in _PRESETS:
            raise ValueError(f"Unknown PLACE preset {name!r}; choose one of {sorted(_PRESETS)}.")
        return cls(**{**copy.deepcopy(_PRESETS[name]), **overrides})

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> Any:
        """A saved configuration; retired options are dropped with a warning (`RETIRED_OPTIONS`)."""
        config_dict = dict(config_dict)
        _drop_retired_options(config_dict)
        return super().from_dict(config_dict, **kwargs)

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

    @property
    def head_options(self) -> dict[str, Any]:
        """The heads' options and their values in this configuration."""
        return {name: getattr(self, name) for name in HEAD_OPTION_NAMES}

    def validate_place(self) -> None:
        """The invariants `@strict`'s type checks cannot express; raises naming the first field that cannot work."""
        _require(self, _POSITIVE, lambda v: v >= 1, "a positive integer")
        _require(self, _POSITIVE_REALS, lambda v: math.isfinite(v) and v > 0, "a finite positive number")
        _require(self, _WEIGHTS, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
        _require(self, ("detection_trunk_layers",), lambda v: v >= 0, "an integer >= 0")
        _require(self, ("mask_ratio",), lambda v: 0.0 < v < 1.0, "a number in (0, 1)")
        if self.logit_scale_init > self.logit_scale_max:
            raise ValueError(f"PlaceConfig.logit_scale_init ({self.logit_scale_init}) exceeds logit_scale_max "
                             f"({self.logit_scale_max}).")
        if self.pcma_patch_weight > 0 and self.pcma_space == "separate":
            raise ValueError("PlaceConfig.pcma_patch_weight > 0 needs pcma_space 'joint' or 'local' (patches in the "
                             "sentences' space).")
        if self.lambda_ita == 0 and self.lambda_pcma == 0:
            # CE alone learns no image-report alignment and leaves the projection heads untrained.
            raise ValueError("PlaceConfig.lambda_ita and lambda_pcma are both 0: at least one alignment loss is needed.")
        self._validate_towers()

    def _validate_towers(self) -> None:
        if not self.vision_config.architecture.startswith(("vit_", "deit")):
            raise ValueError(f"PlaceConfig.vision_config.architecture must be a timm ViT (patch tokens are needed), "
                             f"got {self.vision_config.architecture!r}.")
        if self.text_config.hidden_size % self.text_config.num_attention_heads:
            raise ValueError("PlaceConfig.text_config.hidden_size must be divisible by num_attention_heads.")


_POSITIVE = ("projection_dim", "num_queries", "vpoe_layers", "vpoe_num_heads", "max_sentences", "ce_dim",
             "fusion_num_heads", "segmentation_levels", "segmentation_decoder_dim", "detection_hidden_dim",
             "detection_levels", "decoder_hidden_size", "decoder_layers", "decoder_num_heads", "decoder_max_length")
_POSITIVE_REALS = ("tau_match", "tau_pcma", "logit_scale_init", "logit_scale_max", "initializer_range",
                   "vpoe_query_init_std")
_WEIGHTS = ("lambda_ita", "lambda_pcma", "lambda_ce", "pcma_patch_weight", "classifier_dropout", "segmentation_dice_weight",
            "detection_focal_alpha", "detection_focal_gamma", "detection_class_weight", "detection_l1_weight",
            "detection_giou_weight")


def _require(config: PlaceConfig, names: tuple[str, ...], holds: Any, what: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not holds(value):
            raise ValueError(f"PlaceConfig.{name} must be {what}, got {value!r}.")


def _drop_retired_options(kwargs: dict[str, Any]) -> None:
    """Remove retired options from constructor keywords or a saved configuration (in place), with a warning that
    says when the model was trained with a value that changed it."""
    for name, neutral in RETIRED_OPTIONS.items():
        if name in kwargs:
            value = kwargs.pop(name)
            changed = "" if value == neutral else f" The model was trained with {name}={value!r}; it now runs as {neutral!r}."
            warnings.warn(f"PlaceConfig: ignoring retired option {name!r} (git tag results-negative-options "
                          f"reproduces it).{changed}", stacklevel=3)
    if kwargs.get("vpoe_key_positions") == "sincos_values":  # a saved folder's value (from_dict)
        kwargs["vpoe_key_positions"] = "sincos"
        warnings.warn("PlaceConfig: vpoe_key_positions='sincos_values' is retired; loading as 'sincos' "
                      "(git tag results-negative-options reproduces it).", stacklevel=3)


__all__ = ["HEAD_OPTION_NAMES", "PlaceConfig", "RETIRED_OPTIONS"]
