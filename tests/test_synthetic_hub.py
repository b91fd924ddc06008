"""The synthetic benchmark as a Hub dataset: `place-synth --push-to-hub`, then `load_dataset(repo, config)`.

Both run in one subprocess pointed at `tests.hub_server.LocalHub` (HF_ENDPOINT must be set before
`huggingface_hub` is imported); this process stays offline and reads what the subprocess loaded back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import yaml

from modeling_place.data.synthetic_cxr import DEVICES, FINDINGS, OPACITY_FINDINGS, RETRIEVAL_CLASSES, SPLIT_SIZES
from tests.hub_server import LocalHub

REPO = "place-org/synthetic-cxr"

PUSH_AND_LOAD = textwrap.dedent(
    """
    import json, sys
    from datasets import load_dataset
    from modeling_place.data.synthetic_cxr import main
    out, repo = sys.argv[1], sys.argv[2]
    main(["--size", "2", "--image-size", "32", "--out", out + "/cache", "--contact-sheet", out + "/sheet.png",
          "--push-to-hub", repo])
    loaded = {}
    for config in sys.argv[3:]:
        dataset = load_dataset(repo, config)
        first = next(iter(dataset.values()))
        row = {key: value for key, value in first[0].items() if key != "image" and "mask" not in key}
        loaded[config] = {"subsets": {name: len(subset) for name, subset in dataset.items()},
                          "features": first.features.to_dict(), "row": row}
    json.dump(loaded, open(out + "/loaded.json", "w"), default=str)
    """
)


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("synthetic_hub")
    with LocalHub() as hub:
        env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
        env.update(hub.client_env(), HF_HOME=str(tmp / "hf"), OMP_NUM_THREADS="1")
        command = [sys.executable, "-c", PUSH_AND_LOAD, str(tmp), REPO, *SPLIT_SIZES]
        result = subprocess.run(command, env=env, cwd=tmp, capture_output=True, text=True, timeout=240)
        assert result.returncode == 0, result.stderr[-4000:]
        readme = hub.repo(REPO, repo_type="dataset").resolve("main").files["README.md"].content.decode()
    yield {"loaded": json.loads((tmp / "loaded.json").read_text()), "readme": readme}


def _names(feature: dict) -> list[str]:
    """Label names of a ClassLabel, or of the ClassLabel inside a list, as `Features.to_dict` writes them."""
    return (feature.get("feature") or feature)["names"]


def test_every_config_loads_back_with_named_labels(pushed):
    loaded = pushed["loaded"]
    assert set(loaded) == set(SPLIT_SIZES)
    for config, content in loaded.items():
        assert set(content["subsets"]) == set(SPLIT_SIZES[config]), config
        features = content["features"]
        assert _names(features["labels"]) == list(FINDINGS), config
        finding = features["findings"]["feature"]
        assert finding["name"]["names"] == list(FINDINGS) and finding["side"]["dtype"] == "string", config
        assert isinstance(content["row"]["findings"], list), config  # structured, not a JSON string
    assert _names(loaded["retrieval"]["features"]["class_label"]) == list(RETRIEVAL_CLASSES)
    assert _names(loaded["ground"]["features"]["finding"]) == list(FINDINGS)
    objects = loaded["detect"]["features"]["objects"]
    assert _names(objects["category"]) == list(OPACITY_FINDINGS + DEVICES)
    assert set(objects) == {"id", "area", "bbox", "category"} and "opacity_boxes" not in loaded["detect"]["features"]
    row = loaded["detect"]["row"]["objects"]
    assert len(row["bbox"]) == len(row["category"]) == len(row["area"])


def test_dataset_card_describes_generation_limits_and_licence(pushed):
    readme = pushed["readme"]
    metadata = yaml.safe_load(readme.split("---")[1])
    assert metadata["license"] == "apache-2.0" and "object-detection" in metadata["task_categories"]
    assert {config["config_name"] for config in metadata["configs"]} == set(SPLIT_SIZES)  # datasets merged them
    for section in ("## How it is generated", "## What it models, and what it does not", "## Licence",
                    "no patient data", "| `detect` | train 2, validation 1, test 1 |"):
        assert section in readme, section
