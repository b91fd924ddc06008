"""`modeling_place.processing`: what ships with a model to turn images and reports into tensors.

The image processor, the report parser (sentences, sentence hashes), the tokenizer helpers, the processor that
combines them and the post-processing the pipelines call. These modules are flat siblings that import each
other relatively, so a saved folder carries them as Hub custom code. Importing this package registers
`PlaceImageProcessor` with `AutoImageProcessor` and `PlaceProcessor` with `AutoProcessor` under `PlaceConfig`.
Data (readers, the synthetic benchmark) lives in `modeling_place.data`, not here.
"""

from transformers import AutoImageProcessor, AutoProcessor

from ..configuration_place import PlaceConfig
from .image_processing_place import PlaceImageProcessor
from .processing_place import PLACE_HYPOTHESIS_TEMPLATE, PlaceProcessor
from .report_place import (
    extract_report_text,
    find_sections,
    normalize_sentence,
    report_to_sentences,
    sentence_hash,
    split_sentences,
)
from .tokenization_place import load_tokenizer, train_wordpiece_tokenizer


AutoImageProcessor.register(
    PlaceConfig, image_processor_classes={"torchvision": PlaceImageProcessor}, exist_ok=True
)
AutoProcessor.register(PlaceConfig, PlaceProcessor, exist_ok=True)

__all__ = [
    "PLACE_HYPOTHESIS_TEMPLATE",
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
