"""Report sectioning, sentence splitting, normalisation and hashing (processing/report_place.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modeling_place.processing.report_place import (
    extract_report_text,
    find_sections,
    normalize_sentence,
    report_to_sentences,
    sentence_hash,
    split_sentences,
    to_valid_unicode,
)

MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with new onset ascites  // eval for infection

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows. The
 cardiomediastinal silhouette is normal.  Clip is seen in the right upper
 quadrant of the abdomen.

 IMPRESSION:

 No acute cardiopulmonary process.
"""

MIMIC_WET_READ_REPORT = """WET READ: ___ ___ ___ 2:38 PM
  Left IJ catheter tip in the SVC.

                                 FINAL REPORT
 HISTORY:  ___-year-old man with chest pain.

 COMPARISON:  Chest radiograph from ___.

 FINDINGS:  The left internal jugular catheter terminates in the mid SVC.  Heart
 size is normal. A 1.5 cm nodule projects over the right lower lobe, approx. 2 cm
 from the hilum.

 IMPRESSION:
 1.  No pneumothorax.
 2.  Right lower lobe nodule, e.g. a granuloma; CT is recommended.

 NOTIFICATION:  Dr. ___ was paged at 3:10 p.m. on ___.
"""

IU_XRAY_REPORT = (
    "FINDINGS: The heart is normal in size. The mediastinum is unremarkable. The lungs are clear. "
    "IMPRESSION: No acute disease."
)

SECTION_CASES = [
    (
        MIMIC_REPORT,
        {
            "examination": "CHEST (PA AND LAT)",
            "indication": "___F with new onset ascites  // eval for infection",
            "technique": "Chest PA and lateral",
            "comparison": "None.",
            "findings": "There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral\n nodular "
            "opacities that most likely represent nipple shadows. The\n cardiomediastinal silhouette is normal.  "
            "Clip is seen in the right upper\n quadrant of the abdomen.",
            "impression": "No acute cardiopulmonary process.",
        },
    ),
    (
        MIMIC_WET_READ_REPORT,
        {
            "wet read": "___ ___ ___ 2:38 PM\n  Left IJ catheter tip in the SVC.",
            "history": "___-year-old man with chest pain.",
            "comparison": "Chest radiograph from ___.",
            "findings": "The left internal jugular catheter terminates in the mid SVC.  Heart\n size is normal. A 1.5 "
            "cm nodule projects over the right lower lobe, approx. 2 cm\n from the hilum.",
            "impression": "1.  No pneumothorax.\n 2.  Right lower lobe nodule, e.g. a granuloma; CT is recommended.",
            "notification": "Dr. ___ was paged at 3:10 p.m. on ___.",
        },
    ),
    (
        IU_XRAY_REPORT,
        {
            "findings": "The heart is normal in size. The mediastinum is unremarkable. The lungs are clear.",
            "impression": "No acute disease.",
        },
    ),
    (
        "Findings\r\nLungs are clear.\r\n\r\nimpression\r\nNormal chest",
        {"findings": "Lungs are clear.", "impression": "Normal chest"},
    ),
    (
        "Preliminary text.\nCLINICAL HISTORY: cough\nReason for examination: fever\nConclusion: pneumonia",
        {"preamble": "Preliminary text.", "history": "cough", "indication": "fever", "impression": "pneumonia"},
    ),
    (
        "FINDINGS: Small effusion.\nIMPRESSION: Effusion.\nIMPRESSION: Addendum text.",
        {"findings": "Small effusion.", "impression": "Effusion.\nAddendum text."},
    ),
    ("The history of present illness: none. Findings are stable.", {}),  # prose, not headers
    ("", {}),
]

SENTENCE_CASES = [
    (
        MIMIC_REPORT,
        [
            "There is no focal consolidation, pleural effusion or pneumothorax.",
            "Bilateral nodular opacities that most likely represent nipple shadows.",
            "The cardiomediastinal silhouette is normal.",
            "Clip is seen in the right upper quadrant of the abdomen.",
            "No acute cardiopulmonary process.",
        ],
    ),
    (
        MIMIC_WET_READ_REPORT,
        [
            "The left internal jugular catheter terminates in the mid SVC.",
            "Heart size is normal.",
            "A 1.5 cm nodule projects over the right lower lobe, approx. 2 cm from the hilum.",
            "No pneumothorax.",
            "Right lower lobe nodule, e.g. a granuloma; CT is recommended.",
        ],
    ),
    (
        IU_XRAY_REPORT,
        [
            "The heart is normal in size.",
            "The mediastinum is unremarkable.",
            "The lungs are clear.",
            "No acute disease.",
        ],
    ),
    (
        "Heart size normal. Lungs clear. No effusion or pneumothorax",
        ["Heart size normal.", "Lungs clear.", "No effusion or pneumothorax"],
    ),
    (
        "Clinical history: cough\nImpression: 1. Lungs clear 2. No effusion 3. Stable cardiomegaly.",
        ["Lungs clear", "No effusion", "Stable cardiomegaly."],
    ),
    ("FINDINGS:\n1) First finding\n2) Second finding", ["First finding", "Second finding"]),
    ("Findings\nLungs are clear.\n\nImpression\nNormal chest", ["Lungs are clear.", "Normal chest"]),
    ("INDICATION: Cough.\nCOMPARISON: None.", []),  # headers, but neither findings nor impression
    ("   \n\t ", []),
    ("", []),
]

SPLIT_CASES = [
    ("Measures 2.5 x 1.3 cm. Unchanged.", ["Measures 2.5 x 1.3 cm.", "Unchanged."]),
    ("The 5 mm. nodule is stable!  Is it new? No", ["The 5 mm. nodule is stable!", "Is it new?", "No"]),
    (
        "Atelectasis vs. pneumonia. Clinical correlation advised.",
        ["Atelectasis vs. pneumonia.", "Clinical correlation advised."],
    ),
    ("Low lung volumes, i.e. poor inspiration. No edema.", ["Low lung volumes, i.e. poor inspiration.", "No edema."]),
    (
        "Dr. ___ was notified by Dr. Smith. Findings discussed.",
        ["Dr. ___ was notified by Dr. Smith.", "Findings discussed."],
    ),
    ("Compared to ___. ___. Lungs clear.", ["Compared to ___.", "Lungs clear."]),
    (
        "ET tube 4.5 cm above the carina.\n- Stable lines\n* NG tube in stomach",
        ["ET tube 4.5 cm above the carina.", "Stable lines", "NG tube in stomach"],
    ),
    ("lungs are clear. no effusion. heart normal.", ["lungs are clear.", "no effusion.", "heart normal."]),
    ("Line wrapped\nacross lines. Next.", ["Line wrapped across lines.", "Next."]),
    ("...", []),
]


@pytest.mark.parametrize("report, expected", SECTION_CASES)
def test_find_sections(report, expected):
    assert find_sections(report) == expected


@pytest.mark.parametrize("report, expected", SENTENCE_CASES)
def test_report_to_sentences(report, expected):
    assert report_to_sentences(report) == expected


@pytest.mark.parametrize("text, expected", SPLIT_CASES)
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_extract_report_text_sections_and_fallback():
    assert extract_report_text(IU_XRAY_REPORT, ["impression"]) == "No acute disease."
    assert extract_report_text(IU_XRAY_REPORT, ["IMPRESSION", "findings"]).startswith("No acute disease.\n\nThe heart")
    assert extract_report_text("  No headers here.  ") == "No headers here."
    assert extract_report_text("INDICATION: Cough.") == ""
    with pytest.raises(ValueError, match="Unknown section"):
        extract_report_text(IU_XRAY_REPORT, ["diagnosis"])
    with pytest.raises(TypeError, match="sequence of section names"):
        extract_report_text(IU_XRAY_REPORT, "findings")


def test_max_sentences_keeps_the_first():
    assert report_to_sentences(IU_XRAY_REPORT, max_sentences=2) == SENTENCE_CASES[2][1][:2]
    assert report_to_sentences(IU_XRAY_REPORT, max_sentences=0) == []
    with pytest.raises(ValueError, match="max_sentences"):
        report_to_sentences(IU_XRAY_REPORT, max_sentences=-1)


@pytest.mark.parametrize(
    "sentence, expected",
    [
        ("No  PNEUMOTHORAX.", "no pneumothorax"),
        ("Dr. ___ was paged.", "dr was paged"),
        ("A 1.5 cm nodule", "a 1 5 cm nodule"),
        ("Left-sided effusion; (small)", "left sided effusion small"),
        ("\uff2e\uff4f effusion", "no effusion"),  # full-width letters, NFKC
        ("___ ...", ""),
    ],
)
def test_normalize_sentence(sentence, expected):
    assert normalize_sentence(sentence) == expected


def test_sentence_hash_is_pinned_nonzero_and_normalisation_invariant():
    # A pinned value: the hash is blake2b-8 of the normalised text, the same on every machine.
    assert sentence_hash("No pneumothorax.") == -4889545636787558990
    assert sentence_hash("no  PNEUMOTHORAX") == sentence_hash("No pneumothorax.")
    assert sentence_hash("No pneumothorax.") != sentence_hash("Small pneumothorax.")


@pytest.mark.parametrize(
    "function",
    [find_sections, extract_report_text, split_sentences, normalize_sentence, sentence_hash, report_to_sentences],
)
@pytest.mark.parametrize("value", [None, float("nan"), b"FINDINGS: clear.", 3])
def test_non_string_input_raises_type_error_naming_type(function, value):
    with pytest.raises(TypeError, match=type(value).__name__):
        function(value)


@settings(max_examples=300, deadline=None)
@given(st.text() | st.text(alphabet="ab.?!:;_-*()\n\t 12FINDGSIMPRESOfindgs", max_size=200))
def test_arbitrary_text_never_raises_and_sentences_are_clean(text):
    sections = find_sections(text)
    assert all(body == body.strip() and body for body in sections.values())
    sentences = report_to_sentences(text)
    for sentence in sentences:
        assert sentence == sentence.strip() and "\n" not in sentence
        assert normalize_sentence(sentence)  # never an empty observation
        value = sentence_hash(sentence)
        assert value != 0 and -(2**63) <= value < 2**63
    assert report_to_sentences(text, max_sentences=2) == sentences[:2]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(categories=["Ll", "Lu", "Nd", "Zs", "Po"]), max_size=60))
def test_hash_depends_only_on_normalised_text(text):
    variant = "  " + text.upper().replace(" ", "   ") + " ..."
    if normalize_sentence(variant) == normalize_sentence(text):
        assert sentence_hash(variant) == sentence_hash(text)


def test_hashes_are_identical_in_another_process():
    """Another interpreter with a different PYTHONHASHSEED reproduces the hashes (stdlib-only import)."""
    sentences = [case[1][0] for case in SENTENCE_CASES if case[1]] + ["\u00e9panchement pleural", "___"]
    module_path = Path(__file__).resolve().parents[1] / "processing" / "report_place.py"
    script = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('report_place', {str(module_path)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "print(json.dumps([module.sentence_hash(s) for s in json.loads(sys.stdin.read())]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", script], input=json.dumps(sentences), capture_output=True, text=True, env=env, check=True
    )
    assert json.loads(result.stdout) == [sentence_hash(sentence) for sentence in sentences]


# ------------------------------------------------------------------------------------------ issue 26: bad text

HEADERS_ONLY = ["FINDINGS:", "FINDINGS:\nIMPRESSION:", "  Findings\n\nImpression:  \n", "FINAL REPORT\nFINDINGS:\r\nIMPRESSION:",
                "INDICATION: cough.\nFINDINGS:\nIMPRESSION:", "findings:\n   \nimpressions:\t"]


@pytest.mark.parametrize("report", HEADERS_ONLY)
def test_reports_with_only_empty_sections_have_no_text_and_no_sentences(report):
    # Before: the header words came back as the report's one sentence, shared by every such report (one hash).
    assert extract_report_text(report) == ""
    assert report_to_sentences(report) == []
    assert "findings" not in find_sections(report) and "impression" not in find_sections(report)


def test_text_is_valid_unicode_before_tokenisation():
    lone = "FINDINGS: No effusion \ud800. Heart size is normal \udfff."
    sentences = report_to_sentences(lone)
    assert sentences == ["No effusion \ufffd.", "Heart size is normal \ufffd."]
    for sentence in sentences:
        sentence.encode("utf-8")  # a lone surrogate would raise UnicodeEncodeError here (and in the tokenizer)
    assert report_to_sentences("FINDINGS: Pain \ud83d\ude00 noted.") == ["Pain \U0001F600 noted."]  # a pair is joined
    assert to_valid_unicode("plain text") == "plain text"
    assert extract_report_text("no headers \udc80 here").encode("utf-8")
    assert sentence_hash("No effusion \ud800.") == sentence_hash("No effusion \ufffd.")
    with pytest.raises(TypeError, match="bytes"):
        to_valid_unicode(b"FINDINGS")


_ANY_CHARACTER = st.characters(categories=["L", "M", "N", "P", "S", "Z", "C"])  # surrogates (Cs) included
_HEADER_WORDS = st.sampled_from(["FINDINGS", "IMPRESSION", "Findings", "impressions", "INDICATION", "COMPARISON"])


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=_ANY_CHARACTER, max_size=120)
       | st.lists(st.tuples(_HEADER_WORDS, st.sampled_from([":", ": ", "\n", ":\n\n", ":\r\n"]),
                            st.text(alphabet=_ANY_CHARACTER, max_size=15)), max_size=4)
       .map(lambda parts: "\n".join(h + s + t for h, s, t in parts)))  # headers open a line, as in reports
def test_report_pipeline_on_random_text_never_raises_and_returns_clean_sentences(report):
    sentences = report_to_sentences(report)
    for sentence in sentences:
        assert sentence.strip() and normalize_sentence(sentence)
        sentence.encode("utf-8")
        assert normalize_sentence(sentence) not in ("findings", "impression", "impressions")  # never a bare header
        sentence_hash(sentence)
    assert extract_report_text(report).encode("utf-8") is not None
