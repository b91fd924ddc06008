"""PLACE: pathological-level image-report pretraining for chest X-rays, Hugging Face native.

Importing this package registers `PlaceImageProcessor` with `AutoImageProcessor` and `PlaceProcessor` with
`AutoProcessor`, so saved folders load without `trust_remote_code`. The key is the model's `PlaceConfig`
when `modeling_place` is importable, else the model type string "place"; the Auto classes resolve the saved
`image_processor_type` / `processor_class` names against these registrations either way.
"""

from transformers import AutoImageProcessor, AutoProcessor

from .image_processing_place import PlaceImageProcessor
from .processing_place import PlaceProcessor
from .report_place import (
    extract_report_text,
    find_sections,
    normalize_sentence,
    report_to_sentences,
    sentence_hash,
    split_sentences,
)
from .tokenization_place import load_tokenizer, train_wordpiece_tokenizer


def _registration_key() -> object:
    try:
        from modeling_place.configuration_place import PlaceConfig
    except ImportError:
        return "place"
    return PlaceConfig


AutoImageProcessor.register(
    _registration_key(), image_processor_classes={"torchvision": PlaceImageProcessor}, exist_ok=True
)
AutoProcessor.register(_registration_key(), PlaceProcessor, exist_ok=True)

__all__ = [
    "PlaceImageProcessor",
    "PlaceProcessor",
    "extract_report_text",
    "find_sections",
    "load_tokenizer",
    "normalize_sentence",
    "report_to_sentences",
    "sentence_hash",
    "split_sentences",
    "train_wordpiece_tokenizer",
]
from .synthetic_cxr import FINDINGS, build_split, generate_case, label_fraction_subset  # noqa: F401
