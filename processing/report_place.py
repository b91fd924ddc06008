"""Radiology report text: sections, sentences, normalisation and sentence hashes.

Pure Python (stdlib only) so that it ships as Hub custom code next to `processing_place.py`.

In PLACE a *textual pathology observation* is a sentence of the FINDINGS / IMPRESSION part of a report
(see `docs/METHOD.md`, "Textual observations"). This module turns a raw report into those sentences and
gives every sentence a stable 64-bit hash of its normalised text, so that identical observations in
different reports ("No pneumothorax.") can be recognised as the same positive.

Conventions (all functions):

* Every function takes `str` input and raises `TypeError` naming the received type otherwise (a `NaN` from a
  pandas column is a `float`, for example). No other exception is raised for any string.
* An empty or whitespace-only report has no sections and no sentences: `report_to_sentences("") == []`.
  So has a report whose section headers are all empty (`"FINDINGS:"`, `"FINDINGS:\\nIMPRESSION:"`): the
  header words are never text.
* Line endings `\\r\\n` / `\\r` are treated as `\\n`.
* Text is made valid Unicode first (`to_valid_unicode`): surrogate pairs written as two code points are joined,
  lone surrogates become U+FFFD, so every returned string encodes as UTF-8 (tokenizers and Arrow need that).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
import unicodedata
from collections.abc import Sequence

__all__ = [
    "SECTION_ALIASES",
    "extract_report_text",
    "find_sections",
    "normalize_sentence",
    "report_to_sentences",
    "sentence_hash",
    "split_sentences",
    "to_valid_unicode",
]

#: Header text (lower case, single spaces) -> canonical section name. Misspellings and variants follow the
#: MIT-LCP MIMIC-CXR section parser; "final report" opens the preamble.
SECTION_ALIASES: dict[str, str] = {
    "final report": "preamble",
    "findings": "findings",
    "finding": "findings",
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "findings and impression": "impression",
    "findings/impression": "impression",
    "indication": "indication",
    "indications": "indication",
    "clinical indication": "indication",
    "reason for exam": "indication",
    "reason for examination": "indication",
    "history": "history",
    "clinical history": "history",
    "clinical information": "history",
    "patient history": "history",
    "comparison": "comparison",
    "comparisons": "comparison",
    "technique": "technique",
    "examination": "examination",
    "exam": "examination",
    "type of examination": "examination",
    "notification": "notification",
    "recommendation": "recommendations",
    "recommendations": "recommendations",
    "recommendation(s)": "recommendations",
    "addendum": "addendum",
    "wet read": "wet read",
}


# Longest names first so that "clinical history" wins over "history"; internal spaces match any blank run.
def _header_alternatives(upper: bool) -> str:
    names = sorted(SECTION_ALIASES, key=len, reverse=True)
    return "|".join(re.escape(name.upper() if upper else name).replace(r"\ ", r"[ \t]+") for name in names)


# Alternative 1: a header at the start of a line, any case, followed by a colon or alone on its line.
# Alternative 2: an UPPER-CASE header with a colon inside a line ("... normal. IMPRESSION: ..."), as found in
# reports whose line breaks were flattened. Lower-case words inside a line are prose, never headers.
_HEADER_RE = re.compile(
    rf"^[ \t]*(?P<line>(?i:{_header_alternatives(upper=False)}))[ \t]*(?::|(?=[ \t]*$))"
    rf"|(?<=\s)(?P<inline>{_header_alternatives(upper=True)})[ \t]*:",
    re.MULTILINE,
)

#: Abbreviations that never end a sentence ("Dr. ___", "e.g. pneumonia", "approx. 5 cm").
_NEVER_FINAL = frozenset("dr drs mr mrs ms prof vs e.g eg i.e ie approx appr apprx incl cf fig figs st resp".split())
#: Abbreviations that end a sentence only when the next word is not lower case ("5 cm. The" vs "5 cm. in").
_MAYBE_FINAL = frozenset("cm mm m in ft etc a.m p.m pt pts min sec hr hrs".split())

_PARAGRAPH_BREAK_RE = re.compile(r"\n[ \t]*\n\s*")
_LINE_BULLET_RE = re.compile(r"\n[ \t]*(?=(?:\d{1,2}[.)]|[-*\u2022])[ \t]+)")
_NUMBER_BULLET_RE = re.compile(r"(?<!\S)(\d{1,2})[.)]\s+(?=\S)")
_SENTENCE_END_RE = re.compile(r"[.!?]+['\")\]]*(?=\s|$)")
_LEADING_BULLET_RE = re.compile(r"^\s*(?:\d{1,2}[.)]|[-*\u2022])\s+")
_WHITESPACE_RE = re.compile(r"\s+")
_NON_WORD_RE = re.compile(r"[^\w\s]|_")


def _check_str(value: object, name: str) -> str:
    """Return `value` unchanged if it is a `str`; raise the documented `TypeError` otherwise."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}: {value!r:.80}")
    return value


def _normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def to_valid_unicode(text: str) -> str:
    """`text` with surrogate code points repaired: a high + low pair becomes its character, a lone surrogate
    becomes U+FFFD. Such strings come from `surrogateescape` decoding or broken JSON escapes; they cannot be
    encoded as UTF-8, so a tokenizer (or Arrow) would fail on them later, far from the report.

    Raises:
        TypeError: If `text` is not a `str`.
    """
    _check_str(text, "text")
    if text.isascii() or not _SURROGATE_RE.search(text):
        return text  # the common case costs one scan
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _clean(value: object, name: str) -> str:
    """The documented input check, valid Unicode and `\\n` line endings: what every entry point starts with."""
    return _normalize_newlines(to_valid_unicode(_check_str(value, name)))


def _headers(text: str) -> list[re.Match]:
    return list(_HEADER_RE.finditer(text))


def find_sections(report: str) -> dict[str, str]:
    """Split a report into its sections.

    Recognised headers (any case, with or without a colon, alone on their line or followed by text) are the
    keys of `SECTION_ALIASES`; they map to canonical names such as `"findings"`, `"impression"`,
    `"indication"`, `"history"`, `"comparison"`, `"technique"`, `"examination"`, `"notification"`. Text
    before the first header and text under "FINAL REPORT" go to `"preamble"`. A section that appears twice
    is joined with a newline. Sections with no text are omitted.

    Args:
        report: The raw report.

    Returns:
        Canonical section name -> stripped section text, in order of first appearance. `{}` when no known
        header is present (the caller then decides whether the whole text is usable).

    Raises:
        TypeError: If `report` is not a `str`.
    """
    text = _clean(report, "report")
    headers = _headers(text)
    if not headers:
        return {}
    sections: dict[str, list[str]] = {"preamble": [text[: headers[0].start()]]}
    for header, following in zip(headers, [*headers[1:], None], strict=True):
        name = SECTION_ALIASES[_WHITESPACE_RE.sub(" ", (header["line"] or header["inline"]).lower())]
        body = text[header.end() : following.start() if following else len(text)]
        sections.setdefault(name, []).append(body)
    joined = {name: "\n".join(part.strip() for part in parts if part.strip()) for name, parts in sections.items()}
    return {name: body for name, body in joined.items() if body}


def extract_report_text(report: str, sections: Sequence[str] = ("findings", "impression")) -> str:
    """Return the chosen sections of a report, joined by a blank line (a sentence boundary).

    Args:
        report: The raw report.
        sections: Canonical section names (see `find_sections`), in output order; case-insensitive.

    Returns:
        The chosen sections' text. When the report has no known header at all, the whole (stripped) report.
        When it has headers but none of the chosen sections has text (including a report that is only empty
        headers, `"FINDINGS:\\nIMPRESSION:"`), `""`.

    Raises:
        TypeError: If `report` is not a `str` or `sections` is a bare string.
        ValueError: If a name in `sections` is not a canonical section name.
    """
    wanted = _check_section_names(sections)
    text = _clean(report, "report")
    if not _headers(text):
        return text.strip()
    found = find_sections(text)
    return "\n\n".join(found[name] for name in wanted if name in found)


def _check_section_names(sections: Sequence[str]) -> list[str]:
    if isinstance(sections, str):
        raise TypeError(f"sections must be a sequence of section names, got the str {sections!r}")
    known = set(SECTION_ALIASES.values())
    wanted = [_check_str(name, "section name").lower() for name in sections]
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise ValueError(f"Unknown section name(s) {unknown}; known: {sorted(known)}")
    return wanted


def split_sentences(text: str) -> list[str]:
    """Split report text into sentences.

    Rules: a blank line, a line that starts with a bullet ("1.", "2)", "-", "*", "•") and an inline numbered
    bullet (after a sentence end, or continuing the count "1. ... 2. ...") start a new sentence; bullet markers
    are removed. Inside a paragraph, single line breaks are spaces (reports are hard-wrapped) and a sentence
    ends at ".", "!" or "?" followed by white space, except after abbreviations that never end a sentence
    ("Dr.", "e.g.", "i.e.", "vs.", "approx.") and after units that do only when the next word is not
    lower case ("1.5 cm. The ..." splits, "5 cm. in diameter" does not). Decimals ("1.5") never split.
    De-identification marks ("___") are kept as text. White space inside a sentence is collapsed to single
    spaces. Pieces whose normalised text is empty (only punctuation or de-id marks) are dropped, so no
    returned sentence is empty.

    Args:
        text: Report text, usually the output of `extract_report_text`.

    Returns:
        The sentences, in order.

    Raises:
        TypeError: If `text` is not a `str`.
    """
    text = _clean(text, "text")
    sentences = []
    for block in _split_blocks(text):
        for piece in _split_block_sentences(block):
            piece = _LEADING_BULLET_RE.sub("", piece).strip()
            if normalize_sentence(piece):
                sentences.append(piece)
    return sentences


def _split_blocks(text: str) -> list[str]:
    """Cut at paragraph breaks, line-start bullets and inline numbered bullets; collapse white space.
    Bullet markers stay at the start of their block (numbering context); `split_sentences` removes them."""
    text = _LINE_BULLET_RE.sub("\n\n", "\n" + text)
    blocks = []
    for paragraph in _PARAGRAPH_BREAK_RE.split(text):
        paragraph = _WHITESPACE_RE.sub(" ", paragraph).strip()
        blocks.extend(block for block in _split_inline_bullets(paragraph) if block)
    return blocks


def _split_inline_bullets(paragraph: str) -> list[str]:
    """Split "1. A 2. B" style lists. A number is a bullet at the paragraph start, after a sentence end or
    colon, or when it continues the previous bullet's count; "measures 5. ..." alone is not a bullet."""
    cuts, expected = [], None
    for match in _NUMBER_BULLET_RE.finditer(paragraph):
        number, before = int(match[1]), paragraph[: match.start()].rstrip()
        if before == "" or before[-1] in ".!?:;" or number == expected:
            cuts.append(match.start())
            expected = number + 1
    bounds = [0, *cuts, len(paragraph)]
    return [paragraph[start:end].strip() for start, end in itertools.pairwise(bounds)]


def _split_block_sentences(block: str) -> list[str]:
    pieces, start = [], 0
    for end in _SENTENCE_END_RE.finditer(block):
        if _is_sentence_end(block, end.start(), end.end()):
            pieces.append(block[start : end.end()])
            start = end.end()
    pieces.append(block[start:])
    return pieces


def _is_sentence_end(block: str, punct_start: int, punct_end: int) -> bool:
    """Decide whether the punctuation at `block[punct_start:punct_end]` ends a sentence."""
    before = block[:punct_start].rsplit(None, 1)
    if block[punct_start] != "." or not before:
        return True
    if len(before) == 1 and before[0].isdigit():
        return False  # the "1." of a bullet that opens the block
    previous_word = before[-1].lstrip("([\"'").lower()
    if previous_word in _NEVER_FINAL:
        return False
    if previous_word in _MAYBE_FINAL:
        following = block[punct_end:].lstrip()
        return not following[:1].islower()
    return True


def normalize_sentence(sentence: str) -> str:
    """Normalise a sentence for comparison and hashing.

    NFKC unicode normalisation, lower case, every punctuation/symbol character and underscore (so also
    de-identification marks "___") replaced by a space, white space collapsed and stripped.
    `normalize_sentence("No  pneumothorax.") == "no pneumothorax"`; "1.5 cm" becomes "1 5 cm" (not "15 cm").

    Raises:
        TypeError: If `sentence` is not a `str`.
    """
    return _normalize_cached(_check_str(sentence, "sentence"))


@functools.lru_cache(maxsize=1 << 16)  # report sentences repeat a lot ("No pneumothorax.")
def _normalize_cached(sentence: str) -> str:
    text = unicodedata.normalize("NFKC", to_valid_unicode(sentence)).lower()
    return _WHITESPACE_RE.sub(" ", _NON_WORD_RE.sub(" ", text)).strip()


@functools.lru_cache(maxsize=1 << 16)
def _hash_normalized(normalized: str) -> int:
    digest = hashlib.blake2b(normalized.encode("utf-8"), digest_size=8).digest()
    value = int.from_bytes(digest, "little", signed=True)
    return value or 1  # 0 is reserved for "no sentence in this slot"


def sentence_hash(sentence: str) -> int:
    """Stable signed 64-bit hash of `normalize_sentence(sentence)`.

    blake2b with an 8-byte digest read as a little-endian signed integer: identical across processes,
    machines and Python versions (unlike `hash()`). Never 0, which marks an empty sentence slot.

    Raises:
        TypeError: If `sentence` is not a `str`.
    """
    return _hash_normalized(normalize_sentence(sentence))


def report_to_sentences(
    report: str,
    sections: Sequence[str] = ("findings", "impression"),
    max_sentences: int | None = None,
) -> list[str]:
    """Report -> the sentences of its chosen sections (`extract_report_text` then `split_sentences`).

    Args:
        report: The raw report.
        sections: Canonical section names to keep, in order.
        max_sentences: Keep at most this many (the first ones); `None` keeps all.

    Returns:
        The sentences; `[]` for an empty or whitespace-only report, or one without the chosen sections.

    Raises:
        TypeError: If `report` is not a `str`.
        ValueError: If `max_sentences` is negative or a section name is unknown.
    """
    if max_sentences is not None and max_sentences < 0:
        raise ValueError(f"max_sentences must be >= 0 or None, got {max_sentences}")
    sentences = split_sentences(extract_report_text(report, sections))
    return sentences if max_sentences is None else sentences[:max_sentences]
