"""Every pipeline a model card promises, run as a user runs it: from a pushed repository id, on a real radiograph.

One module-scoped set-up saves a micro pretrained model and three heads, publishes them to the local Hub
(`tests.hub_server.LocalHub`) with `examples/push_to_hub.py`, then calls `transformers.pipeline(<the card's
pipeline_tag>, model=<repo id>)` in two subprocesses: one with the package imported (no `trust_remote_code`, stdin
closed, so a remote-code prompt would fail the run) and one where the package cannot be imported
(`trust_remote_code=True`, the repositories' own code). Each output is compared with the model called directly
here. Report generation (`image-text-to-text`) has its own file, tests/test_pipeline_report_generation.py.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file

from modeling_place import (
    PlaceConfig,
    PlaceForImageClassification,
    PlaceForObjectDetection,
    PlaceForSemanticSegmentation,
    PlaceModel,
)
from modeling_place.processing import PLACE_HYPOTHESIS_TEMPLATE, PlaceImageProcessor
from modeling_place.publishing import VARIANTS
from tests.helpers import micro_config
from tests.hub_server import LocalHub
from tests.test_hub import PUBLISH_SCRIPT, REPO_ROOT, _client_env, _processor, _run

RADIOGRAPH = REPO_ROOT.parent / "shared" / "data" / "real_cxr" / "nih_00000001_000.png"
ORG = "place-org/pipelines"
CANDIDATES = ["pleural effusion", "pneumothorax", "cardiomegaly"]
LABELS = {
    "classification": ["Cardiomegaly", "Edema", "Pleural Effusion"],
    "segmentation": ["background", "pneumothorax"],
    "detection": ["Opacity", "Nodule"],
}
HEAD_CLASSES = {"classification": PlaceForImageClassification, "segmentation": PlaceForSemanticSegmentation,
                "detection": PlaceForObjectDetection}
# variant -> (task: its card's pipeline tag, keyword arguments of the call)
CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "pretrained": (VARIANTS["pretrained"].pipeline_tag,
                   {"candidate_labels": CANDIDATES, "hypothesis_template": PLACE_HYPOTHESIS_TEMPLATE}),
    "features": ("image-feature-extraction", {}),
    "classification": (VARIANTS["classification"].pipeline_tag, {}),
    "segmentation": (VARIANTS["segmentation"].pipeline_tag, {}),
    "detection": (VARIANTS["detection"].pipeline_tag, {"threshold": 0.0}),  # every box of a random micro head
}

PIPELINE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    spec = json.loads(open(sys.argv[1]).read())
    if spec["package"]:
        import modeling_place  # registers PLACE with the Auto classes: local code, no remote-code question
    else:
        class BlockPackages:  # only the repositories' custom code may be used, never the installed package
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "modeling_place":
                    raise ImportError("blocked " + name)
        sys.meta_path.insert(0, BlockPackages())
    import numpy as np, torch
    from PIL import Image
    from safetensors.torch import save_file
    from transformers import pipeline
    torch.set_num_threads(2)
    options = {} if spec["package"] else {"trust_remote_code": True}
    results, masks = {}, {}
    for name, (task, repo, call) in spec["calls"].items():
        pipe = pipeline(task, model=repo, **options)
        out = pipe(spec["image"], **call)
        for index, item in enumerate(out if task == "image-segmentation" else []):
            masks[f"{name}.{index}"] = torch.from_numpy(np.array(item.pop("mask")))
        results[name] = {"output": out, "module": type(pipe.model).__module__, "class": type(pipe.model).__name__}
    save_file(masks, spec["out"] + ".safetensors")
    open(spec["out"] + ".json", "w").write(json.dumps(results))
    """
)


# ------------------------------------------------------------------------------------------------ set-up
def _save_models(tmp: Path) -> dict[str, Path]:
    """A micro pretrained folder (full processor) and three heads saved three ways: own full processor
    (classification), none (segmentation: `--processor-from` the base), image processor only (detection)."""
    processor = _processor()
    torch.manual_seed(0)
    PlaceModel(PlaceConfig(**micro_config())).save_pretrained(tmp / "pretrained")
    processor.save_pretrained(tmp / "pretrained")
    folders = {"pretrained": tmp / "pretrained"}
    for variant, names in LABELS.items():
        options = {"problem_type": "multi_label_classification"} if variant == "classification" else {}
        config = PlaceConfig(**micro_config(num_labels=len(names), id2label=dict(enumerate(names)), **options))
        torch.manual_seed(1)
        HEAD_CLASSES[variant](config).save_pretrained(tmp / variant)
        if variant == "classification":
            processor.save_pretrained(tmp / variant)
        elif variant == "detection":
            processor.image_processor.save_pretrained(tmp / variant)
        folders[variant] = tmp / variant
    return folders


def _publish_commands(folders: dict[str, Path]) -> list[list[str]]:
    commands = []
    for variant, folder in folders.items():
        command = [str(folder), "--repo-id", f"{ORG}-{variant}"]
        if variant == "segmentation":
            command += ["--processor-from", str(folders["pretrained"])]
        commands.append(command)
    return commands


def _spec(tmp: Path, package: bool) -> Path:
    repo = {variant: f"{ORG}-{'pretrained' if variant == 'features' else variant}" for variant in CALLS}
    calls = {variant: (task, repo[variant], call) for variant, (task, call) in CALLS.items()}
    out = tmp / ("with_package" if package else "remote_code")
    spec = {"package": package, "image": str(RADIOGRAPH), "calls": calls, "out": str(out)}
    path = tmp / f"{out.name}.spec.json"
    path.write_text(json.dumps(spec))
    return path


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("pipelines")
    folders = _save_models(tmp)
    (tmp / "commands.json").write_text(json.dumps(_publish_commands(folders)))
    with LocalHub() as hub:
        publish = [str(REPO_ROOT / "examples" / "push_to_hub.py"), str(tmp / "commands.json"), str(tmp / "oids.json")]
        _run(PUBLISH_SCRIPT, publish, _client_env(hub, tmp / "hf_publish", True), REPO_ROOT)
        runs = {}
        for package in (True, False):
            _run(PIPELINE_SCRIPT, [str(_spec(tmp, package))], _client_env(hub, tmp / f"hf_{package}", package), tmp)
            out = tmp / ("with_package" if package else "remote_code")
            runs[package] = {"results": json.loads(Path(f"{out}.json").read_text()),
                             "masks": load_file(f"{out}.safetensors")}
        yield {"folders": folders, "runs": runs, "hub": hub}


# ------------------------------------------------------------------------------------------------ references
def _pixels(folder: Path) -> torch.Tensor:
    return PlaceImageProcessor.from_pretrained(folder)(images=[PIL.Image.open(RADIOGRAPH)], return_tensors="pt")["pixel_values"]


def _zero_shot_reference(folder: Path) -> list[dict[str, Any]]:
    from transformers import AutoProcessor

    model, processor = PlaceModel.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)
    prompts = [PLACE_HYPOTHESIS_TEMPLATE.format(label) for label in CANDIDATES]
    batch = processor(images=[PIL.Image.open(RADIOGRAPH)] * len(prompts), text=prompts)
    with torch.no_grad():
        scores = model(**batch).logits_per_image[0].softmax(-1).tolist()
    return sorted(({"score": s, "label": c} for s, c in zip(scores, CANDIDATES)), key=lambda item: -item["score"])


def _image_processor(folders: dict[str, Path], variant: str) -> PlaceImageProcessor:
    # the segmentation head was saved without one: its repository got the pretrained folder's
    return PlaceImageProcessor.from_pretrained(folders["pretrained" if variant == "segmentation" else variant])


def _head_outputs(folders: dict[str, Path], variant: str) -> tuple[Any, Any]:
    head = HEAD_CLASSES[variant].from_pretrained(folders[variant]).eval()
    pixels = _image_processor(folders, variant)(images=[PIL.Image.open(RADIOGRAPH)], return_tensors="pt")
    with torch.no_grad():
        return head, head(pixel_values=pixels["pixel_values"])


def _assert_scored_items_equal(actual: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert [item["label"] for item in actual] == [item["label"] for item in expected]
    np.testing.assert_allclose([i["score"] for i in actual], [i["score"] for i in expected], rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("package", [True, False], ids=["with_package", "remote_code"])
def test_every_pipeline_runs_from_a_repo_id_with_its_own_code(pipelines, package):
    results = pipelines["runs"][package]["results"]
    assert set(results) == set(CALLS)
    for variant, result in results.items():
        expected_class = "PlaceModel" if variant in ("pretrained", "features") else HEAD_CLASSES[variant].__name__
        assert result["class"] == expected_class
        origin = "modeling_place" if package else "transformers_modules"
        assert result["module"].startswith(origin), (variant, result["module"])


@pytest.mark.parametrize("package", [True, False], ids=["with_package", "remote_code"])
def test_zero_shot_pipeline_scores_are_the_models_own(pipelines, package):
    output = pipelines["runs"][package]["results"]["pretrained"]["output"]
    assert set(output[0]) == {"score", "label"} and sum(item["score"] for item in output) == pytest.approx(1.0)
    _assert_scored_items_equal(output, _zero_shot_reference(pipelines["folders"]["pretrained"]))


@pytest.mark.parametrize("package", [True, False], ids=["with_package", "remote_code"])
def test_feature_extraction_pipeline_returns_the_global_image_embedding(pipelines, package):
    output = pipelines["runs"][package]["results"]["features"]["output"]
    folder = pipelines["folders"]["pretrained"]
    with torch.no_grad():
        expected = PlaceModel.from_pretrained(folder).eval().get_image_features(_pixels(folder)).pooler_output
    np.testing.assert_allclose(np.asarray(output), expected.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("package", [True, False], ids=["with_package", "remote_code"])
def test_classification_pipeline_gives_the_heads_multilabel_scores(pipelines, package):
    output = pipelines["runs"][package]["results"]["classification"]["output"]
    head, outputs = _head_outputs(pipelines["folders"], "classification")
    scores = outputs.logits[0].sigmoid().tolist()  # multi-label: independent sigmoids, as the card says
    expected = sorted(({"label": head.config.id2label[i], "score": s} for i, s in enumerate(scores)),
                      key=lambda item: -item["score"])
    _assert_scored_items_equal(output, expected)


@pytest.mark.parametrize("package", [True, False], ids=["with_package", "remote_code"])
def test_segmentation_pipeline_masks_are_the_heads_class_map_at_image_size(pipelines, package):
    run = pipelines["runs"][package]
    output = run["results"]["segmentation"]["output"]
    head, outputs = _head_outputs(pipelines["folders"], "segmentation")
    class_map = _image_processor(pipelines["folders"], "segmentation").post_process_semantic_segmentation(outputs, target_sizes=[(512, 512)])[0]
    present = sorted(int(label) for label in class_map.unique())
    assert [item["label"] for item in output] == [head.config.id2label[label] for label in present]
    for index, label in enumerate(present):
        mask = run["masks"][f"segmentation.{index}"]
        assert mask.shape == (512, 512)  # the radiograph's own size
        assert torch.equal(mask > 0, class_map == label)


@pytest.mark.parametrize("package", [True, False], ids=["with_package", "remote_code"])
def test_detection_pipeline_boxes_are_the_heads_in_image_pixels(pipelines, package):
    output = pipelines["runs"][package]["results"]["detection"]["output"]
    head, outputs = _head_outputs(pipelines["folders"], "detection")
    expected = _image_processor(pipelines["folders"], "detection").post_process_object_detection(outputs, threshold=0.0, target_sizes=[(512, 512)])[0]
    assert output and len(output) == len(expected["scores"])
    assert set(output[0]) == {"score", "label", "box"} and set(output[0]["box"]) == {"xmin", "ymin", "xmax", "ymax"}
    np.testing.assert_allclose([item["score"] for item in output], expected["scores"].tolist(), rtol=1e-4)
    assert [item["label"] for item in output] == [head.config.id2label[int(i)] for i in expected["labels"]]
    boxes = [[item["box"][key] for key in ("xmin", "ymin", "xmax", "ymax")] for item in output]
    assert np.abs(np.asarray(boxes) - expected["boxes"].numpy()).max() <= 1.0  # the pipeline rounds to pixels


def test_image_only_heads_ship_the_image_processor_alone(pipelines):
    """A tokenizer beside an object-detection model makes the pipeline ask for OCR words: heads ship without one."""
    hub = pipelines["hub"]
    for variant in LABELS:
        files = set(hub.repo(f"{ORG}-{variant}").commits[hub.repo(f"{ORG}-{variant}").branches["main"]].files)
        assert "preprocessor_config.json" in files, variant
        assert not files & {"processor_config.json", "tokenizer.json", "tokenizer_config.json"}, (variant, files)
    pretrained = hub.repo(f"{ORG}-pretrained")
    assert {"processor_config.json", "tokenizer.json"} <= set(pretrained.commits[pretrained.branches["main"]].files)
