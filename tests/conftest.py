"""Shared test set-up: offline, deterministic, temporary caches."""
import os
import tempfile

# Must be set before huggingface_hub / transformers are imported anywhere in the test session.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Synthetic data built by tests goes to a per-session folder, never to the user's cache.
os.environ["PLACE_DATA_CACHE"] = tempfile.mkdtemp(prefix="place-test-data-")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed_and_isolate(tmp_path, monkeypatch):
    """Every test starts from the same seed and writes remote-code caches to its own folder."""
    torch.manual_seed(0)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    yield
