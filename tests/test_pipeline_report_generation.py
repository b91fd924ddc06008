"""`pipeline("image-text-to-text")` on a report-generation head published to a (local) Hub, with and without PLACE.

A micro head and its processor (prompt mode) are saved; the expected tokens come from `generate` called directly on
real radiographs (NIH ChestX-ray14, /work/shared/data/real_cxr). Two subprocesses (each ~5 s of imports) talk to
`tests.hub_server.LocalHub` through `HF_ENDPOINT`: one publishes the folder with `examples/push_to_hub.py` and runs
the pipeline from the repository id with the package imported (its registration, no remote code, no
`trust_remote_code` prompt); the other runs it with the package blocked and `trust_remote_code=True` (the
repository's custom code). This process stays offline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

from modeling_place import PlaceConfig, PlaceForReportGeneration
from modeling_place.processing import PlaceImageProcessor, PlaceProcessor, train_wordpiece_tokenizer
from tests.helpers import micro_config
from tests.hub_server import BLOCK_PACKAGES, LocalHub

REPO_ROOT = Path(__file__).resolve().parent.parent
REAL_CXR = Path("/work/shared/data/real_cxr")
REPO = "place-org/place-micro-report"
CORPUS = ["FINDINGS: The lungs are clear. No pleural effusion. Mild cardiomegaly. Small left pneumothorax."] * 8
# a prompt prefix the report continues, and "" (the report from its start); one real radiograph each
CASES = [("nih_00000001_000.png", "The lungs are"), ("nih_00027426_000.png", "")]
MAX_NEW_TOKENS = 8

PIPELINE_RUN = textwrap.dedent(
    """
    import json, sys
    from transformers import pipeline

    def run_pipeline(spec, **load_options):
        pipe = pipeline("image-text-to-text", model=spec["repo"], **load_options)
        runs = []
        for image, prompt in spec["cases"]:
            records = pipe(images=image, text=prompt, max_new_tokens=spec["max_new_tokens"])
            tensors = pipe(images=image, text=prompt, max_new_tokens=spec["max_new_tokens"], return_tensors=True)
            runs.append({"records": records, "ids": tensors[0]["generated_token_ids"].tolist()})
        return {"model_module": type(pipe.model).__module__, "runs": runs}

    spec = json.loads(open(sys.argv[1]).read())
    """
)
# the package imported: its Auto registration serves the repository (publishing needs the package anyway)
INSTALLED_SCRIPT = PIPELINE_RUN + textwrap.dedent(
    """
    import runpy
    import modeling_place
    runpy.run_path(spec["push_to_hub"], run_name="push_to_hub")["main"]([spec["folder"], "--repo-id", spec["repo"]])
    open(spec["out"] + "/installed.json", "w").write(json.dumps(run_pipeline(spec)))
    """
)
REMOTE_SCRIPT = BLOCK_PACKAGES + PIPELINE_RUN + textwrap.dedent(
    """
    open(spec["out"] + "/remote.json", "w").write(json.dumps(run_pipeline(spec, trust_remote_code=True)))
    """
)


def _save_head(folder: Path) -> tuple[PlaceForReportGeneration, PlaceProcessor]:
    """A micro head whose random decoder writes varied tokens and never stops early, and its prompt-mode processor."""
    tokenizer = train_wordpiece_tokenizer(CORPUS, vocab_size=100, model_max_length=32, min_frequency=1)
    image_processor = PlaceImageProcessor(size={"height": 40, "width": 40}, crop_size={"height": 32, "width": 32})
    processor = PlaceProcessor(image_processor=image_processor, tokenizer=tokenizer, max_length=24, text_mode="prompt")
    torch.manual_seed(0)
    config = PlaceConfig(**micro_config(report_bos_token_id=tokenizer.cls_token_id,
                                        report_eos_token_id=tokenizer.sep_token_id,
                                        report_pad_token_id=tokenizer.pad_token_id))
    head = PlaceForReportGeneration(config, decoder_hidden_size=16, decoder_layers=2, decoder_num_heads=2,
                                    decoder_max_length=32).eval()
    with torch.no_grad():
        head.get_input_embeddings().weight.normal_(std=1.0)  # tied: the output layer too
        head.get_output_embeddings().bias[config.report_eos_token_id] = -1e4
    head.save_pretrained(folder)
    processor.save_pretrained(folder)
    return head, processor


def _expected(head: PlaceForReportGeneration, processor: PlaceProcessor) -> list[dict[str, Any]]:
    """Per case: the ids of `generate` called directly, and the pipeline's text (prompt + what follows it)."""
    expected = []
    for image, prompt in CASES:
        inputs = processor(images=str(REAL_CXR / image), text=prompt)
        ids = head.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS)[0]
        decoded = processor.tokenizer.decode(ids, skip_special_tokens=True)
        decoded_prompt = processor.tokenizer.decode(inputs["input_ids"][0], skip_special_tokens=True)
        assert decoded.startswith(decoded_prompt) and len(ids) == inputs["input_ids"].shape[1] + MAX_NEW_TOKENS
        expected.append({"ids": ids.tolist(), "text": prompt + decoded[len(decoded_prompt):]})
    return expected


def _run(script: str, spec_path: Path, env: dict[str, str], cwd: Path) -> None:
    # stdin closed: a trust_remote_code prompt would fail the run instead of waiting
    result = subprocess.run([sys.executable, "-c", script, str(spec_path)], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-4000:]


def _env(hub: LocalHub, home: Path, package_importable: bool) -> dict[str, str]:
    drop = ("HF_HUB_OFFLINE", "PYTHONPATH", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
    env = {key: value for key, value in os.environ.items() if key not in drop}
    env.update(hub.client_env(), HF_HOME=str(home))  # a fresh cache: nothing is found without the Hub
    if package_importable:
        env["PYTHONPATH"] = str(REPO_ROOT)
    return env


@pytest.fixture(scope="module")
def pipeline_runs(tmp_path_factory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("report_pipeline")
    head, processor = _save_head(tmp / "head")
    spec = {"repo": REPO, "folder": str(tmp / "head"), "out": str(tmp), "max_new_tokens": MAX_NEW_TOKENS,
            "push_to_hub": str(REPO_ROOT / "examples" / "push_to_hub.py"),
            "cases": [[str(REAL_CXR / image), prompt] for image, prompt in CASES]}
    (tmp / "spec.json").write_text(json.dumps(spec))
    with LocalHub() as hub:
        _run(INSTALLED_SCRIPT, tmp / "spec.json", _env(hub, tmp / "hf_installed", True), REPO_ROOT)
        _run(REMOTE_SCRIPT, tmp / "spec.json", _env(hub, tmp / "hf_remote", False), tmp)
        files = hub.repo(REPO).resolve("main").files
        files = {name: files[name].content if name.endswith(".json") else None for name in files}
    runs = {name: json.loads((tmp / f"{name}.json").read_text()) for name in ("installed", "remote")}
    return {"runs": runs, "expected": _expected(head, processor), "files": files}


@pytest.mark.parametrize("loaded_as", ["installed", "remote"])
def test_pipeline_output_is_standard_and_equals_generate(pipeline_runs, loaded_as):
    run = pipeline_runs["runs"][loaded_as]
    for (_, prompt), outputs, expected in zip(CASES, run["runs"], pipeline_runs["expected"], strict=True):
        assert outputs["records"] == [{"input_text": prompt, "generated_text": expected["text"]}]
        assert outputs["ids"] == expected["ids"]
    module = run["model_module"]
    assert (module == "modeling_place.heads_place") if loaded_as == "installed" else module.startswith("transformers_modules")


def test_published_repository_ships_the_prompt_mode_processor_and_custom_code(pipeline_runs):
    files = pipeline_runs["files"]
    assert {"tokenizer.json", "heads_place.py", "processing_place.py", "README.md"} <= set(files)
    assert json.loads(files["processor_config.json"])["text_mode"] == "prompt"
    assert json.loads(files["generation_config.json"])["max_length"] == 32  # decoder_max_length: the position table
