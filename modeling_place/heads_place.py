"""Downstream heads of PLACE (docs/EVALUATION.md has their protocols), one `AutoModelFor…` class per task.

Every head holds the pretrained image encoder under the attribute names of [`PlaceModel`] (`vision_model`,
and `observation_extractor` for report generation), so `from_pretrained` on a pretraining folder loads the
towers directly (the text tower and the pretraining heads are reported as unused keys) and a saved head
round-trips unchanged. A head fine-tunes its encoder by default, like every transformers `…For<Task>`; with
`config.freeze_encoder=True` (the linear-probe / frozen-backbone protocols) the encoder's parameters are frozen
once, at construction, and it stays in eval mode whatever `.train()` is called with. Parameters added later (PEFT
LoRA adapters) keep their `requires_grad`, and the encoder runs with gradients whenever any of its parameters
needs them.

Head options are declared fields of `PlaceConfig` (defaults in `HEAD_DEFAULTS`); a saved head records them all.

| class | Auto class | output |
|---|---|---|
| `PlaceForImageClassification` | `AutoModelForImageClassification` | `ImageClassifierOutput` |
| `PlaceForSemanticSegmentation` | `AutoModelForSemanticSegmentation` | `SemanticSegmenterOutput`, logits at H/4 |
| `PlaceForObjectDetection` | `AutoModelForObjectDetection` | `PlaceObjectDetectionOutput` (DETR-style) |
| `PlaceForReportGeneration` | `AutoModelForImageTextToText` | `CausalLMOutputWithCrossAttentions`; `.generate()` |
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import BertConfig, BertLMHeadModel, GenerationConfig, GenerationMixin, TimmWrapperModel
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers import initialization as init
from transformers.loss.loss_utils import ForCausalLMLoss
from transformers.modeling_outputs import (
    CausalLMOutputWithCrossAttentions, ImageClassifierOutput, SemanticSegmenterOutput,
)
from transformers.utils import ModelOutput, logging
from transformers.utils.deprecation import deprecate_kwarg

from .configuration_place import HEAD_OPTION_NAMES, PlaceConfig
from .modeling_place import (
    PlaceMLP, PlaceObservationExtractor, PlacePreTrainedModel, joint_space_patches, vit_forward,
)

logger = logging.get_logger(__name__)

#: The heads' options and their defaults: declared fields of `PlaceConfig` (configuration_place.py).
HEAD_DEFAULTS: dict[str, Any] = {name: PlaceConfig.__dataclass_fields__[name].default for name in HEAD_OPTION_NAMES}


def fill_head_defaults(config: PlaceConfig, **head_options: Any) -> PlaceConfig:
    """Set `head_options` on `config` (in place); a name that is not a head option is refused."""
    unknown = sorted(set(head_options) - set(HEAD_OPTION_NAMES))
    if unknown:
        raise TypeError(f"Unknown PLACE head option(s) {unknown}; valid options: {sorted(HEAD_OPTION_NAMES)}")
    for name, value in head_options.items():
        setattr(config, name, value)
    config.validate()
    return config


def evenly_spaced_blocks(depth: int, count: int) -> list[int]:
    """Indices of `count` ViT blocks spread over `depth`, ending with the last (12, 4 -> [2, 5, 8, 11])."""
    return [max(0, round((level + 1) * depth / count) - 1) for level in range(count)]


# ----------------------------------------------------------------------------------------------------------
# Shared base: the pretrained encoder, frozen or not
# ----------------------------------------------------------------------------------------------------------
class PlaceHeadPreTrainedModel(PlacePreTrainedModel):
    """A head on PLACE's image encoder: builds `vision_model` (+ optionally the VPOE) and handles freezing."""

    input_modalities = ("image",)
    # A head starts from a pretrained PLACE folder whose text side and pretraining heads it does not use: drop
    # them quietly instead of listing ~80 "unexpected" keys. A key of any other model is still reported.
    _keys_to_ignore_on_load_unexpected = [
        r"^text_model\.", r"^(text|vision|sentence|local)_projection\.", r"^correlation_head\.", r"^logit_scale$",
    ]

    def __init__(self, config: PlaceConfig, with_observations: bool = False, **head_options: Any) -> None:
        # `from_pretrained(folder, decoder_layers=2)` passes options the saved config lacks as model kwargs
        super().__init__(fill_head_defaults(config, **head_options))
        if not with_observations:  # read by `post_init`, which the subclass calls at the end of its __init__
            self._keys_to_ignore_on_load_unexpected = [*self._keys_to_ignore_on_load_unexpected, r"^observation_extractor\."]
        self.vision_model = TimmWrapperModel(config.vision_config)
        self.observation_extractor = (
            PlaceObservationExtractor(config, self.vision_width) if with_observations else None
        )
        # A joint-space VPOE pools the patches' joint-space embeddings: keep their projection beside the VPOE.
        space = config.pcma_space if with_observations else "separate"
        self.vision_projection = self._projection() if space == "joint" else None
        self.local_projection = self._projection() if space == "local" else None

    @property
    def vit(self) -> nn.Module:
        return self.vision_model.timm_model

    @property
    def vision_width(self) -> int:
        return self.vision_model.timm_model.embed_dim

    @property
    def grid_size(self) -> int:
        return self.config.image_size // self.config.patch_size

    def encoder_modules(self) -> list[nn.Module]:
        """The pretrained modules that `freeze_encoder` freezes."""
        modules = (self.vision_model, self.observation_extractor, self.vision_projection, self.local_projection)
        return [m for m in modules if m is not None]

    def _projection(self) -> PlaceMLP:
        return PlaceMLP(self.vision_width, self.vision_width, self.config.projection_dim)

    def post_init(self) -> None:
        super().post_init()
        self._freeze_encoder()
        self._keep_frozen_encoder_in_eval()

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        """`PreTrainedModel.from_pretrained`, then the freeze again: loading replaces the parameters it marked."""
        loaded = super().from_pretrained(*args, **kwargs)
        (loaded[0] if isinstance(loaded, tuple) else loaded)._freeze_encoder()  # output_loading_info=True: a tuple
        return loaded

    def _freeze_encoder(self) -> None:
        """With `freeze_encoder`, stop the encoder's own parameters; adapters added afterwards (PEFT LoRA) keep theirs."""
        if self.config.freeze_encoder:
            for module in self.encoder_modules():
                module.requires_grad_(False)

    def encoder_is_trained(self) -> bool:
        """Whether any encoder parameter (a LoRA adapter on a frozen encoder included) receives gradients."""
        return any(p.requires_grad for module in self.encoder_modules() for p in module.parameters())

    def _keep_frozen_encoder_in_eval(self) -> None:
        if self.config.freeze_encoder:
            for module in self.encoder_modules():
                module.eval()

    def train(self, mode: bool = True) -> "PlaceHeadPreTrainedModel":
        """Like `nn.Module.train`, but a frozen encoder stays in eval mode (no dropout, fixed statistics).

        The first call in training mode logs how many parameters will train (adapters included)."""
        super().train(mode)
        self._keep_frozen_encoder_in_eval()
        if mode and not getattr(self, "_logged_parameters", False):
            self._logged_parameters = True
            trainable, total = self.num_parameters(only_trainable=True), self.num_parameters()
            logger.info(f"{type(self).__name__}: {trainable:,} of {total:,} parameters trainable "
                        f"({'frozen' if self.config.freeze_encoder else 'fine-tuned'} encoder)")
        return self

    def encoder_context(self) -> contextlib.AbstractContextManager:
        """`torch.no_grad()` around an encoder nothing in which is trained (no activations kept)."""
        return contextlib.nullcontext() if self.encoder_is_trained() else torch.no_grad()

    def encode(self, pixel_values: Tensor) -> Tensor:
        """Final-norm ViT tokens `(B, prefix + N, D_v)`."""
        with self.encoder_context():
            return self.vit.forward_features(pixel_values.to(self.vit.patch_embed.proj.weight.dtype))

    def multi_level_features(self, pixel_values: Tensor) -> list[Tensor]:
        """Patch tokens `(B, N, D_v)` after each block of `self.level_indices` (no final norm)."""
        unique = sorted(set(self.level_indices))
        with self.encoder_context():
            pixel_values = pixel_values.to(self.vit.patch_embed.proj.weight.dtype)
            taken = self.vit.forward_intermediates(
                pixel_values, indices=unique, output_fmt="NLC", intermediates_only=True, stop_early=True
            )
        return [taken[unique.index(index)] for index in self.level_indices]

    def observations(self, pixel_values: Tensor) -> tuple[Tensor, Tensor]:
        """Final-norm patch tokens `(B, N, D_v)` and the V-PORs `(B, M, d)` of one ViT pass."""
        with self.encoder_context():
            tokens, embeddings = vit_forward(self.vit, pixel_values)
            patches = self.split_tokens(tokens)[1]
            return patches, self.observation_extractor(patches, joint_space_patches(self, patches, embeddings))[0]

    def split_tokens(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """`(CLS (B, D_v), patches (B, N, D_v))` of a token sequence."""
        return tokens[:, 0], tokens[:, self.vit.num_prefix_tokens :]


# ----------------------------------------------------------------------------------------------------------
# Classification
# ----------------------------------------------------------------------------------------------------------
class PlaceForImageClassification(PlaceHeadPreTrainedModel):
    """Linear classifier on the final-norm CLS token: a linear probe (frozen encoder) or a full fine-tune.

    `config.problem_type` selects the loss: `"multi_label_classification"` (BCE, labels `(B, num_labels)` of
    0/1), `"single_label_classification"` (cross-entropy, labels `(B,)`), or `"regression"`.
    """

    def __init__(self, config: PlaceConfig, **head_options: Any) -> None:
        super().__init__(config, **head_options)
        self.num_labels = config.num_labels
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(self.vision_width, config.num_labels)
        self.post_init()

    def forward(
        self, pixel_values: Tensor, labels: Tensor | None = None, output_hidden_states: bool = False, **kwargs: Any
    ) -> ImageClassifierOutput:
        tokens = self.encode(pixel_values)
        logits = self.classifier(self.dropout(self.split_tokens(tokens)[0]))
        loss = None
        if labels is not None:
            if self.config.problem_type == "multi_label_classification":
                labels = labels.to(logits.dtype)
            loss = self.loss_function(labels, logits, self.config)
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=(tokens,) if output_hidden_states else None)


# ----------------------------------------------------------------------------------------------------------
# Semantic segmentation
# ----------------------------------------------------------------------------------------------------------
def _groups(channels: int) -> int:
    """Largest group count ≤ 8 that divides `channels` (GroupNorm)."""
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class PlaceConvNormAct(nn.Sequential):
    """3×3 convolution (optionally strided), GroupNorm, GELU."""

    def __init__(self, in_dim: int, out_dim: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_dim, out_dim, kernel_size=3, stride=stride, padding=1), nn.GroupNorm(_groups(out_dim), out_dim),
            nn.GELU(),
        )


class PlaceUpsampleBlock(nn.Module):
    """×2 transposed convolution, then a 3×3 convolution; GroupNorm + GELU after each."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_dim, out_dim, kernel_size=2, stride=2)
        self.up_norm = nn.GroupNorm(_groups(out_dim), out_dim)
        self.conv = PlaceConvNormAct(out_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.gelu(self.up_norm(self.up(x))))


class PlacePixelSkip(nn.Module):
    """UNETR-style skip: `halvings` stride-2 convolutions on the image give detail maps (2 → 1/4 resolution).

    A ViT's tokens summarise 16×16 pixels; without this path a frozen *random* ViT wins dense tasks by relaying
    raw pixel detail (docs/RESULTS.md). With it, both encoders get the same pixels and the comparison
    measures what the encoder adds.
    """

    def __init__(self, dim: int, halvings: int = 2) -> None:
        super().__init__()
        layers = [PlaceConvNormAct(3 if index == 0 else dim, dim, stride=2) for index in range(halvings)]
        self.stem = nn.Sequential(*layers)

    def forward(self, pixel_values: Tensor, size: tuple[int, int]) -> Tensor:
        detail = self.stem(pixel_values)
        return detail if detail.shape[-2:] == size else F.interpolate(detail, size=size, mode="bilinear")


class PlaceLevelFusion(nn.Module):
    """SETR-MLA fusion: each of L ViT levels is normalised and projected to `dim`, the maps are concatenated and
    fused by a 3×3 convolution on the patch grid → `(B, dim, grid, grid)`."""

    def __init__(self, vision_dim: int, levels: int, dim: int) -> None:
        super().__init__()
        self.level_norms = nn.ModuleList(nn.LayerNorm(vision_dim) for _ in range(levels))
        self.level_projections = nn.ModuleList(nn.Linear(vision_dim, dim) for _ in range(levels))
        self.fuse = PlaceConvNormAct(levels * dim, dim)

    def forward(self, levels: list[Tensor], grid: int) -> Tensor:
        maps = [
            proj(norm(tokens)).transpose(1, 2).unflatten(-1, (grid, grid))
            for tokens, norm, proj in zip(levels, self.level_norms, self.level_projections)
        ]
        return self.fuse(torch.cat(maps, dim=1))


class PlaceSegmentationDecoder(nn.Module):
    """Multi-level decoder (SETR-MLA fusion + PUP upsampling): L ViT levels → logits at 4× the patch grid.

    The fused levels pass two ×2 upsampling blocks to 1/4 of the input. With `pixel_skip`, a convolutional
    stem's 1/4-resolution image features join them before the classifier.
    """

    def __init__(self, vision_dim: int, levels: int, dim: int, num_labels: int, pixel_skip: bool = False) -> None:
        super().__init__()
        self.fusion = PlaceLevelFusion(vision_dim, levels, dim)
        self.upsample = nn.Sequential(PlaceUpsampleBlock(dim, dim), PlaceUpsampleBlock(dim, dim))
        self.pixel_skip = PlacePixelSkip(dim // 2) if pixel_skip else None
        self.skip_fuse = PlaceConvNormAct(dim + dim // 2, dim) if pixel_skip else None
        self.classifier = nn.Conv2d(dim, num_labels, kernel_size=1)

    def forward(self, levels: list[Tensor], grid: int, pixel_values: Tensor | None = None) -> Tensor:
        """`levels`: L tensors `(B, N, D_v)` of patch tokens → logits `(B, num_labels, 4·grid, 4·grid)`."""
        x = self.upsample(self.fusion(levels, grid))
        if self.pixel_skip is not None:
            if pixel_values is None:
                raise ValueError("This segmentation decoder has a pixel skip: pass pixel_values.")
            detail = self.pixel_skip(pixel_values.to(x.dtype), x.shape[-2:])
            x = self.skip_fuse(torch.cat([x, detail], dim=1))
        return self.classifier(x)


def dice_loss(probabilities: Tensor, targets: Tensor, valid: Tensor, eps: float = 1.0) -> Tensor:
    """Soft Dice loss over the batch, averaged over channels: `(B, C, H, W)` probabilities and 0/1 targets."""
    probabilities, targets = probabilities * valid, targets * valid
    intersection = (probabilities * targets).sum(dim=(0, 2, 3))
    total = probabilities.sum(dim=(0, 2, 3)) + targets.sum(dim=(0, 2, 3))
    return (1 - (2 * intersection + eps) / (total + eps)).mean()


class PlaceForSemanticSegmentation(PlaceHeadPreTrainedModel):
    """Segmentation decoder on `segmentation_levels` evenly spaced blocks of the (frozen) ViT.

    `logits` are `(B, num_labels, H/4, W/4)` (4× the patch grid for patch 16); the loss upsamples them to the
    label size. `num_labels == 1`: one binary mask (sigmoid, BCE + Dice; labels `(B, H, W)` of 0/1).
    `num_labels >= 2`: class 0 is background (softmax, cross-entropy + Dice on the foreground classes; labels
    `(B, H, W)` of class indices, 255 = ignore). Use 2 labels for a binary task in a pipeline.
    """

    ignore_index = 255

    def __init__(self, config: PlaceConfig, **head_options: Any) -> None:
        super().__init__(config, **head_options)
        self.level_indices = evenly_spaced_blocks(len(self.vit.blocks), config.segmentation_levels)
        self.decoder = PlaceSegmentationDecoder(
            self.vision_width, config.segmentation_levels, config.segmentation_decoder_dim, config.num_labels,
            pixel_skip=config.segmentation_pixel_skip,
        )
        self.post_init()

    def forward(
        self, pixel_values: Tensor, labels: Tensor | None = None, output_hidden_states: bool = False, **kwargs: Any
    ) -> SemanticSegmenterOutput:
        levels = self.multi_level_features(pixel_values)
        logits = self.decoder(levels, self.grid_size, pixel_values)
        loss = None if labels is None else self.segmentation_loss(logits, labels)
        return SemanticSegmenterOutput(loss=loss, logits=logits, hidden_states=tuple(levels) if output_hidden_states else None)

    def segmentation_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """BCE (one label) or cross-entropy (several) + `segmentation_dice_weight` × soft Dice, at label size."""
        if labels.dim() != 3:
            raise ValueError(f"labels must be (batch, height, width) class maps, got shape {tuple(labels.shape)}")
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False).float()
        valid = (labels != self.ignore_index).unsqueeze(1).float()
        labels = labels.long().where(labels != self.ignore_index, torch.zeros_like(labels.long()))
        if self.config.num_labels == 1:
            targets = labels.unsqueeze(1).float()
            overlap = F.binary_cross_entropy_with_logits(logits, targets, weight=valid)
            probabilities = logits.sigmoid()
        else:
            overlap = F.cross_entropy(logits, labels.masked_fill(valid[:, 0] == 0, -100), ignore_index=-100)
            probabilities = logits.softmax(dim=1)[:, 1:]
            targets = F.one_hot(labels, self.config.num_labels).permute(0, 3, 1, 2)[:, 1:].float()
        return overlap + self.config.segmentation_dice_weight * dice_loss(probabilities, targets, valid)


# ----------------------------------------------------------------------------------------------------------
# Object detection
# ----------------------------------------------------------------------------------------------------------
@dataclass
class PlaceObjectDetectionOutput(ModelOutput):
    """DETR-style detection output: one prediction per patch.

    `logits (B, N, num_labels)` are per-class sigmoid logits; `pred_boxes (B, N, 4)` are normalised
    `(cx, cy, w, h)` in the model input's coordinates; `loss_dict` holds the weighted-sum's components.
    """

    loss: Tensor | None = None
    loss_dict: dict[str, Tensor] | None = None
    logits: Tensor | None = None
    pred_boxes: Tensor | None = None
    last_hidden_state: Tensor | None = None


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def patch_centres(grid: int, device: torch.device | None = None) -> Tensor:
    """Normalised `(x, y)` centres of the `grid × grid` patches in row-major order, `(N, 2)`."""
    steps = (torch.arange(grid, device=device, dtype=torch.float32) + 0.5) / grid
    y, x = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], dim=-1)


def assign_boxes_to_patches(boxes_xyxy: Tensor, grid: int) -> Tensor:
    """FCOS-style assignment: index of the box each patch predicts, −1 for background, `(N,)`.

    A patch is a candidate for every box that contains its centre, and for the box whose centre falls in
    it (so tiny boxes still get one patch); it takes the smallest candidate box.
    """
    centres = patch_centres(grid, boxes_xyxy.device)
    if boxes_xyxy.shape[0] == 0:
        return torch.full((centres.shape[0],), -1, dtype=torch.long, device=boxes_xyxy.device)
    x, y = centres[:, :1], centres[:, 1:]
    inside = (x >= boxes_xyxy[:, 0]) & (x < boxes_xyxy[:, 2]) & (y >= boxes_xyxy[:, 1]) & (y < boxes_xyxy[:, 3])
    box_centres = box_xyxy_to_cxcywh(boxes_xyxy)[:, :2]
    centre_cells = (box_centres.clamp(0, 1 - 1e-6) * grid).floor().long()
    centre_patch = centre_cells[:, 1] * grid + centre_cells[:, 0]
    inside[centre_patch, torch.arange(boxes_xyxy.shape[0], device=boxes_xyxy.device)] = True
    areas = (boxes_xyxy[:, 2] - boxes_xyxy[:, 0]) * (boxes_xyxy[:, 3] - boxes_xyxy[:, 1])
    candidate_areas = torch.where(inside, areas.expand_as(inside), torch.full_like(inside, math.inf, dtype=areas.dtype))
    smallest_area, smallest = candidate_areas.min(dim=1)
    return torch.where(torch.isfinite(smallest_area), smallest, torch.full_like(smallest, -1))


class PlaceClassLogits(nn.Conv2d):
    """1×1 convolution to per-class logits; its own type so `_init_weights` can give it the focal prior."""


class PlaceDetectionHead(nn.Module):
    """`trunk_layers` 3×3 convolutions on the patch grid, then per-patch class logits and FCOS `(l, t, r, b)`
    distances."""

    def __init__(
        self, vision_dim: int, hidden_dim: int, num_labels: int, levels: int = 1, pixel_halvings: int = 0,
        trunk_layers: int = 2,
    ) -> None:
        super().__init__()
        if trunk_layers < 0:
            raise ValueError(f"detection_trunk_layers must be 0 or more, got {trunk_layers}")
        # one level: the final-norm tokens; several: the blocks' tokens fused as in segmentation
        self.norm = nn.LayerNorm(vision_dim) if levels == 1 else None
        self.fusion = PlaceLevelFusion(vision_dim, levels, hidden_dim) if levels > 1 else None
        # optional image detail at the patch grid (pixel_halvings = log2(patch size)); see PlacePixelSkip
        self.pixel_skip = PlacePixelSkip(hidden_dim // 2, pixel_halvings) if pixel_halvings else None
        in_dim = (vision_dim if levels == 1 else hidden_dim) + (hidden_dim // 2 if pixel_halvings else 0)
        self.trunk = nn.Sequential(
            *(PlaceConvNormAct(in_dim if layer == 0 else hidden_dim, hidden_dim) for layer in range(trunk_layers))
        )
        out_dim = hidden_dim if trunk_layers else in_dim
        self.class_logits = PlaceClassLogits(out_dim, num_labels, 1)
        self.box_distances = nn.Conv2d(out_dim, 4, 1)

    def forward(
        self, levels: list[Tensor], grid: int, pixel_values: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Patch tokens `(B, N, D_v)` of each level → logits `(B, N, C)` and normalised `(cx, cy, w, h)` boxes."""
        if self.fusion is not None:
            x = self.fusion(levels, grid)
        else:
            x = self.norm(levels[0]).transpose(1, 2).unflatten(-1, (grid, grid))
        if self.pixel_skip is not None:
            if pixel_values is None:
                raise ValueError("This detection head has a pixel skip: pass pixel_values.")
            x = torch.cat([x, self.pixel_skip(pixel_values.to(x.dtype), (grid, grid))], dim=1)
        x = self.trunk(x)
        logits = self.class_logits(x).flatten(2).transpose(1, 2)
        # distances in units of the patch size; softplus keeps them positive and smooth near zero
        ltrb = F.softplus(self.box_distances(x).flatten(2).transpose(1, 2).float()) / grid
        centres = patch_centres(grid, x.device)
        xyxy = torch.cat([centres - ltrb[..., :2], centres + ltrb[..., 2:]], dim=-1)
        return logits, box_xyxy_to_cxcywh(xyxy)


class PlaceForObjectDetection(PlaceHeadPreTrainedModel):
    """Dense box head on the final ViT patch grid with DETR-style outputs (`logits`, `pred_boxes`).

    Training: each ground-truth box is assigned to the patches whose centre lies inside it
    (`assign_boxes_to_patches`); loss = sigmoid focal loss over all patches (normalised by the positives)
    + L1 and GIoU on the positive patches' boxes. Labels follow DETR: a list (one per image) of dicts with
    `class_labels (G,)` and `boxes (G, 4)` normalised `(cx, cy, w, h)`. Post-process with
    `PlaceImageProcessor.post_process_object_detection` (score threshold + per-class NMS).
    """

    def __init__(self, config: PlaceConfig, **head_options: Any) -> None:
        super().__init__(config, **head_options)
        halvings = round(math.log2(config.patch_size)) if config.detection_pixel_skip else 0
        self.level_indices = evenly_spaced_blocks(len(self.vit.blocks), config.detection_levels)
        self.detection_head = PlaceDetectionHead(
            self.vision_width, config.detection_hidden_dim, config.num_labels, config.detection_levels, halvings,
            config.detection_trunk_layers,
        )
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, PlaceClassLogits):
            # focal-loss prior: every patch starts as background with probability 0.99 (RetinaNet)
            init.constant_(module.bias, -math.log(99.0))

    def forward(
        self, pixel_values: Tensor, labels: list[dict[str, Tensor]] | None = None, **kwargs: Any
    ) -> PlaceObjectDetectionOutput:
        if self.config.detection_levels == 1:
            levels = [self.split_tokens(self.encode(pixel_values))[1]]
        else:
            levels = self.multi_level_features(pixel_values)
        patches = levels[-1]
        logits, boxes = self.detection_head(levels, self.grid_size, pixel_values)
        output = PlaceObjectDetectionOutput(logits=logits, pred_boxes=boxes, last_hidden_state=patches)
        if labels is not None:
            output.loss, output.loss_dict = self.detection_loss(logits, boxes, labels)
        return output

    def detection_targets(self, labels: list[dict[str, Tensor]], batch: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Per-patch class targets `(B, N)` (−1 = background) and `(cx, cy, w, h)` box targets `(B, N, 4)`."""
        if len(labels) != batch:
            raise ValueError(f"labels: expected one dict per image ({batch}), got {len(labels)}")
        classes, boxes = [], []
        for target in labels:
            gt_boxes = target["boxes"].to(device=device, dtype=torch.float32).reshape(-1, 4)
            gt_classes = target["class_labels"].to(device).long().reshape(-1)
            assigned = assign_boxes_to_patches(box_cxcywh_to_xyxy(gt_boxes), self.grid_size)
            safe = assigned.clamp(min=0)
            classes.append(torch.where(assigned >= 0, gt_classes[safe] if len(gt_classes) else assigned, -1))
            boxes.append(gt_boxes[safe] if len(gt_boxes) else torch.zeros(len(assigned), 4, device=device))
        return torch.stack(classes), torch.stack(boxes)

    def detection_loss(
        self, logits: Tensor, boxes: Tensor, labels: list[dict[str, Tensor]]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

        target_classes, target_boxes = self.detection_targets(labels, logits.shape[0], logits.device)
        positive = target_classes >= 0
        num_positive = positive.sum().clamp(min=1).float()
        one_hot = F.one_hot(target_classes.clamp(min=0), self.config.num_labels).float() * positive.unsqueeze(-1)
        focal = sigmoid_focal_loss(
            logits.float(), one_hot, alpha=self.config.detection_focal_alpha, gamma=self.config.detection_focal_gamma,
            reduction="sum",
        ) / num_positive
        predicted, wanted = boxes[positive], target_boxes[positive]
        l1 = F.l1_loss(predicted, wanted, reduction="sum") / num_positive
        giou = generalized_box_iou_loss(box_cxcywh_to_xyxy(predicted), box_cxcywh_to_xyxy(wanted), reduction="sum")
        parts = {"loss_focal": focal, "loss_l1": l1, "loss_giou": giou / num_positive}
        config = self.config
        total = (config.detection_class_weight * focal + config.detection_l1_weight * l1
                 + config.detection_giou_weight * parts["loss_giou"])
        return total, parts


# ----------------------------------------------------------------------------------------------------------
# Report generation
# ----------------------------------------------------------------------------------------------------------
#: Keys of `PlaceProcessor`'s report mode that only pretraining reads. A teacher-forced forward ignores them (a
#: report batch trains the head as it is); `generate` refuses them, as a report ends with [SEP] (not a prompt).
PRETRAINING_ONLY_INPUTS = ("sentence_ids", "sentence_hashes")
#: Keys of the hand-written decoder that PLACE used before transformers' (git commit 60275d5 and earlier).
_OLD_DECODER_KEYS = re.compile(r"^report_decoder\.(token_embedding|position_embedding|layers|final_norm|lm_head)\.")


def report_decoder_config(config: PlaceConfig) -> BertConfig:
    """The report decoder's `BertConfig`, derived from `config`'s head options at construction, never saved.

    A causal BERT with cross-attention (`is_decoder`, `add_cross_attention`), so transformers' cached decoding
    applies: an `EncoderDecoderCache` grows the self-attention keys/values by one token per step and computes the
    image's cross-attention keys/values once. The vocabulary is the tokenizer's, `text_config.vocab_size`.
    """
    dim = config.decoder_hidden_size
    if dim % config.decoder_num_heads:
        raise ValueError(
            f"PlaceConfig.decoder_hidden_size ({dim}) must be divisible by decoder_num_heads ({config.decoder_num_heads})."
        )
    return BertConfig(
        vocab_size=config.text_config.vocab_size,
        hidden_size=dim,
        num_hidden_layers=config.decoder_layers,
        num_attention_heads=config.decoder_num_heads,
        intermediate_size=4 * dim,
        max_position_embeddings=config.decoder_max_length,
        type_vocab_size=1,
        # no dropout, like the hand-written decoder this one replaced: the protocol's numbers stay comparable
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=config.initializer_range,
        is_decoder=True,
        add_cross_attention=True,
        pad_token_id=config.report_pad_token_id,
        bos_token_id=config.report_bos_token_id,
        eos_token_id=config.report_eos_token_id,
    )


class PlaceForReportGeneration(PlaceHeadPreTrainedModel, GenerationMixin):
    """Report generator: transformers' BERT decoder (causal, cross-attention) over the patch tokens and the V-PORs.

    The image memory is `[patch tokens; V-PORs]` projected to `decoder_hidden_size` with a learned type embedding
    each; it is the decoder's `encoder_hidden_states`. Training is teacher-forced: `labels` are the report token ids
    (`-100` = ignored; pad positions are ignored too), shifted inside the model as in causal LMs. `generate`
    encodes the image once per call (beams and sampled sequences share it), starts from [CLS]
    (`report_bos_token_id`) or from a prompt (`input_ids`, e.g. from `PlaceProcessor(text_mode="prompt")`), stops
    at [SEP] and decodes with a key/value cache (`use_cache=False` recomputes the prefix at every step: same
    tokens, slower). Greedy, beam search and sampling are transformers' own.
    """

    main_input_name = "input_ids"  # generation treats `pixel_values` as conditioning, like other VLMs

    def __init__(self, config: PlaceConfig, **head_options: Any) -> None:
        super().__init__(config, with_observations=True, **head_options)
        dim = config.decoder_hidden_size
        self.patch_memory = nn.Sequential(nn.LayerNorm(self.vision_width), nn.Linear(self.vision_width, dim))
        self.observation_memory = nn.Sequential(nn.LayerNorm(config.projection_dim), nn.Linear(config.projection_dim, dim))
        self.memory_type = nn.Parameter(torch.zeros(2, dim))
        self.report_decoder = BertLMHeadModel(report_decoder_config(config))
        self.post_init()
        self.generation_config = self.default_generation_config()

    def default_generation_config(self) -> GenerationConfig:
        """[CLS] … [SEP] decoding with a cache, at most `decoder_max_length` tokens (the position table)."""
        return GenerationConfig(
            bos_token_id=self.config.report_bos_token_id,
            eos_token_id=self.config.report_eos_token_id,
            pad_token_id=self.config.report_pad_token_id,
            max_length=self.config.decoder_max_length,
        )

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, PlaceForReportGeneration):
            init.normal_(module.memory_type, std=self.config.initializer_range)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.report_decoder.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.report_decoder.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Linear:
        return self.report_decoder.get_output_embeddings()

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.report_decoder.set_output_embeddings(new_embeddings)

    def resize_token_embeddings(self, *args: Any, **kwargs: Any) -> nn.Embedding:
        """`PreTrainedModel.resize_token_embeddings` (which sets `text_config.vocab_size`, the source of truth), and
        the decoder's derived config follows it."""
        embeddings = super().resize_token_embeddings(*args, **kwargs)
        self.report_decoder.config.vocab_size = self.config.text_config.vocab_size
        return embeddings

    def encode_image_memory(self, pixel_values: Tensor) -> Tensor:
        """Cross-attention memory `(B, N + M, decoder_hidden_size)` of a batch of images."""
        patches, observations = self.observations(pixel_values)
        return torch.cat(
            [self.patch_memory(patches) + self.memory_type[0], self.observation_memory(observations) + self.memory_type[1]],
            dim=1,
        )

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")  # the older name, as transformers models accept it
    def forward(
        self,
        input_ids: Tensor | None = None,
        pixel_values: Tensor | None = None,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        labels: Tensor | None = None,
        logits_to_keep: int | Tensor = 0,
        **kwargs: Any,
    ) -> CausalLMOutputWithCrossAttentions:
        """Next-token logits `(B, L, vocab)`; with `labels (B, L)` also the shifted cross-entropy.

        `encoder_hidden_states` is a precomputed `encode_image_memory` (what `generate` passes); otherwise the
        image memory comes from `pixel_values`. `cache` / `use_cache` as in every transformers decoder.
        """
        for name in PRETRAINING_ONLY_INPUTS:
            kwargs.pop(name, None)
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        kwargs.pop("return_dict", None)
        if encoder_hidden_states is None:
            if pixel_values is None:
                raise ValueError("PlaceForReportGeneration needs `pixel_values` or precomputed `encoder_hidden_states`.")
            encoder_hidden_states = self.encode_image_memory(pixel_values)
        self._check_positions(input_ids, cache)
        outputs = self.report_decoder(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            encoder_hidden_states=encoder_hidden_states, cache=cache, use_cache=False if labels is not None else use_cache,
            logits_to_keep=logits_to_keep, return_dict=True, **kwargs,
        )
        loss = None
        if labels is not None:
            loss = self.report_loss(outputs.logits, labels, attention_mask, num_items_in_batch)
        return CausalLMOutputWithCrossAttentions(
            loss=loss, logits=outputs.logits, cache=outputs.cache, hidden_states=outputs.hidden_states,
            attentions=outputs.attentions, cross_attentions=outputs.cross_attentions,
        )

    def _check_positions(self, input_ids: Tensor | None, cache: Cache | None) -> None:
        """A clear error instead of an index error in the position table."""
        length = (cache.get_seq_length() if cache is not None else 0) + (input_ids.shape[1] if input_ids is not None else 0)
        if length > self.config.decoder_max_length:
            raise ValueError(
                f"The report decoder has {self.config.decoder_max_length} positions (decoder_max_length) but got "
                f"{length} tokens; generate with max_length <= {self.config.decoder_max_length} (prompt included)."
            )

    def report_loss(
        self, logits: Tensor, labels: Tensor, attention_mask: Tensor | None = None, num_items_in_batch: Any = None
    ) -> Tensor:
        """Shifted next-token cross-entropy; `-100`, [PAD] and masked positions are ignored."""
        labels = labels.masked_fill(labels == self.config.report_pad_token_id, -100)
        if attention_mask is not None:
            labels = labels.masked_fill(attention_mask == 0, -100)
        return ForCausalLMLoss(logits, labels, logits.shape[-1], num_items_in_batch=num_items_in_batch)

    def _prepare_cache_for_generation(
        self, generation_config: GenerationConfig, model_kwargs: dict[str, Any], *args: Any, **kwargs: Any
    ) -> None:
        """`generate`'s default cache is sized from `config.get_text_config()`, the pretraining text tower: the
        report decoder needs its own, with a cross-attention half (what `BertModel` builds when given none)."""
        own_cache = model_kwargs.get("cache") is None and generation_config.use_cache is not False
        if own_cache and generation_config.cache_implementation in (None, "dynamic"):
            decoder_config = self.report_decoder.config
            model_kwargs["cache"] = EncoderDecoderCache(DynamicCache(config=decoder_config), DynamicCache(config=decoder_config))
            return
        if own_cache:
            raise ValueError(f"PlaceForReportGeneration decodes with the dynamic cache only, not "
                             f"cache_implementation={generation_config.cache_implementation!r}.")
        super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)

    @torch.no_grad()
    def generate(
        self,
        inputs: Tensor | None = None,
        pixel_values: Tensor | None = None,
        encoder_hidden_states: Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """`GenerationMixin.generate` with the image encoded once, before beams or samples expand the batch.

        `inputs` / `input_ids` is an optional prompt ([CLS] + tokens, no [SEP]: `PlaceProcessor`'s prompt mode).
        """
        given = sorted(name for name in PRETRAINING_ONLY_INPUTS if name in kwargs)
        if given:
            raise ValueError(
                f"generate got {given}, which PlaceProcessor's report mode emits for pretraining: a report ends with "
                "[SEP] and is no prompt. Call the processor with text_mode='prompt' (or images only)."
            )
        if encoder_hidden_states is None:
            if pixel_values is None:
                raise ValueError("generate needs `pixel_values` (or precomputed `encoder_hidden_states`).")
            encoder_hidden_states = self.encode_image_memory(pixel_values)
        prompt = inputs if inputs is not None else kwargs.get("input_ids")
        self._fit_new_tokens(prompt.shape[1] if prompt is not None else 1, kwargs)
        return super().generate(inputs, encoder_hidden_states=encoder_hidden_states, **kwargs)

    def _fit_new_tokens(self, prompt_length: int, kwargs: dict[str, Any]) -> None:
        """`max_new_tokens` as a `max_length` within the position table (`decoder_max_length`).

        The generation config's own `max_length` is the table's size; passing the request as `max_length` also
        spares transformers' warning that both are set."""
        if kwargs.get("max_new_tokens") is not None and "max_length" not in kwargs and "generation_config" not in kwargs:
            wanted = prompt_length + kwargs.pop("max_new_tokens")
            kwargs["max_length"] = min(wanted, self.config.decoder_max_length)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        """`from_pretrained`, refusing a folder whose decoder weights this class cannot read (instead of silently
        starting the decoder from random), and with the report generation config where the folder has none."""
        wants_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        _refuse_other_decoder(info, args[0] if args else kwargs.get("pretrained_model_name_or_path"))
        if model.generation_config is None or model.generation_config.bos_token_id is None:
            # a pretraining folder has no generation_config.json: transformers derives one without these tokens
            model.generation_config = model.default_generation_config()
        return (model, info) if wants_info else model


def _refuse_other_decoder(info: dict[str, Any], source: Any) -> None:
    """Raise when the checkpoint has `report_decoder.*` weights that are not this decoder's."""
    stale = sorted(key for key in info["unexpected_keys"] if key.startswith("report_decoder."))
    if not stale:
        return
    missing = sorted(key for key in info["missing_keys"] if key.startswith("report_decoder."))
    old = any(_OLD_DECODER_KEYS.match(key) for key in stale)
    what = "the hand-written report decoder PLACE used before its transformers decoder" if old else "a report decoder"
    raise ValueError(
        f"{source} holds {what} ({len(stale)} weights, e.g. {stale[:3]}) that this version cannot load: its decoder "
        f"(transformers' BertLMHeadModel with cross-attention and a key/value cache) would miss {len(missing)} "
        f"weights (e.g. {missing[:2]}) and start from random. Re-train the head from the pretrained folder "
        "(examples/finetune_report_generation.py), or load the folder with the PLACE version that saved it."
    )


__all__ = [
    "HEAD_DEFAULTS",
    "PlaceForImageClassification",
    "PlaceForObjectDetection",
    "PlaceForReportGeneration",
    "PlaceForSemanticSegmentation",
    "PlaceHeadPreTrainedModel",
    "PlaceObjectDetectionOutput",
    "PRETRAINING_ONLY_INPUTS",
    "assign_boxes_to_patches",
    "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "dice_loss",
    "evenly_spaced_blocks",
    "fill_head_defaults",
    "report_decoder_config",
]
