"""Every local `evaluate` module loads and computes without the PLACE package, and agrees with its functions.

One subprocess evaluates all modules from a copy of `metrics/` outside the checkout, with an import blocker that
makes `modeling_place` (and the repository's `processing`) unimportable; the test process compares its results
with `modeling_place.evaluation.functional` / `.grounding` and checks that bad input is refused clearly.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from modeling_place.evaluation import METRICS_DIR, METRIC_NAMES
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
)
from modeling_place.evaluation.grounding import contrast_to_noise, iou_sweep, pixel_auroc
from tests.test_metrics import PREDICTIONS, REFERENCES, _random_detection_set

# Runs in the subprocess: the blocker goes first on sys.meta_path, so the editable install cannot serve the package.
_RUNNER = r"""
import importlib.abc, json, sys
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("modeling_place", "processing"):
            raise ModuleNotFoundError(f"blocked: {name}")
sys.meta_path.insert(0, Blocker())
import evaluate
cases = json.load(open(sys.argv[1]))
results = {}
for key, case in cases.items():
    try:
        results[key] = evaluate.load(case["module"]).compute(**case["inputs"])
    except Exception as error:  # the test checks which cases must fail, and how
        results[key] = {"error": f"{type(error).__name__}: {error}"}
assert not any(name.startswith("modeling_place") for name in sys.modules)
json.dump(results, open(sys.argv[2], "w"), default=lambda value: str(value))
"""

RNG = np.random.default_rng(3)
SCORES, LABELS = np.round(RNG.random((24, 3)), 1), RNG.integers(0, 2, (24, 3))
CLASSES = (RNG.integers(0, 4, 30), RNG.integers(0, 4, 30))
MAPS = RNG.random((3, 8, 8)).astype(np.float32)
MASKS = (RNG.random((3, 8, 8)) > 0.5).astype(np.uint8)
SQUARES = np.zeros((3, 8, 8), np.uint8)
SQUARES[0, 1:5, 1:5], SQUARES[1, 3:7, 2:6], SQUARES[2, 0:2, 0:3] = 1, 1, 1
SIMILARITY, QUERIES, CANDIDATES = RNG.random((12, 20)), RNG.integers(0, 3, 12), RNG.integers(0, 3, 20)
MULTI_REFERENCES = [[r, REFERENCES[(i + 1) % 4]] for i, r in enumerate(REFERENCES)]


def _lists(items):
    return [{key: np.asarray(value).tolist() for key, value in item.items()} for item in items]


def _cases() -> dict[str, tuple[str, dict]]:
    detections, references = _random_detection_set()
    grounding = {"predictions": MAPS.tolist(), "references": SQUARES.tolist()}
    bad_boxes = _lists(detections)
    bad_boxes[0]["scores"] = bad_boxes[0]["scores"][:-1]
    return {
        "auroc": ("auroc", {"predictions": SCORES.tolist(), "references": LABELS.tolist()}),
        "accuracy": ("accuracy", {"predictions": CLASSES[0].tolist(), "references": CLASSES[1].tolist()}),
        "dice": ("dice", {"predictions": MASKS.tolist(), "references": MASKS[::-1].tolist()}),
        "miou": ("miou", {"predictions": MAPS.tolist(), "references": MASKS.tolist()}),
        "pointing_game": ("pointing_game", {"predictions": MAPS.tolist(), "references": MASKS.tolist()}),
        "precision_at_k": ("precision_at_k", {"predictions": SIMILARITY.tolist(), "references": QUERIES.tolist(),
                                              "candidate_labels": CANDIDATES.tolist(), "k": [1, 5]}),
        "detection_map": ("detection_map", {"predictions": _lists(detections), "references": _lists(references)}),
        "bleu": ("bleu", {"predictions": PREDICTIONS, "references": REFERENCES}),
        "rouge_l": ("rouge_l", {"predictions": PREDICTIONS, "references": REFERENCES}),
        "rouge_l_coco": ("rouge_l", {"predictions": PREDICTIONS, "references": REFERENCES, "beta": 1.2}),
        "cider": ("cider", {"predictions": PREDICTIONS, "references": MULTI_REFERENCES}),
        "cnr": ("cnr", grounding), "miou_sweep": ("miou_sweep", grounding), "pixel_auroc": ("pixel_auroc", grounding),
        "bad_auroc_uncertain": ("auroc", {"predictions": [0.2, 0.7, 0.4], "references": [0, 1, -1]}),
        "bad_auroc_nan": ("auroc", {"predictions": [0.2, float("nan"), 0.4], "references": [0, 1, 1]}),
        "bad_boxes": ("detection_map", {"predictions": bad_boxes, "references": _lists(references)}),
        "bad_grounding_nan": ("cnr", {"predictions": np.where(SQUARES, np.nan, MAPS).tolist(),
                                      "references": SQUARES.tolist()}),
    }


@pytest.fixture(scope="module")
def standalone_results(tmp_path_factory) -> dict:
    """Each case computed by the module copied outside the repository, in a process that cannot import the package."""
    root = tmp_path_factory.mktemp("standalone")
    shutil.copytree(METRICS_DIR, root / "metrics", ignore=shutil.ignore_patterns("__pycache__"))
    cases = {key: {"module": str(root / "metrics" / name), "inputs": inputs}
             for key, (name, inputs) in _cases().items()}
    (root / "cases.json").write_text(json.dumps(cases))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(root), "HF_HOME": str(root / "hf"),
           "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-I", "-c", _RUNNER, str(root / "cases.json"), str(root / "results.json")]
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((root / "results.json").read_text())


def test_every_module_ships_requirements_and_citations_and_imports_no_package_code():
    for name in METRIC_NAMES:
        source = (METRICS_DIR / name / f"{name}.py").read_text()
        assert "modeling_place" not in source.replace("modeling_place/evaluation/metrics", ""), name
        assert 'citation=""' not in source and "_CITATION = \"\"\"@" in source, name
        assert (METRICS_DIR / name / "requirements.txt").read_text().strip(), name


def test_modules_compute_without_the_package_and_agree_with_its_functions(standalone_results):
    r = standalone_results
    assert not [key for key, value in r.items() if "error" in value and not key.startswith("bad_")]
    auroc = multilabel_auroc(SCORES, LABELS)
    assert r["auroc"]["auroc"] == pytest.approx(auroc["auroc"], abs=1e-12)
    assert r["accuracy"]["accuracy"] == pytest.approx(accuracy(*CLASSES), abs=1e-12)
    assert r["dice"]["dice"] == pytest.approx(dice_per_image(MASKS, MASKS[::-1]).mean(), abs=1e-12)
    assert r["miou"]["miou"] == pytest.approx(mask_iou(MAPS >= 0.5, MASKS).mean(), abs=1e-12)
    assert r["pointing_game"]["pointing_game"] == pytest.approx(pointing_game(MAPS, MASKS).mean(), abs=1e-12)
    for k in (1, 5):
        expected = precision_at_k(SIMILARITY, QUERIES, CANDIDATES, k)
        assert r["precision_at_k"][f"precision_at_{k}"] == pytest.approx(expected, abs=1e-12)
    detections, references = _random_detection_set()
    benchmark = detection_map(detections, references, np.linspace(0.4, 0.75, 8))["map"]
    assert r["detection_map"]["map"] == pytest.approx(benchmark, abs=1e-6)
    assert r["detection_map"]["coco_map"] == pytest.approx(detection_map(detections, references)["map"], abs=1e-6)
    assert r["detection_map"]["classes_without_ground_truth"] == [2]


def test_text_and_grounding_modules_agree_with_the_package(standalone_results):
    r = standalone_results
    assert r["bleu"] == pytest.approx(corpus_bleu(PREDICTIONS, REFERENCES), abs=1e-6)
    assert r["rouge_l"]["rouge_l"] == pytest.approx(rouge_l(PREDICTIONS, REFERENCES), abs=1e-9)
    assert r["rouge_l_coco"]["rouge_l"] == pytest.approx(rouge_l(PREDICTIONS, REFERENCES, beta=1.2), abs=1e-9)
    assert r["cider"]["cider"] == pytest.approx(cider_d(PREDICTIONS, MULTI_REFERENCES), abs=1e-6)
    signed = contrast_to_noise(MAPS, SQUARES)
    assert r["cnr"]["signed_cnr"] == pytest.approx(signed.mean(), rel=1e-5)
    assert r["cnr"]["cnr"] == pytest.approx(np.abs(signed).mean(), rel=1e-5)
    assert r["miou_sweep"]["miou_sweep"] == pytest.approx(iou_sweep(MAPS, SQUARES).mean(), rel=1e-6)
    assert r["pixel_auroc"]["pixel_auroc"] == pytest.approx(pixel_auroc(MAPS, SQUARES).mean(), rel=1e-6)


def test_bad_input_is_refused_with_a_clear_error(standalone_results):
    r = standalone_results
    assert "ValueError" in r["bad_auroc_uncertain"]["error"] and "-1" in r["bad_auroc_uncertain"]["error"]
    assert "ValueError" in r["bad_auroc_nan"]["error"] and "NaN" in r["bad_auroc_nan"]["error"]
    assert "ValueError" in r["bad_boxes"]["error"] and "scores" in r["bad_boxes"]["error"]
    assert "ValueError" in r["bad_grounding_nan"]["error"] and "NaN" in r["bad_grounding_nan"]["error"]
