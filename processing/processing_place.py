"""`PlaceProcessor`: images and radiology reports -> the tensors a PLACE model consumes.

Text path (per report): chosen sections (`extract_report_text`) -> at most `max_sentences` sentences
(`split_sentences`) -> the sentences joined by single spaces are tokenised in ONE batched tokenizer call with
offset mapping -> each token is assigned the sentence whose character span contains it. Outputs:

* `input_ids`, `attention_mask` (B x L): the joined sentences, truncated to `max_length` and padded to the
  longest report of the batch; the global text embedding sees the whole kept report.
* `sentence_ids` (B x L, int64): index of the sentence each token belongs to; -1 for special tokens, padding
  and for every token of a sentence cut by truncation (such a sentence is dropped whole and not counted, so
  the ids of a row are 0..n-1 with n the number of complete sentences).
* `sentence_hashes` (B x K, int64, K = `max_sentences`): `sentence_hash` of each counted sentence, 0 in
  empty slots. Equal hashes mark identical observations across reports (extra positives in PCMA).

An empty report (no sentence in the chosen sections, or only white space) raises a `ValueError` naming its
batch index; use `is_valid_report` to filter a dataset beforehand. A report whose first sentence alone is
longer than `max_length` keeps its (truncated) tokens but has no counted sentence (all ids -1, hashes 0).

Prompt mode (`text_mode="prompt"`, what a report-generation folder's processor is saved with): each text is a
generation prompt, a prefix the report continues (`""` starts it from scratch). It is tokenised as it is, behind
[CLS] and without [SEP], into `input_ids` and `attention_mask` only (padded on the tokenizer's `padding_side`),
which `PlaceForReportGeneration.generate` and `pipeline("image-text-to-text")` take.

Images go through `PlaceImageProcessor` (`train=True` turns on its augmentation) into `pixel_values`; images alone
give `pixel_values` alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .image_processing_place import PlaceImageProcessor
from .report_place import report_to_sentences, sentence_hash

__all__ = ["NO_CUT", "TEXT_MODES", "PlaceProcessor", "assign_sentence_ids", "first_dropped_characters"]

_DEFAULT_SECTIONS = ("findings", "impression")
#: "Nothing was truncated" in `first_dropped_characters`.
NO_CUT = np.iinfo(np.int64).max
#: What `text` is: reports (pretraining: sentences, sentence ids and hashes) or generation prompts.
TEXT_MODES = ("report", "prompt")


#: The `hypothesis_template` for `pipeline("zero-shot-image-classification")`: a finding written as a report
#: sentence ("Pleural effusion." beside report lines like "Small left pleural effusion."). The pipeline tokenises
#: prompts itself, without this processor's section parsing, so the template carries no "FINDINGS:" header (the
#: processor strips headers, so the text tower never saw one); the pipeline's default, "This is a photo of {}.",
#: is nothing a report says.
PLACE_HYPOTHESIS_TEMPLATE = "{}."


class PlaceProcessor(ProcessorMixin):
    r"""Wraps a `PlaceImageProcessor` and a tokenizers-backed BERT-style tokenizer.

    Args:
        image_processor: The image processor; `None` builds a default `PlaceImageProcessor`.
        tokenizer: A fast (tokenizers-backed) tokenizer with offset mapping, e.g. from
            `train_wordpiece_tokenizer` or `load_tokenizer`. Required.
        max_sentences: K, the number of sentence slots per report.
        max_length: Maximum number of tokens per report, special tokens included.
        sections: Report sections that provide the sentences (the whole text when a report has no headers).
        text_mode: `"report"` (pretraining inputs) or `"prompt"` (generation prompts); see the module docstring.

    Example:
        ```python
        >>> processor = PlaceProcessor(tokenizer=tokenizer)
        >>> batch = processor(images=["a.png"], text=["FINDINGS: Lungs are clear. No effusion."])
        >>> batch["sentence_ids"]        # e.g. [[-1, 0, 0, 0, 0, 1, 1, 1, -1]]
        >>> batch["sentence_hashes"]     # [[h0, h1, 0, ..., 0]]
        >>> processor(images=["a.png"], text="The heart", text_mode="prompt")["input_ids"]  # [[CLS, the, heart]]
        ```
    """

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        max_sentences: int = 16,
        max_length: int = 128,
        sections: Sequence[str] = _DEFAULT_SECTIONS,
        text_mode: Literal["report", "prompt"] = "report",
        **kwargs: Any,
    ) -> None:
        if tokenizer is None:
            raise ValueError("PlaceProcessor needs a tokenizer (see modeling_place.processing.tokenization_place)")
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                "PlaceProcessor needs a tokenizers-backed tokenizer with offset mapping; "
                f"got {type(tokenizer).__name__}"
            )
        if getattr(tokenizer, "truncation_side", "right") != "right":
            raise ValueError("PlaceProcessor needs a tokenizer with truncation_side='right' (reports keep their start)")
        _check_positive(max_sentences=max_sentences, max_length=max_length)
        self.text_mode = _check_text_mode(text_mode)
        self.max_sentences = int(max_sentences)
        self.max_length = int(max_length)
        report_to_sentences("", sections)  # validates the section names early
        self.sections = tuple(sections)
        image_processor = image_processor if image_processor is not None else PlaceImageProcessor()
        super().__init__(image_processor, tokenizer, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return ["pixel_values", "input_ids", "attention_mask", "sentence_ids", "sentence_hashes"]

    def __call__(
        self,
        images: Any = None,
        text: str | Sequence[str] | None = None,
        return_tensors: str | None = "pt",
        train: bool = False,
        max_length: int | None = None,
        max_sentences: int | None = None,
        padding: bool | str = "longest",
        text_mode: Literal["report", "prompt"] | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Process images and/or reports of one batch.

        Args:
            images: Anything `PlaceImageProcessor` accepts (one image, a list, file paths).
            text: One report or a list of reports (raw text, sections are found here).
            return_tensors: "pt" (default), "np" or `None` (numpy arrays).
            train: Turn on the image processor's random augmentation.
            max_length / max_sentences: Per-call overrides of the processor's settings.
            padding: Passed to the tokenizer ("longest" pads to the longest report of the batch).
            text_mode: Per-call override of the processor's `text_mode` ("report" or "prompt").
            **kwargs: Extra image processor arguments (e.g. `crop_size`).

        Raises:
            ValueError: When both inputs are missing, image and report counts differ, or a report is empty.
            TypeError: When a report is not a `str` (the message names its batch index).
        """
        if images is None and text is None:
            raise ValueError("PlaceProcessor needs `images`, `text` or both")
        data: dict[str, Any] = {}
        if text is not None:
            if _check_text_mode(text_mode or self.text_mode) == "prompt":
                data.update(self._encode_prompts(text, max_length, padding))
            else:
                data.update(self._encode_reports(text, max_length, max_sentences, padding))
        if images is not None:
            pixels = self.image_processor(images, do_augment=train, return_tensors="pt", **kwargs)["pixel_values"]
            if text is not None and pixels.shape[0] != data["input_ids"].shape[0]:
                raise ValueError(f"Got {pixels.shape[0]} images but {data['input_ids'].shape[0]} reports")
            data["pixel_values"] = pixels.numpy() if return_tensors != "pt" else pixels
        return BatchFeature(data=data, tensor_type=return_tensors)

    def report_sentences(self, report: str, max_sentences: int | None = None) -> list[str]:
        """The sentences this processor would use for `report` (at most `max_sentences`, default K)."""
        return report_to_sentences(report, self.sections, max_sentences or self.max_sentences)

    def is_valid_report(self, text: Any) -> bool:
        """`True` if `text` is a string with at least one sentence in the processor's sections.

        Never raises: `None`, `NaN` and other non-strings are simply invalid. Reports for which this is
        `False` make `__call__` raise, so a trainer filters its dataset with it.
        """
        return isinstance(text, str) and bool(report_to_sentences(text, self.sections, 1))

    def _encode_reports(
        self, text: str | Sequence[str], max_length: int | None, max_sentences: int | None, padding: bool | str
    ) -> dict[str, np.ndarray]:
        reports = [text] if isinstance(text, str) else list(text)
        if not reports:
            raise ValueError("`text` is an empty list: pass at least one report")
        slots = max_sentences or self.max_sentences
        sentences = [self._sentences_of(report, index, slots) for index, report in enumerate(reports)]
        joined, spans = zip(*(_join_with_spans(report_sentences) for report_sentences in sentences), strict=True)
        encoding = self.tokenizer(
            list(joined),
            truncation=True,
            max_length=max_length or self.max_length,
            padding=padding,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
            return_token_type_ids=False,
            return_tensors="np",
        )
        hashes = [[sentence_hash(sentence) for sentence in report_sentences] for report_sentences in sentences]
        sentence_ids, sentence_hashes = assign_sentence_ids(
            encoding["offset_mapping"],
            encoding["special_tokens_mask"],
            encoding["attention_mask"],
            spans,
            hashes,
            slots,
            first_dropped_characters(encoding),
        )
        return {
            "input_ids": encoding["input_ids"].astype(np.int64),
            "attention_mask": encoding["attention_mask"].astype(np.int64),
            "sentence_ids": sentence_ids,
            "sentence_hashes": sentence_hashes,
        }

    def _encode_prompts(
        self, text: str | Sequence[str], max_length: int | None, padding: bool | str
    ) -> dict[str, np.ndarray]:
        """[CLS] + the prompt's tokens, no [SEP]: the report goes on from there."""
        prompts = [text] if isinstance(text, str) else list(text)
        for index, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise TypeError(f"Prompt at batch index {index} must be a str, got {type(prompt).__name__}")
        room = (max_length or self.max_length) - 1  # the [CLS] in front
        tokens = self.tokenizer(prompts, add_special_tokens=False, truncation=True, max_length=room)["input_ids"]
        encoding = self.tokenizer.pad(
            {"input_ids": [[self.tokenizer.cls_token_id, *row] for row in tokens]}, padding=padding, return_tensors="np"
        )
        return {key: encoding[key].astype(np.int64) for key in ("input_ids", "attention_mask")}

    def _sentences_of(self, report: Any, index: int, slots: int) -> list[str]:
        if not isinstance(report, str):
            raise TypeError(f"Report at batch index {index} must be a str, got {type(report).__name__}")
        sentences = report_to_sentences(report, self.sections, slots)
        if not sentences:
            raise ValueError(
                f"Report at batch index {index} has no sentence in sections {list(self.sections)} "
                f"(report: {report!r:.120}); filter such reports with `processor.is_valid_report` "
                "(a generation prompt needs text_mode='prompt')"
            )
        return sentences


def _check_text_mode(text_mode: str) -> str:
    if text_mode not in TEXT_MODES:
        raise ValueError(f"text_mode must be one of {TEXT_MODES}, got {text_mode!r}")
    return text_mode


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _join_with_spans(sentences: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """Join with single spaces; return the text and each sentence's [start, end) character span."""
    spans, position = [], 0
    for sentence in sentences:
        spans.append((position, position + len(sentence)))
        position += len(sentence) + 1
    return " ".join(sentences), spans


def first_dropped_characters(encoding: Any) -> np.ndarray:
    """Per text of a truncated batch, the character offset where the first dropped token starts.

    Reads the `overflowing` part that tokenizers-backed encodings always keep; `NO_CUT` for texts that were
    not truncated. Loops over texts only (the first non-special overflow token is found in <= 2 steps).
    """
    return np.array([_first_dropped_character(text_encoding) for text_encoding in encoding.encodings], dtype=np.int64)


def _first_dropped_character(text_encoding: Any) -> int:
    for overflow in text_encoding.overflowing[:1]:
        for (start, _), special in zip(overflow.offsets, overflow.special_tokens_mask, strict=True):
            if not special:
                return start
    return NO_CUT


def assign_sentence_ids(
    offsets: np.ndarray,
    special_tokens_mask: np.ndarray,
    attention_mask: np.ndarray,
    spans: Sequence[Sequence[tuple[int, int]]],
    hashes: Sequence[Sequence[int]],
    max_sentences: int,
    cut_positions: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Map tokens to sentences for a whole batch at once (no Python loop over tokens).

    Args:
        offsets: B x L x 2 character offsets of the tokens in the joined texts.
        special_tokens_mask: B x L, 1 for special and padding tokens.
        attention_mask: B x L, 0 for padding.
        spans: Per report, the [start, end) character span of each sentence (at least one, sorted, separated
            by at least one character that no token starts at, e.g. a space).
        hashes: Per report, the hash of each sentence.
        max_sentences: K, the number of hash slots.
        cut_positions: B, character offset of the first token removed by truncation (`NO_CUT` if none).

    Returns:
        `sentence_ids` (B x L int64, -1 outside counted sentences) and `sentence_hashes` (B x K int64, 0 for
        empty slots). A sentence is counted when truncation kept all of it (the cut lies beyond its end) and
        it has at least one token; counted sentences are renumbered 0..n-1 in order.
    """
    batch = offsets.shape[0]
    counts = np.array([len(report_spans) for report_spans in spans])
    rows = np.repeat(np.arange(batch), counts)
    cols = np.concatenate([np.arange(count) for count in counts])
    span_array = np.zeros((batch, max_sentences, 2), dtype=np.int64)
    span_array[rows, cols] = np.concatenate([np.asarray(report_spans, dtype=np.int64) for report_spans in spans])
    hash_array = np.zeros((batch, max_sentences), dtype=np.int64)
    hash_array[rows, cols] = np.concatenate([np.asarray(report_hashes, dtype=np.int64) for report_hashes in hashes])
    slot_used = np.arange(max_sentences)[None, :] < counts[:, None]
    complete = slot_used & (span_array[:, :, 1] < np.asarray(cut_positions)[:, None])

    is_text = (special_tokens_mask == 0) & (attention_mask == 1)
    local = _token_sentence_index(offsets[..., 0], span_array, rows, cols, is_text)
    row_index = np.arange(batch)[:, None]
    in_complete = is_text & complete[row_index, local]
    tokens_per_sentence = np.zeros((batch, max_sentences), dtype=np.int64)
    np.add.at(tokens_per_sentence, (np.broadcast_to(row_index, local.shape)[in_complete], local[in_complete]), 1)
    counted = complete & (tokens_per_sentence > 0)
    new_index = np.cumsum(counted, axis=1) - 1
    sentence_ids = np.where(in_complete & counted[row_index, local], new_index[row_index, local], -1)
    sentence_hashes = np.zeros_like(hash_array)
    kept_rows, kept_cols = np.nonzero(counted)
    sentence_hashes[kept_rows, new_index[kept_rows, kept_cols]] = hash_array[kept_rows, kept_cols]
    return sentence_ids.astype(np.int64), sentence_hashes


def _token_sentence_index(
    token_starts: np.ndarray, span_array: np.ndarray, rows: np.ndarray, cols: np.ndarray, is_text: np.ndarray
) -> np.ndarray:
    """Index (within its report) of the last sentence starting at or before each token; 0 for non-text."""
    stride = int(max(token_starts.max(initial=0), span_array[rows, cols, 1].max(initial=0))) + 1
    flat_starts = rows * stride + span_array[rows, cols, 0]  # sorted: reports in order, spans increasing
    positions = np.arange(token_starts.shape[0])[:, None] * stride + token_starts
    global_index = np.searchsorted(flat_starts, positions, side="right") - 1
    first_of_report = np.searchsorted(rows, np.arange(token_starts.shape[0]), side="left")
    local = global_index - first_of_report[:, None]
    return np.where(is_text, np.clip(local, 0, span_array.shape[1] - 1), 0)


PlaceProcessor.register_for_auto_class("AutoProcessor")
