"""Publishing to the Hub: auto_map completion, model cards, and push -> load round trips on a local Hub.

The round trips run in two subprocesses that share one module-scoped set-up (each costs a ~5 s import): one
publishes with `examples/push_to_hub.py` (package importable), one loads with `trust_remote_code=True` where
the packages cannot be imported. Both talk to `tests.hub_server.LocalHub`, set through `HF_ENDPOINT` before
`huggingface_hub` is imported there; this process stays offline.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import pytest
import torch
import yaml
from safetensors.torch import load_file

from modeling_place import (
    PlaceConfig,
    PlaceForImageClassification,
    PlaceForObjectDetection,
    PlaceForReportGeneration,
    PlaceForSemanticSegmentation,
    PlaceModel,
)
from modeling_place.publishing import (
    CARD_MARKER,
    VARIANTS,
    complete_auto_map,
    eval_results_from_file,
    render_model_card,
    stage_folder,
)
from modeling_place.processing import PlaceImageProcessor, PlaceProcessor, train_wordpiece_tokenizer
from tests.helpers import micro_config
from tests.hub_server import BLOCK_PACKAGES, LocalHub, git_blob_oid, validate_card_metadata

REPO_ROOT = Path(__file__).resolve().parent.parent
SECRET_TOKEN = "hf_placeTestSecretTokenNeverPrinted"
BASE_REPO = "place-org/place-micro"
CORPUS = ["FINDINGS: The lungs are clear. No pleural effusion. Mild cardiomegaly. Small left pneumothorax."] * 8
REPORTS = ["FINDINGS: The lungs are clear. No pleural effusion.", "Mild cardiomegaly. Small left pneumothorax."]
# Results as examples/evaluate.py writes them (its `table` holds the headline numbers per task; `details` holds
# each task script's payload) and the model-index the card must carry: {task: {metric: value}}.
RESULTS = {
    "model": "place-cxr", "quick": True, "seconds": 81.5,
    "table": {"zero_shot": {"AUROC chexpert5": 0.71}, "retrieval": {"global P@1": 0.4, "mIoU": 0.22}},
    "details": {"zero_shot": {"task": "zero_shot", "results": {"chexpert5": {"auroc": 0.71, "per_label": {"a": 0.6}}}}},
}
EXPECTED_INDEX = {"zero-shot-image-classification": {"AUROC chexpert5": 0.71},
                  "image-feature-extraction": {"global P@1": 0.4, "mIoU": 0.22}}

# Heads covered by the round trip: every head class heads_place.py defines (all four exist).
HEAD_VARIANTS = ["classification", "segmentation", "detection", "report_generation"]
HEADS: dict[str, tuple[type, dict[str, Any], tuple[str, ...]]] = {  # class, micro options, outputs compared
    "classification": (PlaceForImageClassification, {"num_labels": 3}, ("logits",)),
    "segmentation": (PlaceForSemanticSegmentation, {"num_labels": 2, "segmentation_decoder_dim": 8}, ("logits",)),
    "detection": (PlaceForObjectDetection, {"num_labels": 2, "detection_hidden_dim": 16}, ("logits", "pred_boxes")),
    "report_generation": (PlaceForReportGeneration, {"decoder_hidden_size": 16, "decoder_layers": 1,
                                                     "decoder_num_heads": 2, "decoder_max_length": 32}, ("logits",)),
}
# The processor each head repository gets: its own image processor (preprocessor_config.json), its own full
# processor (processor_config.json), or the base folder's, copied by `--processor-from` (a head saved alone).
HEAD_PROCESSOR = {"classification": "image", "report_generation": "full", "segmentation": "base"}


# ------------------------------------------------------------------------------------------------ builders
def _processor(crop: int = 32) -> PlaceProcessor:
    tokenizer = train_wordpiece_tokenizer(CORPUS, vocab_size=100, model_max_length=32, min_frequency=1)
    image_processor = PlaceImageProcessor(size={"height": 40, "width": 40}, crop_size={"height": crop, "width": crop})
    return PlaceProcessor(image_processor=image_processor, tokenizer=tokenizer, max_sentences=4, max_length=24)


def _head(variant: str, seed: int = 0) -> torch.nn.Module:
    head_class, options, _ = HEADS[variant]
    config_fields = {key: options[key] for key in ("num_labels",) if key in options}
    torch.manual_seed(seed)
    config = PlaceConfig(**micro_config(**config_fields))
    return head_class(config, **{k: v for k, v in options.items() if k not in config_fields}).eval()


def _save_base(folder: Path, processor: PlaceProcessor, seed: int) -> PlaceModel:
    torch.manual_seed(seed)
    model = PlaceModel(PlaceConfig(**micro_config())).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model


def _save_head(folder: Path, variant: str, processor: PlaceProcessor) -> torch.nn.Module:
    head = _head(variant)
    head.save_pretrained(folder)
    kind = HEAD_PROCESSOR.get(variant)
    if kind in ("image", "full"):
        (processor.image_processor if kind == "image" else processor).save_pretrained(folder)
    return head


def _write_images(folder: Path) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for index in range(2):
        smooth = PIL.Image.fromarray((rng.random((6, 5)) * 255).astype(np.uint8)).resize((50, 40), PIL.Image.BILINEAR)
        paths.append(str(folder / f"cxr{index}.png"))
        smooth.save(paths[-1])
    return paths


def _head_outputs(variant: str, head: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        if variant == "report_generation":
            outputs = head(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"])
            tokens = head.generate(pixel_values=batch["pixel_values"], max_new_tokens=4)
            return {"logits": outputs.logits, "generated": tokens}
        outputs = head(pixel_values=batch["pixel_values"])
    return {name: getattr(outputs, name) for name in HEADS[variant][2]}


# ------------------------------------------------------------------------------------------------ subprocesses
PUBLISH_SCRIPT = textwrap.dedent(
    """
    import json, runpy, sys
    push_to_hub = runpy.run_path(sys.argv[1], run_name="push_to_hub")
    commands = json.loads(open(sys.argv[2]).read())
    oids = [push_to_hub["main"](argv) for argv in commands]
    open(sys.argv[3], "w").write(json.dumps(oids))
    """
)

LOAD_SCRIPT = BLOCK_PACKAGES + textwrap.dedent(
    """
    import json, sys
    import torch, transformers
    from huggingface_hub import ModelCard
    from safetensors.torch import save_file
    torch.set_num_threads(2)
    spec = json.loads(open(sys.argv[1]).read())
    tensors, modules = {}, {}

    def load(auto_class, repo, **kwargs):
        loaded = getattr(transformers, auto_class).from_pretrained(repo, trust_remote_code=True, **kwargs)
        modules[f"{auto_class} {repo} {kwargs.get('revision', 'main')}"] = type(loaded).__module__
        return loaded

    processor = load("AutoProcessor", spec["base_repo"])
    batch = processor(images=spec["images"], text=spec["reports"])
    tensors.update({"processor." + key: value for key, value in batch.items()})
    with torch.no_grad():
        for tag, kwargs in (("main", {}), ("first", {"revision": spec["first_oid"]})):
            model = load("AutoModel", spec["base_repo"], **kwargs).eval()
            tensors[tag + ".logits_per_image"] = model(**batch).logits_per_image
        for head in spec["heads"]:
            model = load(head["auto_class"], head["repo"], revision="dev").eval()
            pixels = batch["pixel_values"]
            if head["processor"] is not None:
                auto = "AutoProcessor" if head["processor"] == "full" else "AutoImageProcessor"
                remote = load(auto, head["repo"], revision="dev")
                pixels = remote(images=spec["images"], return_tensors="pt")["pixel_values"]
                tensors[head["variant"] + ".pixel_values"] = pixels
            if head["variant"] == "report_generation":
                out = model(input_ids=batch["input_ids"], pixel_values=pixels)
                tensors[head["variant"] + ".generated"] = model.generate(pixel_values=pixels, max_new_tokens=4)
            else:
                out = model(pixel_values=pixels)
            for name in head["outputs"]:
                tensors[head["variant"] + "." + name] = getattr(out, name).contiguous()
    card = ModelCard.load(spec["base_repo"])
    save_file({key: value.contiguous() for key, value in tensors.items()}, spec["out"] + "/loaded.safetensors")
    info = {"modules": modules, "card_data": card.data.to_dict(), "card": str(card)}
    open(spec["out"] + "/loaded.json", "w").write(json.dumps(info))
    """
)


def _client_env(hub: LocalHub, home: Path, package_importable: bool) -> dict[str, str]:
    drop = ("HF_HUB_OFFLINE", "PYTHONPATH", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
    env = {key: value for key, value in os.environ.items() if key not in drop}
    env.update(hub.client_env(token=SECRET_TOKEN), HF_HOME=str(home))
    if package_importable:
        env["PYTHONPATH"] = str(REPO_ROOT)
    return env


def _run(script: str, args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", script, *args]
    result = subprocess.run(command, check=False, env=env, cwd=cwd, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _publish_commands(tmp: Path) -> list[list[str]]:
    results = str(tmp / "results.json")
    commands = [
        [str(tmp / "base_v1"), "--repo-id", BASE_REPO, "--results", results, "--commit-message", "PLACE micro v1"],
        [str(tmp / "base_v2"), "--repo-id", BASE_REPO, "--results", results],
    ]
    for variant in HEAD_VARIANTS:  # heads: private repositories, published to a new branch
        commands.append([str(tmp / variant), "--repo-id", f"{BASE_REPO}-{variant}", "--private", "--revision", "dev",
                         "--base-model", BASE_REPO])
        if HEAD_PROCESSOR.get(variant) == "base":
            commands[-1] += ["--processor-from", str(tmp / "base_v1")]
    return commands


def _save_all(tmp: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Save base v1/v2 (+ processor), the heads and the results file; return their outputs and the images."""
    processor, images = _processor(), _write_images(tmp)
    batch = processor(images=images, text=REPORTS)
    expected = {"processor." + key: value for key, value in batch.items()}
    with torch.no_grad():
        for tag, seed in (("first", 0), ("main", 1)):
            model = _save_base(tmp / ("base_v1" if tag == "first" else "base_v2"), processor, seed)
            expected[tag + ".logits_per_image"] = model(**batch).logits_per_image
    for variant in HEAD_VARIANTS:
        head = _save_head(tmp / variant, variant, processor)
        expected.update({f"{variant}.{k}": v for k, v in _head_outputs(variant, head, batch).items()})
    (tmp / "results.json").write_text(json.dumps(RESULTS))
    return expected, images


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Publish base v1, v2 and every head with the example script, then reload all of them without the package."""
    tmp = tmp_path_factory.mktemp("hub")
    expected, images = _save_all(tmp)
    (tmp / "commands.json").write_text(json.dumps(_publish_commands(tmp)))
    with LocalHub() as hub:
        env = _client_env(hub, tmp / "hf_publish", package_importable=True)
        example = str(REPO_ROOT / "examples" / "push_to_hub.py")
        publish_args = [example, str(tmp / "commands.json"), str(tmp / "oids.json")]
        publish_run = _run(PUBLISH_SCRIPT, publish_args, env, REPO_ROOT)
        oids = json.loads((tmp / "oids.json").read_text())
        heads = [{"variant": v, "repo": f"{BASE_REPO}-{v}", "auto_class": VARIANTS[v].auto_class,
                  "processor": HEAD_PROCESSOR.get(v), "outputs": list(HEADS[v][2])} for v in HEAD_VARIANTS]
        spec = {"base_repo": BASE_REPO, "first_oid": oids[0], "images": images, "reports": REPORTS,
                "heads": heads, "out": str(tmp)}
        (tmp / "spec.json").write_text(json.dumps(spec))
        _run(LOAD_SCRIPT, [str(tmp / "spec.json")], _client_env(hub, tmp / "hf_load", False), tmp)
        yield {"hub": hub, "oids": oids, "expected": expected, "publish_run": publish_run,
               "loaded": load_file(tmp / "loaded.safetensors"), "info": json.loads((tmp / "loaded.json").read_text())}


def _index(model_index_entry: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{task type: {metric name: value}} of one model-index entry."""
    return {result["task"]["type"]: {metric["name"]: metric["value"] for metric in result["metrics"]}
            for result in model_index_entry["results"]}


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------ round trips
def test_remote_model_and_processor_match_the_originals(published):
    loaded, expected = published["loaded"], published["expected"]
    for key in [key for key in expected if key.startswith("processor.")]:
        assert torch.equal(loaded[key], expected[key]), key
    _close(loaded["main.logits_per_image"], expected["main.logits_per_image"])
    modules = published["info"]["modules"]
    assert all(module.startswith("transformers_modules") for module in modules.values()), modules


def test_pinned_first_revision_loads_the_first_weights(published):
    loaded, expected = published["loaded"], published["expected"]
    _close(loaded["first.logits_per_image"], expected["first.logits_per_image"])
    assert not torch.allclose(loaded["first.logits_per_image"], loaded["main.logits_per_image"])
    repo = published["hub"].repo(BASE_REPO)
    first, second = (repo.commits[oid] for oid in published["oids"][:2])
    assert first.oid != second.oid and first.files["model.safetensors"] != second.files["model.safetensors"]
    # initial commit, then (files, card pin) per publication
    assert len(repo.commits) == 5 and repo.commits[repo.branches["main"]].parent == second.oid


@pytest.mark.parametrize("variant", HEAD_VARIANTS)
def test_head_round_trip(published, variant):
    loaded, expected = published["loaded"], published["expected"]
    for name in [key for key in expected if key.startswith(variant + ".")]:
        _close(loaded[name].to(expected[name].dtype), expected[name])
    if HEAD_PROCESSOR.get(variant):
        _close(loaded[variant + ".pixel_values"], expected["processor.pixel_values"])
    modules = published["info"]["modules"]
    assert modules[f"{VARIANTS[variant].auto_class} {BASE_REPO}-{variant} dev"].endswith(".heads_place")


def test_card_metadata_and_model_index_from_results(published):
    data, card = published["info"]["card_data"], published["info"]["card"]
    assert data["library_name"] == "transformers" and data["license"] == "apache-2.0"
    assert data["pipeline_tag"] == "zero-shot-image-classification" and "chest-x-ray" in data["tags"]
    [entry] = data["model-index"]
    assert _index(entry) == EXPECTED_INDEX
    assert {result["dataset"]["type"] for result in entry["results"]} == {"place-cxr/place-synthetic-cxr"}
    assert {result["dataset"]["split"] for result in entry["results"]} == {"test"}
    assert f'repo, revision = "{BASE_REPO}", "{published["oids"][1]}"' in card  # pinned to the files' commit
    assert "Not for clinical use" in card and "Quick mode" in card


def test_repository_contents_and_auto_map(published):
    hub = published["hub"]
    files = hub.repo(BASE_REPO).resolve("main").files
    config = json.loads(files["config.json"].content)
    assert config["auto_map"] == {"AutoConfig": "configuration_place.PlaceConfig",
                                  "AutoModel": "modeling_place.PlaceModel",
                                  "AutoModelForZeroShotImageClassification": "modeling_place.PlaceModel"}
    processor_config = json.loads(files["processor_config.json"].content)
    assert processor_config["auto_map"]["AutoProcessor"] == "processing_place.PlaceProcessor"
    assert files["model.safetensors"].lfs and not files["config.json"].lfs
    for variant in HEAD_VARIANTS:
        repo = hub.repo(f"{BASE_REPO}-{variant}")
        head_files = repo.resolve("dev").files
        head_map = json.loads(head_files["config.json"].content)["auto_map"]
        if HEAD_PROCESSOR.get(variant) == "base":  # the base folder's image processor, by --processor-from
            assert {"preprocessor_config.json", "image_processing_place.py"} <= set(head_files)
            assert not {"processor_config.json", "tokenizer.json"} & set(head_files)  # an image-only head
        assert head_map[VARIANTS[variant].auto_class] == f"heads_place.{VARIANTS[variant].architecture}"
        assert "AutoModel" not in head_map and repo.private
        assert set(repo.resolve("main").files) == {".gitattributes"}  # the head went to branch "dev" only


def test_private_repository_needs_a_token_and_token_is_never_printed(published):
    hub, run = published["hub"], published["publish_run"]
    url = f"{hub.url}/api/models/{BASE_REPO}-classification"
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(url, timeout=10)
    assert anonymous.value.code == 401 and anonymous.value.headers["X-Error-Code"] == "RepoNotFound"
    request = urllib.request.Request(url, headers={"Authorization": "Bearer anything"})
    assert json.load(urllib.request.urlopen(request, timeout=10))["private"] is True
    assert SECRET_TOKEN not in run.stdout + run.stderr
    assert f"at commit {published['oids'][0]}" in run.stdout


# ------------------------------------------------------------------------------------------------ in process
def test_complete_auto_map_restores_missing_modules(tmp_path):
    _save_base(tmp_path, _processor(), seed=0)
    for name in ("loss_place.py", "report_place.py"):
        (tmp_path / name).unlink()
    maps = complete_auto_map(tmp_path)
    assert (tmp_path / "loss_place.py").is_file() and (tmp_path / "report_place.py").is_file()
    assert maps["config.json"]["AutoModel"] == "modeling_place.PlaceModel"
    assert maps["processor_config.json:image_processor"]["AutoImageProcessor"] == (
        "image_processing_place.PlaceImageProcessor")


def test_complete_auto_map_of_a_head_drops_automodel_and_adds_its_code(tmp_path):
    _save_head(tmp_path, "classification", _processor())
    config = json.loads((tmp_path / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_place.PlaceModel"}  # a stale entry: heads hold no text tower
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "heads_place.py").unlink()
    maps = complete_auto_map(tmp_path)
    assert maps["config.json"] == {"AutoConfig": "configuration_place.PlaceConfig",
                                   "AutoModelForImageClassification": "heads_place.PlaceForImageClassification"}
    assert maps["preprocessor_config.json"]["AutoImageProcessor"] == "image_processing_place.PlaceImageProcessor"
    assert (tmp_path / "heads_place.py").is_file()


@pytest.mark.parametrize("variant", ["pretrained", *HEAD_VARIANTS])
def test_render_model_card_for_every_variant(tmp_path, variant):
    folder = tmp_path / "model"
    (_head(variant) if variant != "pretrained" else PlaceModel(PlaceConfig(**micro_config()))).save_pretrained(folder)
    (tmp_path / "results.json").write_text(json.dumps(RESULTS))
    card = render_model_card(folder, results_path=tmp_path / "results.json", repo_id="me/m", revision="abc123",
                             base_model="me/base")
    metadata = yaml.safe_load(str(card).split("---")[1])
    assert metadata["pipeline_tag"] == VARIANTS[variant].pipeline_tag and metadata["base_model"] == "me/base"
    assert _index(metadata["model-index"][0]) == EXPECTED_INDEX
    assert f"{VARIANTS[variant].auto_class}.from_pretrained" in card.text and '"abc123"' in card.text
    for section in ("## Intended use and limits", "## Training data", "## Preprocessing", "## How to load",
                    "## Evaluation protocol", "## Results"):
        assert section in card.text, section
    if variant == "detection":
        assert "- Box head: 4 fused ViT levels, 2 trunk convolutions" in card.text


def test_card_documents_the_recorded_training(tmp_path):
    PlaceModel(PlaceConfig(**micro_config())).save_pretrained(tmp_path)
    train = {"dataset": "mimic-cxr", "preset": "tiny", "max_steps": 7, "batch_size": 4, "grad_accum": 2, "lr": 1e-4}
    (tmp_path / "train_config.json").write_text(json.dumps(train))
    (tmp_path / "training_summary.json").write_text(json.dumps({"steps": 7}))
    card = render_model_card(tmp_path, repo_id="me/m")
    assert card.data.datasets == ["mimic-cxr"] and card.data.to_dict().get("model-index") is None
    assert card.data.license == "other" and card.data.license_name.startswith("physionet-credentialed")
    assert "`mimic-cxr` read by the package's readers" in card.text and "Completed steps: 7" in card.text
    assert "No evaluation results were provided" in card.text


def test_results_of_a_task_script_keep_test_metrics_only(tmp_path):
    # examples/finetune_classification.py's payload: one block per label fraction, with training bookkeeping
    fraction = {"test_auroc": 0.8, "per_label": {"Edema": 0.9}, "skipped_labels": [], "train_examples": 50,
                "history": [0.5, 0.7], "best_epoch": 1, "best_validation": 0.75}
    payload = {"task": "classification", "mode": "linear_probe", "results": {"0.01": fraction, "1": fraction},
               "seconds": 12.0}
    (tmp_path / "classification.json").write_text(json.dumps(payload))
    results = eval_results_from_file(tmp_path / "classification.json", "classification")
    assert [(r.task_type, r.metric_type, r.metric_value, r.metric_args) for r in results] == [
        ("image-classification", "roc_auc", 0.8, {"label_fraction": 0.01}),
        ("image-classification", "roc_auc", 0.8, {"label_fraction": 1.0})]
    assert results[0].metric_name == "0.01/test_auroc (1 % of the training labels)"
    assert results[0].dataset_type == "place-cxr/place-synthetic-cxr" and results[0].task_name == "classification"
    assert results[0].dataset_split == "test"


def test_results_file_formats_and_errors(tmp_path):
    entries = {"results": [{"task": "image-classification", "dataset": "nih", "metrics": {"auroc": 0.8}},
                           {"dataset": {"name": "rsna", "type": "rsna", "split": "val"}, "metrics": {"dice": 0.5}}]}
    (tmp_path / "entries.json").write_text(json.dumps(entries))
    results = eval_results_from_file(tmp_path / "entries.json", "classification")
    assert [(r.task_type, r.dataset_name, r.dataset_split, r.metric_type, r.metric_value) for r in results] == [
        ("image-classification", "nih", "test", "roc_auc", 0.8), ("image-classification", "rsna", "val", "dice", 0.5)]
    (tmp_path / "empty.json").write_text(json.dumps({"task": "x", "results": {"machine": "cpu", "seconds": 3}}))
    with pytest.raises(ValueError, match="empty.json"):
        eval_results_from_file(tmp_path / "empty.json", "classification")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        eval_results_from_file(tmp_path / "missing.json", "classification")


def test_processor_from_must_fit_the_model(tmp_path):
    _save_head(tmp_path / "head", "detection", _processor())  # a detection head is saved without a processor
    _processor(crop=24).save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="crop_size 24x24 does not match the model's input size 32x32"):
        stage_folder(tmp_path / "head", tmp_path / "staging", processor_from=tmp_path / "other")
    with pytest.raises(FileNotFoundError, match="processor_from"):
        stage_folder(tmp_path / "head", tmp_path / "staging2", processor_from=tmp_path / "head")


def test_bad_folders_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        stage_folder(tmp_path, tmp_path / "staging")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        stage_folder(tmp_path, tmp_path / "staging")
    with pytest.raises(ValueError, match="'bert', not 'place'"):
        render_model_card(tmp_path)


# ------------------------------------------------------------------------------------------------ the server
def _call(hub: LocalHub, method: str, path: str, body: bytes | None = None) -> tuple[int, Any, Any]:
    headers = {"Authorization": "Bearer x", "Content-Type": "application/json"}
    request = urllib.request.Request(hub.url + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers


def _commit(hub: LocalHub, branch: str, files: dict[str, bytes]) -> tuple[int, Any]:
    lines = [{"key": "header", "value": {"summary": "update"}}] + [
        {"key": "file", "value": {"path": p, "encoding": "base64", "content": base64.b64encode(c).decode()}}
        for p, c in files.items()]
    status, body, _ = _call(hub, "POST", f"/api/models/o/r/commit/{branch}",
                            b"".join(json.dumps(line).encode() + b"\n" for line in lines))
    return status, json.loads(body)


def test_local_hub_revisions_and_errors():
    create = json.dumps({"name": "r", "organization": "o"}).encode()
    with LocalHub() as hub:
        assert _call(hub, "POST", "/api/repos/create", create)[0] == 200
        first = _commit(hub, "main", {"a.txt": b"one"})[1]["commitOid"]
        second = _commit(hub, "main", {"a.txt": b"two"})[1]["commitOid"]
        status, body, headers = _call(hub, "GET", f"/o/r/resolve/{first}/a.txt")
        assert (status, body, headers["X-Repo-Commit"]) == (200, b"one", first)
        assert headers["ETag"] == f'"{git_blob_oid(b"one")}"'
        assert _call(hub, "GET", "/o/r/resolve/main/a.txt")[1] == b"two"
        status, _, headers = _call(hub, "HEAD", "/o/r/resolve/main/missing.txt")
        assert (status, headers["X-Error-Code"]) == (404, "EntryNotFound")
        assert _call(hub, "GET", "/o/r/resolve/nobranch/a.txt")[2]["X-Error-Code"] == "RevisionNotFound"
        assert _commit(hub, second, {"b.txt": b"x"})[0] == 400  # commits go to branches, not to a sha
        assert _call(hub, "POST", "/api/repos/create", create)[0] == 409
        objects = [{"oid": "0" * 64, "size": 1}]
        lfs_body = json.dumps({"operation": "upload", "transfers": ["basic"], "objects": objects})
        batch = json.loads(_call(hub, "POST", "/o/r.git/info/lfs/objects/batch", lfs_body.encode())[1])
        assert batch["objects"][0]["actions"]["upload"]["href"] == f"{hub.url}/lfs-upload/{'0' * 64}"
        assert _call(hub, "PUT", f"/lfs-upload/{'0' * 64}", b"not matching")[0] == 400


def test_card_of_a_repeats_run_reports_the_published_heads_own_numbers(tmp_path):
    own, other = {"test_map": 0.31, "best_validation": 0.3}, {"test_map": 0.25, "best_validation": 0.2}
    fraction = {**own, "mean": {"test_map": 0.28}, "std": {"test_map": 0.04}, "kept_repeat": 0, "repeats": [own, other]}
    path = tmp_path / "detection.json"
    path.write_text(json.dumps({"task": "detection/opacity", "results": {"1": fraction}}))
    results = eval_results_from_file(path, "detection")
    assert [(r.metric_name, r.metric_value) for r in results] == [("1/test_map (100 % of the training labels)", 0.31)]


# ------------------------------------------------------------------------------------------------ card metadata
METRIC_IDS = {"roc_auc", "dice", "map", "bleu", "rouge", "cider", "cnr", "pointing_game", "mean_iou",
              "precision_at_k", "accuracy", "meteor"}
# examples/evaluate.py's table: label fractions in the row names, one row per headline number
SUITE_TABLE = {"classification": {"AUROC 0.01": 0.6, "AUROC 0.01 std": 0.01, "AUROC 1": 0.7},
               "report_generation": {"bleu_4": 0.2, "rouge_l": 0.4, "cider": 0.5},
               "detection": {"mAP 0.1": 0.1, "COCO mAP 0.1": 0.05},
               "grounding": {"place cosine cnr": 0.8, "place cosine pointing": 0.2, "place cosine miou_sweep": 0.1}}


@pytest.mark.parametrize("dataset, license_name", [(None, None), ("synthetic", None),
                                                   ("mimic-cxr", "physionet-credentialed-health-data-license-1.5.0"),
                                                   ("chexpert", "stanford-university-dataset-research-use-agreement")])
def test_card_licence_metric_ids_and_metadata_validate(tmp_path, dataset, license_name):
    from huggingface_hub import ModelCardData
    from huggingface_hub.repocard_data import model_index_to_eval_results
    from huggingface_hub.utils import validate_repo_id

    PlaceModel(PlaceConfig(**micro_config())).save_pretrained(tmp_path)
    if dataset is not None:
        (tmp_path / "train_config.json").write_text(json.dumps({"dataset": dataset}))
    (tmp_path / "results.json").write_text(json.dumps({"table": SUITE_TABLE}))
    card = render_model_card(tmp_path, results_path=tmp_path / "results.json", repo_id="me/m")
    metadata = yaml.safe_load(str(card).split("---")[1])
    assert metadata["license"] == ("other" if license_name else "apache-2.0")
    assert metadata.get("license_name") == license_name
    assert ("**Data use:**" in card.text) == bool(license_name) and "Apache-2.0" in card.text
    validate_card_metadata(str(card))  # what the local Hub's /api/validate-yaml checks
    assert ModelCardData(**metadata).to_dict() == metadata  # huggingface_hub parses and re-renders it unchanged
    _, results = model_index_to_eval_results(metadata["model-index"])
    assert {r.metric_type for r in results} <= METRIC_IDS and {r.dataset_split for r in results} == {"test"}
    assert "std" not in " ".join(r.metric_name for r in results)
    one_percent = next(r for r in results if r.metric_name.startswith("AUROC 0.01"))
    assert one_percent.metric_args == {"label_fraction": 0.01}
    assert "1 % of the training labels" in one_percent.metric_name
    assert next(r for r in results if r.metric_type == "bleu").metric_args == {"max_order": 4}
    assert {r.metric_type for r in results if r.task_type == "object-detection"} == {"map"}
    for name in metadata["datasets"] + [r.dataset_type for r in results]:
        validate_repo_id(name)


def test_every_variant_has_a_pipeline_tag_transformers_knows():
    from transformers.pipelines import SUPPORTED_TASKS

    assert {variant.pipeline_tag for variant in VARIANTS.values()} <= set(SUPPORTED_TASKS)


def test_save_pretrained_writes_the_card_and_keeps_a_users_own(tmp_path):
    head = _head("classification")
    head.save_pretrained(tmp_path / "head")
    card = (tmp_path / "head" / "README.md").read_text()
    assert CARD_MARKER in card and "pipeline_tag: image-classification" in card and "license: apache-2.0" in card
    (tmp_path / "head" / "README.md").write_text("my own card")
    head.save_pretrained(tmp_path / "head")
    assert (tmp_path / "head" / "README.md").read_text() == "my own card"


PUSH_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, sys.argv[2])
    from modeling_place import PlaceConfig, PlaceModel
    from tests.helpers import micro_config
    torch.manual_seed(0)
    PlaceModel(PlaceConfig(**micro_config())).push_to_hub(sys.argv[1])
    """
)


def test_model_push_to_hub_ships_the_place_card(tmp_path):
    with LocalHub() as hub:
        _run(PUSH_SCRIPT, ["me/pushed", str(REPO_ROOT)], _client_env(hub, tmp_path / "hf", True), tmp_path)
        card = hub.repo("me/pushed").resolve("main").files["README.md"].content.decode()
    assert CARD_MARKER in card and "pipeline_tag: zero-shot-image-classification" in card
    assert 'repo, revision = "me/pushed"' in card
