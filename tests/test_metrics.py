"""Evaluation metrics against established implementations, the local `evaluate` modules, task protocols."""

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, jaccard_score, roc_auc_score

from modeling_place.evaluation import METRIC_NAMES, load_metric
from modeling_place.evaluation.functional import (
    accuracy,
    cider_d,
    corpus_bleu,
    detection_map,
    dice_per_image,
    mask_iou,
    multilabel_auroc,
    pointing_game,
    precision_at_k,
    rouge_l,
    tokenize_text,
)
from modeling_place.processing import PlaceImageProcessor

RNG = np.random.default_rng(0)


# ------------------------------------------------------------------------------------------- classification
def test_auroc_matches_sklearn_with_ties_and_skips_labels_without_positives():
    labels = RNG.integers(0, 2, (60, 4))
    labels[:, 2] = 0  # no positives: skipped and reported
    scores = np.round(RNG.random((60, 4)), 1)  # many ties
    result = multilabel_auroc(scores, labels, ["a", "b", "c", "d"])
    expected = {name: roc_auc_score(labels[:, i], scores[:, i]) for i, name in enumerate("abcd") if name != "c"}
    assert result["skipped_labels"] == ["c"]
    for name, value in expected.items():
        assert abs(result["per_label"][name] - value) < 1e-12
    assert abs(result["auroc"] - np.mean(list(expected.values()))) < 1e-12
    assert np.isnan(multilabel_auroc(scores[:, 2:3], labels[:, 2:3])["auroc"])


def test_accuracy_matches_sklearn():
    predictions, references = RNG.integers(0, 4, 50), RNG.integers(0, 4, 50)
    assert accuracy(predictions, references) == pytest.approx(accuracy_score(references, predictions), abs=1e-12)
    with pytest.raises(ValueError, match="shape"):
        accuracy([1, 2], [1])


# ---------------------------------------------------------------------------------------------- masks / maps
def test_dice_and_iou_match_sklearn_including_empty_masks():
    predictions = RNG.random((6, 12, 12)) > 0.6
    references = RNG.random((6, 12, 12)) > 0.7
    predictions[4], references[4] = False, False  # both empty: 1
    predictions[5] = False  # empty prediction, non-empty reference: 0
    dice, iou = dice_per_image(predictions, references), mask_iou(predictions, references)
    for i in range(6):
        expected_dice = f1_score(references[i].ravel(), predictions[i].ravel(), zero_division=1.0)
        expected_iou = jaccard_score(references[i].ravel(), predictions[i].ravel(), zero_division=1.0)
        assert abs(dice[i] - expected_dice) < 1e-12 and abs(iou[i] - expected_iou) < 1e-12
    assert dice[4] == 1.0 and dice[5] == 0.0


def test_pointing_game_hits_only_inside_the_mask():
    maps = np.zeros((3, 5, 5))
    maps[0, 1, 1] = maps[1, 4, 4] = 1.0  # third map is flat: argmax is the first pixel
    masks = np.zeros((3, 5, 5), dtype=bool)
    masks[:, :2, :2] = True
    np.testing.assert_array_equal(pointing_game(maps, masks), [1.0, 0.0, 1.0])


def test_precision_at_k_matches_brute_force():
    similarity = RNG.random((20, 30))
    query_labels, candidate_labels = RNG.integers(0, 3, 20), RNG.integers(0, 3, 30)
    for k in (1, 5, 10):
        expected = np.mean([
            np.mean([candidate_labels[j] == query_labels[q] for j in sorted(range(30), key=lambda j: -similarity[q, j])[:k]])
            for q in range(20)
        ])
        assert precision_at_k(similarity, query_labels, candidate_labels, k) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="k must"):
        precision_at_k(similarity, query_labels, candidate_labels, 31)


# ------------------------------------------------------------------------------------------------ detection
def _random_detection_set(num_images: int = 8, seed: int = 0):
    """Jittered ground truth plus false positives; image 3 has no prediction, class 2 only false positives."""
    rng = np.random.default_rng(seed)
    predictions, references = [], []
    for index in range(num_images):
        gt = rng.uniform(0, 80, (rng.integers(0, 4), 2))
        gt_boxes = np.concatenate([gt, gt + rng.uniform(5, 30, gt.shape)], axis=1)
        gt_labels = rng.integers(0, 2, len(gt_boxes))  # classes 0 and 1 have ground truth
        jitter = gt_boxes + rng.normal(0, 3, gt_boxes.shape)
        extra = rng.uniform(0, 80, (rng.integers(0, 3), 2))
        extra_boxes = np.concatenate([extra, extra + rng.uniform(5, 30, extra.shape)], axis=1)
        boxes = np.concatenate([jitter, extra_boxes]) if index != 3 else np.zeros((0, 4))  # image 3: no predictions
        labels = np.concatenate([gt_labels, rng.integers(0, 3, len(extra_boxes))]) if index != 3 else np.zeros(0, int)
        if index == 0:  # a guaranteed prediction of class 2, which has no ground truth anywhere
            boxes, labels = np.concatenate([boxes, [[5.0, 5.0, 20.0, 20.0]]]), np.concatenate([labels, [2]])
        predictions.append({"boxes": boxes, "scores": rng.random(len(boxes)), "labels": labels})
        references.append({"boxes": gt_boxes, "labels": gt_labels})
    return predictions, references


def _pycocotools_map(predictions, references, thresholds):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(box):
        return [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]

    annotations = []
    for image, reference in enumerate(references):
        for box, label in zip(reference["boxes"], reference["labels"]):
            bbox = xywh(box)
            annotations.append({"id": len(annotations) + 1, "image_id": image, "category_id": int(label), "bbox": bbox,
                                "area": bbox[2] * bbox[3], "iscrowd": 0})
    gt = COCO()
    gt.dataset = {"images": [{"id": i} for i in range(len(references))], "annotations": annotations,
                  "categories": [{"id": c} for c in range(3)]}
    gt.createIndex()
    detections = [{"image_id": image, "category_id": int(label), "bbox": xywh(box), "score": float(score)}
                  for image, p in enumerate(predictions) for box, label, score in zip(p["boxes"], p["labels"], p["scores"])]
    evaluator = COCOeval(gt, gt.loadRes(detections), "bbox")
    evaluator.params.iouThrs = np.asarray(thresholds)
    evaluator.evaluate()
    evaluator.accumulate()
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # area "all", maxDets 100
    return float(precision[precision > -1].mean())


@pytest.mark.parametrize("thresholds", [np.round(np.linspace(0.5, 0.95, 10), 2), np.round(np.linspace(0.4, 0.75, 8), 2)])
def test_detection_map_matches_pycocotools(thresholds, capsys):
    predictions, references = _random_detection_set()
    result = detection_map(predictions, references, thresholds)
    capsys.readouterr()  # pycocotools prints progress
    assert abs(result["map"] - _pycocotools_map(predictions, references, thresholds)) < 1e-6
    assert result["classes_without_ground_truth"] == [2] and set(result["per_class"]) == {0, 1}


def test_detection_map_edge_cases():
    reference = [{"boxes": [[0, 0, 10, 10]], "labels": [0]}]
    empty = [{"boxes": np.zeros((0, 4)), "scores": [], "labels": []}]
    assert detection_map(empty, reference)["map"] == 0.0
    perfect = [{"boxes": [[0, 0, 10, 10]], "scores": [0.9], "labels": [0]}]
    assert detection_map(perfect, reference)["map"] == pytest.approx(1.0, abs=1e-12)
    assert np.isnan(detection_map(perfect, [{"boxes": np.zeros((0, 4)), "labels": []}])["map"])


# --------------------------------------------------------------------------------------------------- text
PREDICTIONS = [
    "The heart is mildly enlarged. Small left pleural effusion.",
    "No pneumothorax. Lungs are clear.",
    "Moderate right effusion with adjacent atelectasis.",
    "Endotracheal tube in standard position.",
]
REFERENCES = [
    "Mild cardiomegaly. There is a small left pleural effusion.",
    "Lungs are clear. No pleural effusion or pneumothorax.",
    "Moderate right pleural effusion and basal atelectasis.",
    "Endotracheal tube terminates 4 cm above the carina.",
]


def _joined(texts):
    return [" ".join(tokenize_text(t)) for t in texts]


def test_tokenizer_lowercases_and_drops_punctuation():
    assert tokenize_text("Small L. effusion, 4 cm.") == ["small", "l", "effusion", "4", "cm"]


def test_bleu_matches_sacrebleu_and_coco_caption():
    import sacrebleu
    from pycocoevalcap.bleu.bleu import Bleu

    ours = corpus_bleu(PREDICTIONS, REFERENCES)
    for order in range(1, 5):
        reference = sacrebleu.metrics.BLEU(tokenize="none", smooth_method="none", max_ngram_order=order, force=True)
        expected = reference.corpus_score(_joined(PREDICTIONS), [_joined(REFERENCES)]).score / 100
        assert abs(ours[f"bleu_{order}"] - expected) < 1e-6
    coco, _ = Bleu(4).compute_score({i: [r] for i, r in enumerate(_joined(REFERENCES))},
                                    {i: [p] for i, p in enumerate(_joined(PREDICTIONS))}, verbose=0)
    np.testing.assert_allclose([ours[f"bleu_{n}"] for n in range(1, 5)], coco, atol=1e-6)


def test_bleu_without_any_match_is_zero():
    assert corpus_bleu(["alpha beta gamma delta"], ["one two three four"]) == {f"bleu_{n}": 0.0 for n in range(1, 5)}


def test_rouge_l_matches_rouge_score_and_coco_caption():
    from pycocoevalcap.rouge.rouge import Rouge
    from rouge_score import rouge_scorer

    class Tokens:
        def tokenize(self, text):
            return tokenize_text(text)

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=Tokens())
    expected = np.mean([scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(PREDICTIONS, REFERENCES)])
    assert abs(rouge_l(PREDICTIONS, REFERENCES) - expected) < 1e-9
    coco, _ = Rouge().compute_score({i: [r] for i, r in enumerate(_joined(REFERENCES))},
                                    {i: [p] for i, p in enumerate(_joined(PREDICTIONS))})
    assert abs(rouge_l(PREDICTIONS, REFERENCES, beta=1.2) - coco) < 1e-9


def test_cider_matches_coco_caption_with_multiple_references():
    from pycocoevalcap.cider.cider import Cider

    references = [[r, REFERENCES[(i + 1) % 4]] for i, r in enumerate(REFERENCES)]
    expected, _ = Cider().compute_score({i: _joined(r) for i, r in enumerate(references)},
                                        {i: [p] for i, p in enumerate(_joined(PREDICTIONS))})
    assert abs(cider_d(PREDICTIONS, references) - expected) < 1e-6


def test_text_metrics_reject_mismatched_inputs():
    with pytest.raises(ValueError, match="reference"):
        corpus_bleu(PREDICTIONS, REFERENCES[:2])
    with pytest.raises(TypeError, match="strings"):
        rouge_l([None], ["a"])


# ---------------------------------------------------------------------------------------- evaluate modules
def test_every_metric_loads_as_an_evaluate_module():
    assert set(METRIC_NAMES) == {"accuracy", "auroc", "bleu", "cider", "cnr", "detection_map", "dice", "miou",
                                 "miou_sweep", "pixel_auroc", "pointing_game", "precision_at_k", "rouge_l"}
    auroc = load_metric("auroc")
    scores, labels = RNG.random((20, 3)), RNG.integers(0, 2, (20, 3))
    auroc.add_batch(predictions=scores[:10].tolist(), references=labels[:10].tolist())
    auroc.add_batch(predictions=scores[10:].tolist(), references=labels[10:].tolist())
    assert auroc.compute()["auroc"] == pytest.approx(multilabel_auroc(scores, labels)["auroc"], abs=1e-12)
    bleu = load_metric("bleu").compute(predictions=PREDICTIONS, references=[[r] for r in REFERENCES])
    assert bleu == pytest.approx(corpus_bleu(PREDICTIONS, REFERENCES), abs=1e-12)
    predictions, references = _random_detection_set(4)
    as_lists = lambda items: [{k: np.asarray(v).tolist() for k, v in item.items()} for item in items]  # noqa: E731
    result = load_metric("detection_map").compute(predictions=as_lists(predictions), references=as_lists(references))
    assert result["map"] == pytest.approx(detection_map(predictions, references, np.linspace(0.4, 0.75, 8))["map"])
    assert result["coco_map"] == pytest.approx(detection_map(predictions, references)["map"])


def test_mask_metric_modules_match_functions():
    maps = RNG.random((3, 6, 6)).astype(np.float32)
    masks = (RNG.random((3, 6, 6)) > 0.5).astype(np.uint8)
    miou = load_metric("miou").compute(predictions=maps.tolist(), references=masks.tolist())["miou"]
    assert miou == pytest.approx(mask_iou(maps >= 0.5, masks).mean())
    hits = load_metric("pointing_game").compute(predictions=maps.tolist(), references=masks.tolist())["pointing_game"]
    assert hits == pytest.approx(pointing_game(maps, masks).mean())
    dice = load_metric("dice").compute(predictions=masks.tolist(), references=masks[::-1].tolist())["dice"]
    assert dice == pytest.approx(dice_per_image(masks, masks[::-1]).mean())


# ------------------------------------------------------------------------------------------ post-processing
def test_crop_geometry_round_trips_boxes_and_masks():
    processor = PlaceImageProcessor()  # fit into 256, pad, crop 224
    boxes = np.array([[40.0, 60.0, 200.0, 300.0], [0.0, 0.0, 10.0, 10.0]])
    normalised, keep = processor.boxes_to_model(boxes, height=400, width=300)
    assert keep.tolist() == [True, False]  # the corner box falls in the cropped-away margin
    geometry = processor.crop_geometry(400, 300)
    pixels = torch.cat([normalised[:, :2] - normalised[:, 2:] / 2, normalised[:, :2] + normalised[:, 2:] / 2], 1) * 224
    torch.testing.assert_close(geometry.to_original(pixels[:1], 400, 300), torch.tensor(boxes[:1], dtype=torch.float32))
    mask = np.zeros((400, 300), dtype=np.uint8)
    mask[100:300, 50:250] = 1
    model_mask = processor.masks_to_model(mask)
    assert model_mask.shape == (224, 224)
    logits = torch.stack([1 - model_mask.float(), model_mask.float()])[None] * 10
    back = processor.post_process_semantic_segmentation({"logits": logits}, target_sizes=[(400, 300)])[0]
    assert back.shape == (400, 300) and mask_iou(back.numpy(), mask)[0] > 0.97
