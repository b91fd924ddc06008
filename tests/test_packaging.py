"""The built wheel: one import namespace, the card templates as package data, and the console scripts' modules."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from modeling_place import PlaceConfig, PlaceModel
from tests.helpers import micro_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> tuple[Path, Path]:
    """The wheel built from this checkout, installed (without dependencies) into a folder of its own."""
    root = tmp_path_factory.mktemp("wheel")
    # Build from a copy: setuptools' build/ folder in the checkout could carry modules deleted since.
    source = root / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "runs", "place-cxr",
                                                                "results", "__pycache__", ".pytest_cache", "*.png"))
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(root), str(source)]
    subprocess.run(command, check=True, capture_output=True)
    wheel = next(root.glob("place_cxr-*.whl"))
    target = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    return wheel, target


def _run_installed(target: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Python with the installed wheel first on the path, from a folder outside the checkout."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd,
                          env={"PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})


def test_the_wheel_exposes_only_the_modeling_place_namespace(installed_wheel):
    wheel, _ = installed_wheel
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.startswith("place_cxr-")}
    # one package, and the start-up registration's module and .pth (place-prefixed, nothing generic)
    assert top_level == {"modeling_place", "place_autoregister.py", "place_autoregister.pth"}
    for expected in ("modeling_place/model_cards/pretrained.md", "modeling_place/processing/processing_place.py",
                     "modeling_place/evaluation/metrics/cnr/cnr.py", "modeling_place/data/synthetic_cxr.py"):
        assert expected in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "place-synth = modeling_place.data.synthetic_cxr:main" in text
    assert "place-prepare = modeling_place.data.prepare:main" in text


def test_generic_names_do_not_import_and_a_card_renders_from_the_installed_wheel(installed_wheel, tmp_path):
    _, target = installed_wheel
    torch.manual_seed(0)
    PlaceModel(PlaceConfig(**micro_config())).save_pretrained(tmp_path / "model")
    code = f"""
import importlib.util, modeling_place, modeling_place.publishing as publishing
assert modeling_place.__file__.startswith({str(target)!r}), modeling_place.__file__
for name in ("processing", "training", "evaluation", "place_hub"):
    assert importlib.util.find_spec(name) is None, name
import modeling_place.data.synthetic_cxr, modeling_place.training, modeling_place.evaluation.protocols.suite
assert str(publishing.TEMPLATE_DIR).startswith({str(target)!r})
card = publishing.render_model_card({str(tmp_path / "model")!r}, "pretrained")
data = card.data.to_dict()
assert data["pipeline_tag"] == "zero-shot-image-classification" and data["license"] == "apache-2.0", data
from huggingface_hub import ModelCardData
assert ModelCardData(**data).to_dict() == data
print("ok")
"""
    result = _run_installed(target, code, tmp_path)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


PIPELINE_WITHOUT_IMPORT = """
import site, sys
site.addsitedir({target!r})  # processes place_autoregister.pth, as site-packages would at start-up
assert "modeling_place" not in sys.modules and "transformers" not in sys.modules
from transformers import pipeline
pipe = pipeline("image-feature-extraction", model={folder!r})  # no trust_remote_code, stdin closed: no question
assert type(pipe.model).__module__ == "modeling_place.modeling_place", type(pipe.model).__module__
assert len(pipe({image!r})[0]) == pipe.model.config.projection_dim
print("ok")
"""


@pytest.mark.parametrize("switch", ["on", "off"])
def test_installed_wheel_registers_place_for_pipelines_without_an_import(installed_wheel, tmp_path, switch):
    """With the wheel installed, a pipeline() on a PLACE folder runs the installed code without asking about the
    folder's own (remote) code; PLACE_AUTOREGISTER=0 restores transformers' own behaviour (an error here)."""
    from modeling_place.processing import PlaceImageProcessor

    _, target = installed_wheel
    torch.manual_seed(0)
    PlaceModel(PlaceConfig(**micro_config())).save_pretrained(tmp_path / "model")
    PlaceImageProcessor(size={"height": 40, "width": 40}, crop_size={"height": 32, "width": 32}).save_pretrained(
        tmp_path / "model")
    image = REPO.parent / "shared" / "data" / "real_cxr" / "nih_00000001_000.png"
    code = PIPELINE_WITHOUT_IMPORT.format(target=str(target), folder=str(tmp_path / "model"), image=str(image))
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf"),
           "PLACE_AUTOREGISTER": "1" if switch == "on" else "0"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                            stdin=subprocess.DEVNULL, timeout=240)
    if switch == "on":
        assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
    else:
        assert result.returncode != 0 and "trust_remote_code" in result.stderr, result.stderr[-3000:]
