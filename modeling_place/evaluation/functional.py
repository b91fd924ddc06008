"""Metric functions the package's protocols call; the `evaluate` modules in `metrics/` are self-contained
(they import no package code, only the libraries named here) and are tested against these functions.

Every function states which established implementation it reproduces (the tests compare against it):

| function | reproduces |
|---|---|
| `multilabel_auroc` | calls `sklearn.metrics.roc_auc_score` per label, macro mean over labels with both classes |
| `accuracy` | `sklearn.metrics.accuracy_score` |
| `dice_per_image` | `sklearn.metrics.f1_score` of each image's flattened masks (`zero_division=1`) |
| `detection_map` | `pycocotools.cocoeval.COCOeval` (bbox, area "all", 101-point interpolation) |
| `corpus_bleu` | `sacrebleu.corpus_bleu(..., tokenize="none", smooth_method="none")` |
| `rouge_l` | `rouge_score` ROUGE-L F1 (`beta=1`); `beta=1.2` is the coco-caption variant |
| `cider_d` | `pycocoevalcap.cider.Cider` (CIDEr-D: σ = 6, clipped counts, ×10) |
| `precision_at_k` | the definition (fraction of the top-K texts that share the query's class) |
| `pointing_game`, `mask_iou` | the definitions (hit if the heat map's maximum lies in the mask; Jaccard) |

Text metrics share one tokeniser, `tokenize_text` (lower-case words and numbers, punctuation dropped), so
BLEU, ROUGE-L and CIDEr always see the same tokens.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

_TOKEN = re.compile(r"[a-z0-9]+")


# ----------------------------------------------------------------------------------------------------------
# Classification
# ----------------------------------------------------------------------------------------------------------
def binary_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: scikit-learn's `roc_auc_score` (the `auroc` module calls it too)."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        raise ValueError("AUROC needs at least one positive and one negative example")
    return float(roc_auc_score(labels, np.asarray(scores, dtype=np.float64)))


def multilabel_auroc(
    scores: np.ndarray, labels: np.ndarray, label_names: Sequence[str] | None = None
) -> dict[str, object]:
    """Macro AUROC over labels; a label without positives (or without negatives) is skipped and reported.

    Args:
        scores: `(N, C)` scores (probabilities or logits).
        labels: `(N, C)` 0/1 references.
        label_names: names for the per-label report (default "0", "1", ...).

    Returns:
        `{"auroc": macro mean (nan if every label is skipped), "per_label": {name: auroc},
        "skipped_labels": [names]}`.
    """
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    if scores.ndim == 1:
        scores, labels = scores[:, None], labels[:, None]
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must have the same shape")
    names = [str(i) for i in range(scores.shape[1])] if label_names is None else list(label_names)
    per_label, skipped = {}, []
    for column, name in enumerate(names):
        present = np.unique(labels[:, column])
        if len(present) < 2:
            skipped.append(name)
            continue
        per_label[name] = binary_auroc(scores[:, column], labels[:, column])
    macro = float(np.mean(list(per_label.values()))) if per_label else float("nan")
    return {"auroc": macro, "per_label": per_label, "skipped_labels": skipped}


def accuracy(predictions: np.ndarray, references: np.ndarray) -> float:
    """Fraction of exact matches (rows must match exactly for 2-D inputs, as scikit-learn's subset accuracy)."""
    predictions, references = np.asarray(predictions), np.asarray(references)
    if predictions.shape != references.shape:
        raise ValueError(f"predictions {predictions.shape} and references {references.shape} differ in shape")
    if predictions.size == 0:
        raise ValueError("accuracy of an empty set is undefined")
    matches = predictions == references
    return float(matches.reshape(len(matches), -1).all(axis=1).mean())


# ----------------------------------------------------------------------------------------------------------
# Masks and heat maps
# ----------------------------------------------------------------------------------------------------------
def _as_mask_batch(masks: np.ndarray, name: str) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3:
        raise ValueError(f"{name} must be (N, H, W) or (H, W), got shape {masks.shape}")
    return masks


def _paired_masks(predictions: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as boolean `(N, H, W)` mask batches of one shape (ValueError otherwise)."""
    predictions = _as_mask_batch(predictions, "predictions").astype(bool)
    references = _as_mask_batch(references, "references").astype(bool)
    if predictions.shape != references.shape:
        raise ValueError(f"predictions {predictions.shape} and references {references.shape} differ in shape")
    return predictions, references


def dice_per_image(predictions: np.ndarray, references: np.ndarray, empty_score: float = 1.0) -> np.ndarray:
    """Dice 2|P∩R| / (|P| + |R|) of each binary mask pair `(N, H, W)`; `empty_score` when both are empty."""
    predictions, references = _paired_masks(predictions, references)
    intersection = (predictions & references).sum(axis=(1, 2))
    total = predictions.sum(axis=(1, 2)) + references.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total == 0, empty_score, 2 * intersection / np.maximum(total, 1)).astype(np.float64)


def mask_iou(predictions: np.ndarray, references: np.ndarray, empty_score: float = 1.0) -> np.ndarray:
    """Jaccard |P∩R| / |P∪R| of each binary mask pair `(N, H, W)`; `empty_score` when both are empty."""
    predictions, references = _paired_masks(predictions, references)
    intersection = (predictions & references).sum(axis=(1, 2))
    union = (predictions | references).sum(axis=(1, 2))
    return np.where(union == 0, empty_score, intersection / np.maximum(union, 1)).astype(np.float64)


def pointing_game(heatmaps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """1.0 where the heat map's maximum (first one in row-major order on ties) lies inside the mask."""
    heatmaps = _as_mask_batch(heatmaps, "heatmaps").astype(np.float64)
    masks = _as_mask_batch(masks, "masks").astype(bool)
    if heatmaps.shape != masks.shape:
        raise ValueError(f"heatmaps {heatmaps.shape} and masks {masks.shape} differ in shape")
    peaks = heatmaps.reshape(len(heatmaps), -1).argmax(axis=1)
    return masks.reshape(len(masks), -1)[np.arange(len(masks)), peaks].astype(np.float64)


# ----------------------------------------------------------------------------------------------------------
# Retrieval
# ----------------------------------------------------------------------------------------------------------
def precision_at_k(similarity: np.ndarray, query_labels: np.ndarray, candidate_labels: np.ndarray, k: int) -> float:
    """Mean over queries of the fraction of the `k` most similar candidates that share the query's label.

    Ties in similarity are broken by candidate order (stable sort), so the result is deterministic.
    """
    similarity = np.asarray(similarity, dtype=np.float64)
    query_labels, candidate_labels = np.asarray(query_labels), np.asarray(candidate_labels)
    if similarity.shape != (len(query_labels), len(candidate_labels)):
        raise ValueError(
            f"similarity must be (queries, candidates) = ({len(query_labels)}, {len(candidate_labels)}), "
            f"got {similarity.shape}"
        )
    if not 1 <= k <= similarity.shape[1]:
        raise ValueError(f"k must lie in [1, {similarity.shape[1]}], got {k}")
    top = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return float((candidate_labels[top] == query_labels[:, None]).mean())


# ----------------------------------------------------------------------------------------------------------
# Detection
# ----------------------------------------------------------------------------------------------------------
def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU matrix `(A, B)` of `[x0, y0, x1, y1]` boxes (pycocotools' convention: no +1 on widths)."""
    a, b = np.asarray(boxes_a, np.float64).reshape(-1, 4), np.asarray(boxes_b, np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    intersection = np.clip(bottom_right - top_left, 0, None).prod(axis=-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=-1)
    union = area_a[:, None] + area_b[None, :] - intersection
    return np.where(union > 0, intersection / np.where(union > 0, union, 1), 0.0)


def _match_image(pred_boxes: np.ndarray, gt_boxes: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """COCO greedy matching of score-sorted predictions: `(T, D)` True where a prediction is a true positive.

    Each prediction takes the still unmatched ground truth of highest IoU ≥ the threshold (the last one
    on an exact tie, as pycocotools).
    """
    matched = np.zeros((len(thresholds), len(pred_boxes)), dtype=bool)
    if len(pred_boxes) == 0 or len(gt_boxes) == 0:
        return matched
    ious = box_iou(pred_boxes, gt_boxes)
    for t, threshold in enumerate(thresholds):
        taken = np.zeros(len(gt_boxes), dtype=bool)
        for d in range(len(pred_boxes)):
            candidates = np.where(taken, -1.0, ious[d])
            best = len(candidates) - 1 - int(np.argmax(candidates[::-1]))
            if candidates[best] >= min(threshold, 1 - 1e-10):
                taken[best] = matched[t, d] = True
    return matched


def _interpolated_precision(true_positive: np.ndarray, num_gt: int, recall_points: np.ndarray) -> np.ndarray:
    """COCO 101-point interpolated precision `(T, R)` from score-sorted true-positive flags `(T, D)`."""
    tp = np.cumsum(true_positive, axis=1, dtype=np.float64)
    fp = np.cumsum(~true_positive, axis=1, dtype=np.float64)
    recall = tp / num_gt
    precision = tp / (tp + fp + np.spacing(1))
    precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]  # monotone from the right
    result = np.zeros((len(true_positive), len(recall_points)))
    for t in range(len(true_positive)):
        index = np.searchsorted(recall[t], recall_points, side="left")
        valid = index < len(recall[t])
        result[t, valid] = precision[t, index[valid]]
    return result


def detection_map(
    predictions: Sequence[dict], references: Sequence[dict], iou_thresholds: Sequence[float] | None = None,
    max_detections: int = 100,
) -> dict[str, object]:
    """Mean average precision over IoU thresholds and classes, exactly as pycocotools' COCOeval (bbox).

    Args:
        predictions: per image, `{"boxes": (D, 4) xyxy, "scores": (D,), "labels": (D,)}`.
        references: per image, `{"boxes": (G, 4) xyxy, "labels": (G,)}`.
        iou_thresholds: default COCO's 0.50:0.05:0.95.
        max_detections: highest-scoring predictions kept per image and class (COCO: 100). Inverted
            predicted boxes (x1 < x0 or y1 < y0) among them are ignored, as COCOeval's area range does.

    Returns:
        `{"map": mean over thresholds and classes with ground truth, "per_class": {label: AP},
        "per_threshold": {threshold: mAP}, "classes_without_ground_truth": [labels]}`. Classes with no
        ground truth are left out of the mean (as COCO); `map` is nan when no class has ground truth.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} prediction entries but {len(references)} reference entries")
    thresholds = np.round(np.linspace(0.5, 0.95, 10), 2) if iou_thresholds is None else np.asarray(iou_thresholds)
    recall_points = np.linspace(0.0, 1.0, 101)
    classes = sorted({int(c) for item in [*predictions, *references] for c in np.asarray(item["labels"]).ravel()})
    per_class, missing = {}, []
    for label in classes:
        precision = _class_precision(predictions, references, label, thresholds, recall_points, max_detections)
        if precision is None:
            missing.append(label)
        else:
            per_class[label] = precision
    if not per_class:
        return {"map": float("nan"), "per_class": {}, "per_threshold": {}, "classes_without_ground_truth": missing}
    stacked = np.stack(list(per_class.values()))  # (classes, T, R)
    return {
        "map": float(stacked.mean()),
        "per_class": {label: float(value.mean()) for label, value in per_class.items()},
        "per_threshold": {float(t): float(stacked[:, i].mean()) for i, t in enumerate(thresholds)},
        "classes_without_ground_truth": missing,
    }


def _class_precision(
    predictions: Sequence[dict], references: Sequence[dict], label: int, thresholds: np.ndarray,
    recall_points: np.ndarray, max_detections: int,
) -> np.ndarray | None:
    """Interpolated precision `(T, R)` of one class over all images, None when it has no ground truth."""
    flags, scores, num_gt = [], [], 0
    for prediction, reference in zip(predictions, references):
        gt = np.asarray(reference["boxes"], np.float64).reshape(-1, 4)[np.asarray(reference["labels"]).ravel() == label]
        keep = np.asarray(prediction["labels"]).ravel() == label
        boxes = np.asarray(prediction["boxes"], np.float64).reshape(-1, 4)[keep]
        image_scores = np.asarray(prediction["scores"], np.float64).ravel()[keep]
        if (gt[:, 2:] < gt[:, :2]).any():
            raise ValueError(f"references: a class-{label} box has x1 < x0 or y1 < y0 (boxes are [x0, y0, x1, y1])")
        order = np.argsort(-image_scores, kind="mergesort")[:max_detections]
        # an inverted predicted box has negative area, outside COCO's area range: ignored, not a false positive
        order = order[(boxes[order, 2:] >= boxes[order, :2]).all(axis=1)]
        flags.append(_match_image(boxes[order], gt, thresholds))
        scores.append(image_scores[order])
        num_gt += len(gt)
    if num_gt == 0:
        return None
    all_scores = np.concatenate(scores)
    order = np.argsort(-all_scores, kind="mergesort")
    true_positive = np.concatenate(flags, axis=1)[:, order]
    return _interpolated_precision(true_positive, num_gt, recall_points)


# ----------------------------------------------------------------------------------------------------------
# Text generation
# ----------------------------------------------------------------------------------------------------------
def tokenize_text(text: str) -> list[str]:
    """Lower-case words and numbers; punctuation is dropped ("Small L effusion." -> [small, l, effusion])."""
    if not isinstance(text, str):
        raise TypeError(f"text metrics need strings, got {type(text).__name__}")
    return _TOKEN.findall(text.lower())


def _references_per_prediction(predictions: Sequence[str], references: Sequence) -> list[list[str]]:
    """One list of reference strings per prediction (a bare string is a single reference)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference entries")
    grouped = [[ref] if isinstance(ref, str) else list(ref) for ref in references]
    if any(len(refs) == 0 for refs in grouped):
        raise ValueError("every prediction needs at least one reference")
    return grouped


def _ngrams(tokens: Sequence[str], order: int) -> Counter:
    return Counter(tuple(tokens[i : i + order]) for i in range(len(tokens) - order + 1))


def corpus_bleu(predictions: Sequence[str], references: Sequence, max_order: int = 4) -> dict[str, float]:
    """Corpus BLEU-1..`max_order` (Papineni et al.): clipped n-gram precisions, closest-reference brevity.

    Returns `{"bleu_1": ..., "bleu_4": ...}` in [0, 1]; BLEU-n is the geometric mean of the precisions of
    orders 1..n (uniform weights), without smoothing (0 when an order has no match).
    """
    grouped = _references_per_prediction(predictions, references)
    matches, totals = np.zeros(max_order), np.zeros(max_order)
    hypothesis_length = reference_length = 0
    for prediction, refs in zip(predictions, grouped):
        hyp = tokenize_text(prediction)
        ref_tokens = [tokenize_text(ref) for ref in refs]
        hypothesis_length += len(hyp)
        # closest reference length, the shorter on ties (sacrebleu / coco-caption)
        reference_length += min((abs(len(r) - len(hyp)), len(r)) for r in ref_tokens)[1]
        for order in range(1, max_order + 1):
            counts = _ngrams(hyp, order)
            best = Counter()
            for tokens in ref_tokens:
                best |= _ngrams(tokens, order)
            matches[order - 1] += sum((counts & best).values())
            totals[order - 1] += max(len(hyp) - order + 1, 0)
    brevity = _brevity_penalty(hypothesis_length, reference_length)
    scores = {}
    for order in range(1, max_order + 1):
        m, t = matches[:order], totals[:order]
        if (m == 0).any() or (t == 0).any():
            scores[f"bleu_{order}"] = 0.0
        else:
            scores[f"bleu_{order}"] = float(brevity * math.exp(np.mean(np.log(m / t))))
    return scores


def _brevity_penalty(hypothesis_length: int, reference_length: int) -> float:
    if hypothesis_length == 0:
        return 0.0
    return 1.0 if hypothesis_length >= reference_length else math.exp(1 - reference_length / hypothesis_length)


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Longest common subsequence length, one row of the DP table at a time (vectorised over `b`)."""
    if not a or not b:
        return 0
    b_array = np.array(b, dtype=object)
    row = np.zeros(len(b) + 1, dtype=np.int64)
    for token in a:
        diagonal = row[:-1] + (b_array == token)
        row = np.concatenate([[0], np.maximum.accumulate(np.maximum(diagonal, row[1:]))])
    return int(row[-1])


def rouge_l(predictions: Sequence[str], references: Sequence, beta: float = 1.0) -> float:
    """Mean sentence-level ROUGE-L F-measure.

    With several references, precision and recall are each maximised over them (coco-caption); with one
    reference and `beta=1` this is rouge-score's `rougeL` F1; `beta=1.2` gives coco-caption's ROUGE_L.
    """
    grouped = _references_per_prediction(predictions, references)
    scores = []
    for prediction, refs in zip(predictions, grouped):
        hyp = tokenize_text(prediction)
        best_precision = best_recall = 0.0
        for ref in refs:
            ref_tokens = tokenize_text(ref)
            lcs = _lcs_length(ref_tokens, hyp)
            best_precision = max(best_precision, lcs / len(hyp) if hyp else 0.0)
            best_recall = max(best_recall, lcs / len(ref_tokens) if ref_tokens else 0.0)
        if best_precision == 0 or best_recall == 0:
            scores.append(0.0)
        else:
            scores.append((1 + beta**2) * best_precision * best_recall / (best_recall + beta**2 * best_precision))
    return float(np.mean(scores))


def cider_d(predictions: Sequence[str], references: Sequence, max_order: int = 4, sigma: float = 6.0) -> float:
    """CIDEr-D of coco-caption (`pycocoevalcap.cider.Cider`): TF-IDF n-gram cosine with clipping and a
    Gaussian length penalty, averaged over orders and references, ×10. Document frequencies come from the
    references of this corpus, so the score depends on the whole evaluated set.

    As in coco-caption, the "length" of the penalty is the number of bigrams of a sentence.
    """
    grouped = _references_per_prediction(predictions, references)
    hypotheses = [_all_ngrams(tokenize_text(p), max_order) for p in predictions]
    refs = [[_all_ngrams(tokenize_text(r), max_order) for r in group] for group in grouped]
    document_frequency = Counter(gram for group in refs for gram in set().union(*group))
    log_corpus = math.log(float(len(refs)))

    def vectorise(counts: Counter) -> tuple[list[dict], np.ndarray, int]:
        vectors = [dict() for _ in range(max_order)]
        for gram, term_frequency in counts.items():
            vectors[len(gram) - 1][gram] = term_frequency * (log_corpus - math.log(max(1.0, document_frequency[gram])))
        norms = np.array([math.sqrt(sum(v * v for v in vec.values())) for vec in vectors])
        return vectors, norms, sum(c for gram, c in counts.items() if len(gram) == 2)

    scores = []
    for hypothesis, group in zip(hypotheses, refs):
        hyp_vectors, hyp_norms, hyp_length = vectorise(hypothesis)
        total = np.zeros(max_order)
        for reference in group:
            ref_vectors, ref_norms, ref_length = vectorise(reference)
            total += _cider_similarity(hyp_vectors, ref_vectors, hyp_norms, ref_norms, hyp_length - ref_length, sigma)
        scores.append(total.mean() / len(group) * 10.0)
    return float(np.mean(scores))


def _all_ngrams(tokens: Sequence[str], max_order: int) -> Counter:
    counts = Counter()
    for order in range(1, max_order + 1):
        counts.update(_ngrams(tokens, order))
    return counts


def _cider_similarity(
    hyp: list[dict], ref: list[dict], hyp_norms: np.ndarray, ref_norms: np.ndarray, length_gap: int, sigma: float
) -> np.ndarray:
    """Per-order clipped cosine of two TF-IDF vectors, times the Gaussian length penalty."""
    values = np.zeros(len(hyp))
    for order, (h, r) in enumerate(zip(hyp, ref)):
        values[order] = sum(min(weight, r.get(gram, 0.0)) * r.get(gram, 0.0) for gram, weight in h.items())
        if hyp_norms[order] != 0 and ref_norms[order] != 0:
            values[order] /= hyp_norms[order] * ref_norms[order]
    return values * math.exp(-(length_gap**2) / (2 * sigma**2))


__all__ = [
    "accuracy",
    "binary_auroc",
    "box_iou",
    "cider_d",
    "corpus_bleu",
    "detection_map",
    "dice_per_image",
    "mask_iou",
    "multilabel_auroc",
    "pointing_game",
    "precision_at_k",
    "rouge_l",
    "tokenize_text",
]
