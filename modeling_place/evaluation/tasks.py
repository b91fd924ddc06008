"""Training-free protocols on a pretrained `PlaceModel`: zero-shot classification, retrieval, grounding.

All functions run the model in eval mode without gradients, in batches, and return numpy arrays or
metric dicts. Texts go through a `PlaceProcessor` (for its sentence split), images may be given as
`pixel_values` or as anything the processor's image processor reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .functional import mask_iou, pointing_game, precision_at_k
from .grounding import SMOOTHING_SIGMA, smooth_grid


def _batches(count: int, batch_size: int) -> list[slice]:
    return [slice(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]


def _pixel_values(processor: Any, images: Any) -> Tensor:
    """`images` as a `(N, 3, H, W)` float tensor (already processed tensors pass through)."""
    if isinstance(images, Tensor) and images.dim() == 4:
        return images
    return processor.image_processor(images, return_tensors="pt")["pixel_values"]


@torch.no_grad()
def encode_texts(model: Any, processor: Any, texts: Sequence[str], batch_size: int = 64) -> tuple[Tensor, Tensor, Tensor]:
    """Global embeddings `(T, d)`, T-PORs `(T, K, d)` and their mask `(T, K)` of reports or sentences."""
    model.eval()
    device = model.device
    global_parts, sentence_parts, mask_parts = [], [], []
    for part in _batches(len(texts), batch_size):
        batch = processor(text=list(texts[part]), return_tensors="pt").to(device)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        global_parts.append(model.get_text_features(ids, mask).pooler_output.float().cpu())
        sentences = model.get_sentence_features(ids, mask, batch["sentence_ids"])
        sentence_parts.append(sentences.sentence_embeds.float().cpu())
        mask_parts.append(sentences.sentence_mask.cpu())
    return torch.cat(global_parts), torch.cat(sentence_parts), torch.cat(mask_parts)


def sentence_embedding(sentence_embeds: Tensor, sentence_mask: Tensor) -> Tensor:
    """One normalised T-POR per text `(T, d)`: the mean of its valid sentence slots (a prompt is one sentence)."""
    weights = sentence_mask.float().unsqueeze(-1)
    return F.normalize((sentence_embeds * weights).sum(1) / weights.sum(1).clamp(min=1), dim=-1)


@torch.no_grad()
def encode_images(model: Any, pixel_values: Tensor, batch_size: int = 64) -> tuple[Tensor, Tensor]:
    """Global image embeddings `(N, d)` and V-PORs `(N, M, d)`."""
    model.eval()
    global_parts, observation_parts = [], []
    for part in _batches(len(pixel_values), batch_size):
        observed = model.get_observation_features(pixel_values[part].to(model.device))  # one ViT pass for both
        global_parts.append(observed.image_embeds.float().cpu())
        observation_parts.append(observed.observation_embeds.float().cpu())
    return torch.cat(global_parts), torch.cat(observation_parts)


@torch.no_grad()
def _observation_scores(model: Any, sentences: Tensor, observations: Tensor) -> Tensor:
    """s(t, i) of sentences `(T, d)` against images' V-PORs `(N, M, d)`: `(T, N)`, on the CPU."""
    return model.observation_scores(sentences.to(model.device), observation_embeds=observations.to(model.device)).cpu()


def observation_cosine(model: Any, pixel_values: Tensor, batch_size: int = 64) -> float:
    """Mean cosine between an image's different V-PORs (1.0: the observations collapsed into one vector)."""
    from modeling_place.loss_place import off_diagonal

    _, observations = encode_images(model, pixel_values, batch_size)
    return float(off_diagonal(observations @ observations.transpose(1, 2)).mean())


def zero_shot_scores(
    model: Any,
    processor: Any,
    images: Any,
    positive_prompts: Mapping[str, Sequence[str]],
    negative_prompts: Mapping[str, Sequence[str]],
    observation_weight: float = 0.5,
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """Zero-shot class scores `(N, C)` from prompts, for AUROC: positive minus negative prompt similarity.

    Args:
        images: pixel values `(N, 3, H, W)` or images the processor reads.
        positive_prompts / negative_prompts: per class name, sentences that assert / deny the finding
            ("Small left pleural effusion." / "No pleural effusion."); both mappings share their keys.
        observation_weight: weight of the observation-level score in `combined` (1 − weight: global).

    Returns:
        `{"global", "observation", "combined"}`, each `(N, C)` in the classes' key order. `global` uses
        the ITA embeddings (cosine), `observation` PLACE's s(t, i) over the image's V-PORs.
    """
    if set(positive_prompts) != set(negative_prompts):
        raise ValueError("positive_prompts and negative_prompts must name the same classes")
    classes = list(positive_prompts)
    image_global, observations = encode_images(model, _pixel_values(processor, images), batch_size)
    scores = {"global": [], "observation": []}
    for name in classes:
        sides = {}
        for sign, prompts in ((1.0, positive_prompts[name]), (-1.0, negative_prompts[name])):
            if not prompts:
                raise ValueError(f"class {name!r} has no {'positive' if sign > 0 else 'negative'} prompt")
            text_global, sentence_embeds, sentence_mask = encode_texts(model, processor, list(prompts), batch_size)
            sentences = sentence_embedding(sentence_embeds, sentence_mask)
            sides[sign] = ((image_global @ text_global.T).mean(1), _observation_scores(model, sentences, observations).mean(0))
        scores["global"].append(sides[1.0][0] - sides[-1.0][0])
        scores["observation"].append(sides[1.0][1] - sides[-1.0][1])
    result = {key: torch.stack(value, dim=1).numpy() for key, value in scores.items()}
    result["combined"] = (1 - observation_weight) * result["global"] + observation_weight * result["observation"]
    return result


def image_text_similarity(
    model: Any, processor: Any, images: Any, texts: Sequence[str], observation_weight: float = 0.0, batch_size: int = 64
) -> np.ndarray:
    """Image-to-text similarity `(N_images, N_texts)`: global cosine, optionally mixed with the mean
    observation-level score s(t, i) over each report's sentences (`observation_weight` in [0, 1])."""
    image_global, observations = encode_images(model, _pixel_values(processor, images), batch_size)
    text_global, sentence_embeds, sentence_mask = encode_texts(model, processor, texts, batch_size)
    similarity = image_global @ text_global.T
    if observation_weight > 0:
        flat = sentence_embeds[sentence_mask]  # (valid sentences, d)
        per_sentence = _observation_scores(model, flat, observations)  # (S, N)
        owner = torch.nonzero(sentence_mask)[:, 0]
        sums = torch.zeros(len(texts), per_sentence.shape[1]).index_add_(0, owner, per_sentence)
        report_scores = sums / sentence_mask.sum(1, keepdim=True).clamp(min=1)
        similarity = (1 - observation_weight) * similarity + observation_weight * report_scores.T
    return similarity.numpy()


def retrieval_precision(
    similarity: np.ndarray, image_labels: Sequence[int], text_labels: Sequence[int], ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Precision@K of image-to-text retrieval for each K."""
    image_labels, text_labels = np.asarray(image_labels), np.asarray(text_labels)
    return {f"precision_at_{k}": precision_at_k(similarity, image_labels, text_labels, k) for k in ks}


@torch.no_grad()
def cosine_grounding_maps(
    model: Any, processor: Any, images: Any, sentences: Sequence[str], batch_size: int = 32,
    sigma: float = SMOOTHING_SIGMA,
) -> np.ndarray:
    """BioViL's readout `(N, H, W)`: the cosine between each sentence's embedding (the report projection, as
    `get_text_features` of the sentence) and every patch's joint-space embedding, smoothed on the patch grid
    (Gaussian, `sigma` patches) and upsampled bilinearly to the input resolution. Values are raw cosines."""
    pixel_values = _pixel_values(processor, images)
    if len(pixel_values) != len(sentences):
        raise ValueError(f"{len(pixel_values)} images but {len(sentences)} sentences")
    text_embeds, _, _ = encode_texts(model, processor, sentences, batch_size)
    grid = model.config.image_size // model.config.patch_size
    grids = []
    for part in _batches(len(pixel_values), batch_size):
        patches = model.get_patch_embeddings(pixel_values[part].to(model.device)).float().cpu()
        grids.append(torch.einsum("bnd,bd->bn", patches, text_embeds[part]).view(-1, grid, grid))
    smoothed = torch.from_numpy(smooth_grid(torch.cat(grids).numpy(), sigma)).float()
    return F.interpolate(smoothed[:, None], size=tuple(pixel_values.shape[-2:]), mode="bilinear",
                         align_corners=False)[:, 0].numpy()


@torch.no_grad()
def grounding_maps(model: Any, processor: Any, images: Any, sentences: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """PLACE's own readout: heat maps `(N, H, W)` in [0, 1] of each sentence over its paired image (model input
    resolution), the maps of the V-PORs that the sentence matches (`PlaceModel.ground`)."""
    pixel_values = _pixel_values(processor, images)
    if len(pixel_values) != len(sentences):
        raise ValueError(f"{len(pixel_values)} images but {len(sentences)} sentences")
    _, sentence_embeds, sentence_mask = encode_texts(model, processor, sentences, batch_size)
    embeds = sentence_embedding(sentence_embeds, sentence_mask)
    maps = []
    for part in _batches(len(pixel_values), batch_size):
        pixels, queries = pixel_values[part].to(model.device), embeds[part, None].to(model.device)
        maps.append(model.ground(pixels, queries)[:, 0].float().cpu())
    return torch.cat(maps).numpy()


def grounding_scores(maps: np.ndarray, masks: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Pointing-game accuracy and mIoU (maps binarised at `threshold`) of heat maps against lesion masks."""
    maps, masks = np.asarray(maps), np.asarray(masks).astype(bool)
    return {
        "pointing_game": float(pointing_game(maps, masks).mean()),
        "miou": float(mask_iou(maps >= threshold, masks).mean()),
    }


__all__ = [
    "cosine_grounding_maps",
    "encode_images",
    "encode_texts",
    "grounding_maps",
    "grounding_scores",
    "image_text_similarity",
    "observation_cosine",
    "retrieval_precision",
    "sentence_embedding",
    "zero_shot_scores",
]
