"""PLACE's losses as pure, vectorised functions (docs/METHOD.md, sections 4, 7 and 8).

Every function takes the *local* rows of a rank and the *global* (gathered) columns, plus the offset of the
local rows inside the global batch. In one process local == global and the offset is 0. Similarities and
softmaxes run in fp32 whatever the autocast dtype. The only distributed surface is `gather_with_grad`.

Shapes are fixed by the batch, never by its data: no boolean indexing, `nonzero` or `.item()`, so a GPU step
never waits for the device in the middle of the loss and `torch.compile` traces the losses without graph breaks
or dynamic shapes (empty sentence slots are computed and weighted 0 rather than dropped).

Scaling for data parallelism: a rank's loss is `world_size * (sum over its rows) / (global row count)`, so
that the mean of the ranks' losses is the full-batch loss and, after the autograd all-gather sums the
gradients flowing back to each rank and DDP averages parameter gradients, training equals one process
with the full batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor


def gather_with_grad(tensor: Tensor) -> Tensor:
    """All-gather `tensor` along dim 0 across ranks, keeping the autograd graph (identity without DDP).

    Every rank must pass the same shape (the trainer drops the last incomplete batch).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    try:
        from torch.distributed._functional_collectives import all_gather_single_autograd
    except ImportError:  # older torch: the classic autograd collective
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(tensor.contiguous()), dim=0)
    return all_gather_single_autograd(tensor.contiguous(), gather_dim=0, group=dist.group.WORLD)


def distributed_context() -> tuple[int, int]:
    """`(rank, world_size)` of the default process group, `(0, 1)` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _scaled_mean(per_row: Tensor, weights: Tensor, global_count: Tensor | float, world_size: int) -> Tensor:
    """`world_size * sum(per_row * weights) / global_count`, guarded against an empty batch."""
    count = global_count.clamp(min=1) if isinstance(global_count, Tensor) else max(global_count, 1.0)
    return world_size * (per_row * weights).sum() / count


def ita_loss(
    image_embeds: Tensor,
    text_embeds: Tensor,
    all_image_embeds: Tensor,
    all_text_embeds: Tensor,
    logit_scale: Tensor,
    offset: int = 0,
    world_size: int = 1,
) -> Tensor:
    """Symmetric InfoNCE between L2-normalised global embeddings (L_ITA).

    Local image rows are scored against all texts and local text rows against all images; the positive of
    local row r is global column `offset + r`.
    """
    scale = logit_scale.float()
    logits_i2t = scale * image_embeds.float() @ all_text_embeds.float().t()
    logits_t2i = scale * text_embeds.float() @ all_image_embeds.float().t()
    targets = torch.arange(image_embeds.shape[0], device=image_embeds.device) + offset
    global_rows = float(all_image_embeds.shape[0])  # a Python number: a device tensor from it is a host copy
    ones = torch.ones_like(targets, dtype=torch.float32)
    loss_i2t = _scaled_mean(F.cross_entropy(logits_i2t, targets, reduction="none"), ones, global_rows, world_size)
    loss_t2i = _scaled_mean(F.cross_entropy(logits_t2i, targets, reduction="none"), ones, global_rows, world_size)
    return (loss_i2t + loss_t2i) / 2


def observation_similarity(
    sentence_embeds: Tensor, observation_embeds: Tensor, tau_match: float, matching: str = "soft"
) -> Tensor:
    """s(t, i) = Σ_m softmax_m(⟨t, v_im⟩ / τ_match) ⟨t, v_im⟩ for every sentence t and image i.

    Args:
        sentence_embeds: `(S, d)` normalised T-PORs.
        observation_embeds: `(B, M, d)` normalised V-PORs.
        matching: `"soft"` (attention over observations) or `"hard"` (the best observation).
    Returns:
        `(S, B)` fp32 scores.
    """
    sims = torch.einsum("sd,bmd->sbm", sentence_embeds.float(), observation_embeds.float())
    return (matching_weights(sims, tau_match, matching) * sims).sum(dim=-1)


def matching_weights(sims: Tensor, tau_match: float, matching: str = "soft") -> Tensor:
    """a_m(t): how a sentence spreads over an image's observations, from sentence–observation cosines `(..., M)`.

    `"soft"`: softmax at `tau_match`; `"hard"`: one-hot on the best observation. PCMA scores and grounding maps
    both use it, so grounding reads the observations the way training matched them.
    """
    if matching == "hard":  # one-hot by scatter: F.one_hot checks its indices' range on the host (a device sync)
        return torch.zeros_like(sims).scatter_(-1, sims.argmax(dim=-1, keepdim=True), 1.0)
    return torch.softmax(sims / tau_match, dim=-1)


def off_diagonal(square: Tensor) -> Tensor:
    """The off-diagonal entries of a batch of square matrices, `(B, N, N)` → `(B, N·(N−1))`, row by row.

    Without a boolean mask (a data-dependent shape): dropping the first of the N² entries leaves N−1 rows of
    N+1 whose last entry is the next diagonal one."""
    batch, n = square.shape[0], square.shape[-1]
    return square.reshape(batch, n * n)[:, 1:].reshape(batch, n - 1, n + 1)[:, :, :-1].reshape(batch, -1)


def sentence_positive_mask(
    sentence_hashes: Tensor, sentence_owner: Tensor, all_sentence_hashes: Tensor, all_sentence_mask: Tensor
) -> Tensor:
    """Positives of each sentence among all images: its own image and every image sharing its hash.

    Args:
        sentence_hashes: `(S,)` hashes of the flattened valid sentences (0 = no hash known).
        sentence_owner: `(S,)` global index of the image each sentence belongs to.
        all_sentence_hashes: `(B, K)` hashes of every image's report sentences.
        all_sentence_mask: `(B, K)` which of those slots hold a sentence.
    Returns:
        `(S, B)` boolean mask.
    """
    same = (sentence_hashes[:, None, None] == all_sentence_hashes[None]) & all_sentence_mask[None]
    shares_hash = (same & (sentence_hashes[:, None, None] != 0)).any(dim=-1)
    own = sentence_owner[:, None] == torch.arange(all_sentence_hashes.shape[0], device=sentence_owner.device)
    return own | shares_hash


def _multi_positive_nll(logits: Tensor, positives: Tensor, dim: int) -> Tensor:
    """-log(Σ_pos e^x / Σ_all e^x) along `dim` (rows with no positive give 0)."""
    log_all = torch.logsumexp(logits, dim=dim)
    log_pos = torch.logsumexp(logits.masked_fill(~positives, float("-inf")), dim=dim)
    return torch.where(positives.any(dim=dim), log_all - log_pos, torch.zeros_like(log_all))


def pcma_loss(
    sentence_embeds: Tensor,
    sentence_mask: Tensor,
    sentence_hashes: Tensor | None,
    observation_embeds: Tensor,
    all_sentence_embeds: Tensor,
    all_sentence_mask: Tensor,
    all_sentence_hashes: Tensor | None,
    all_observation_embeds: Tensor,
    tau_match: float,
    tau_pcma: float,
    matching: str = "soft",
    offset: int = 0,
    world_size: int = 1,
) -> Tensor:
    """Pathological-level cross-modal alignment (L_PCMA): mean of sentence→image and image→sentence terms.

    Local tensors: `sentence_embeds (b, K, d)`, `sentence_mask (b, K)`, `sentence_hashes (b, K)` or None,
    `observation_embeds (b, M, d)`. `all_*` are the same gathered over ranks (`(B, ...)`); `offset` is the
    global index of local row 0.
    """
    if sentence_hashes is None or all_sentence_hashes is None:  # no hashes: only the own image is positive
        all_sentence_hashes = torch.zeros_like(all_sentence_mask, dtype=torch.long)
        sentence_hashes = all_sentence_hashes[offset : offset + sentence_mask.shape[0]]
    loss_s2i = _sentence_to_image(
        sentence_embeds, sentence_mask, sentence_hashes, all_observation_embeds, all_sentence_hashes,
        all_sentence_mask, tau_match, tau_pcma, matching, offset, world_size,
    )
    loss_i2s = _image_to_sentence(
        observation_embeds, all_sentence_embeds, all_sentence_mask, all_sentence_hashes,
        tau_match, tau_pcma, matching, offset, world_size,
    )
    return (loss_s2i + loss_i2s) / 2


def _flatten_slots(embeds: Tensor, mask: Tensor, hashes: Tensor, offset: int) -> tuple[Tensor, ...]:
    """Every sentence slot as `(S, d)` embeddings, `(S,)` hashes, `(S,)` global owner indices and `(S,)` validity,
    S = rows × K: empty slots stay (fixed shapes) and the callers weight them out."""
    owners = torch.arange(mask.shape[0], device=mask.device)[:, None].expand_as(mask) + offset
    return embeds.flatten(0, 1), hashes.flatten(), owners.flatten(), mask.flatten()


def _sentence_to_image(
    sentence_embeds: Tensor, sentence_mask: Tensor, sentence_hashes: Tensor, all_observation_embeds: Tensor,
    all_sentence_hashes: Tensor, all_sentence_mask: Tensor, tau_match: float, tau_pcma: float, matching: str,
    offset: int, world_size: int,
) -> Tensor:
    """Each local sentence against every image of the global batch, multi-positive InfoNCE (every slot is scored;
    an empty one has its own image as a positive, so its term is finite, and weight 0)."""
    sentences, hashes, owners, valid = _flatten_slots(sentence_embeds, sentence_mask, sentence_hashes, offset)
    logits = observation_similarity(sentences, all_observation_embeds, tau_match, matching) / tau_pcma
    positives = sentence_positive_mask(hashes, owners, all_sentence_hashes, all_sentence_mask)
    per_sentence = _multi_positive_nll(logits, positives, dim=1)
    return _scaled_mean(per_sentence, valid.to(per_sentence.dtype), all_sentence_mask.sum().float(), world_size)


def _image_to_sentence(
    observation_embeds: Tensor, all_sentence_embeds: Tensor, all_sentence_mask: Tensor,
    all_sentence_hashes: Tensor, tau_match: float, tau_pcma: float, matching: str, offset: int, world_size: int,
) -> Tensor:
    """Each local image: softmax over all valid sentences; mean -log p over its positive sentences."""
    sentences, hashes, owners, valid = _flatten_slots(all_sentence_embeds, all_sentence_mask, all_sentence_hashes, 0)
    logits = observation_similarity(sentences, observation_embeds, tau_match, matching) / tau_pcma  # (S, b)
    # Empty slots leave the softmax: exp(-1e9 - max) is exactly 0 in fp32 (a finite fill keeps an all-empty
    # batch finite, where -inf would give NaN)
    logits = logits.masked_fill(~valid[:, None], -1e9)
    local_hashes = all_sentence_hashes[offset : offset + observation_embeds.shape[0]]
    local_mask = all_sentence_mask[offset : offset + observation_embeds.shape[0]]
    positives = sentence_positive_mask(hashes, owners - offset, local_hashes, local_mask) & valid[:, None]  # (S, b)
    log_probs = torch.log_softmax(logits, dim=0)
    n_pos = positives.sum(dim=0)
    per_image = -torch.where(positives, log_probs, torch.zeros_like(log_probs)).sum(dim=0) / n_pos.clamp(min=1)
    has_positive = (n_pos > 0).float()
    images_with_sentences = all_sentence_mask.any(dim=1).sum().float()
    return _scaled_mean(per_image, has_positive, images_with_sentences, world_size)


def observation_diversity(observation_embeds: Tensor) -> Tensor:
    """Mean squared cosine between the different V-PORs of each image, `(B, M, d)` normalised → scalar.

    Zero when an image's observations are orthogonal; one when they have collapsed into a single vector.
    """
    v = observation_embeds.float()
    return off_diagonal(v @ v.transpose(1, 2)).pow(2).mean()


def correlation_target(pixel_values: Tensor, patch_size: int, eps: float = 1e-6) -> Tensor:
    """Pearson correlation between the pixel vectors of every pair of patches, `(B, N, N)`, detached.

    Channel mean first; each patch is standardised (flat patches give zero rows thanks to `eps`).
    """
    with torch.no_grad():
        gray = pixel_values.float().mean(dim=1, keepdim=True)
        patches = F.unfold(gray, kernel_size=patch_size, stride=patch_size).transpose(1, 2)  # (B, N, p*p)
        centred = patches - patches.mean(dim=-1, keepdim=True)
        standardised = centred / (centred.pow(2).mean(dim=-1, keepdim=True).sqrt() + eps)
        return standardised @ standardised.transpose(1, 2) / patches.shape[-1]


def correlation_loss(correlation_embeds: Tensor, target: Tensor) -> Tensor:
    """MSE between Ĉ = Z Zᵀ (Z normalised, `(B, N, d_c)`) and the target over off-diagonal entries (L_CE)."""
    z = F.normalize(correlation_embeds.float(), dim=-1)
    return off_diagonal(z @ z.transpose(1, 2) - target.float()).pow(2).mean()


__all__ = [
    "correlation_loss",
    "correlation_target",
    "distributed_context",
    "gather_with_grad",
    "ita_loss",
    "matching_weights",
    "observation_diversity",
    "observation_similarity",
    "pcma_loss",
    "sentence_positive_mask",
]
