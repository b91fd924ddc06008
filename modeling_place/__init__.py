"""PLACE model package: configuration, model, losses, and registration with the transformers Auto classes."""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForImageTextToText,
    AutoModelForObjectDetection,
    AutoModelForSemanticSegmentation,
    AutoModelForZeroShotImageClassification,
)

from .configuration_place import PlaceConfig
from .modeling_place import PlaceModel, PlaceOutput, PlacePreTrainedModel
from .heads_place import (
    PlaceForImageClassification,
    PlaceForObjectDetection,
    PlaceForReportGeneration,
    PlaceForSemanticSegmentation,
    PlaceObjectDetectionOutput,
)

AutoConfig.register("place", PlaceConfig, exist_ok=True)
AutoModel.register(PlaceConfig, PlaceModel, exist_ok=True)
# The pretrained model is also the zero-shot image classifier (`pipeline("zero-shot-image-classification")`).
AutoModelForZeroShotImageClassification.register(PlaceConfig, PlaceModel, exist_ok=True)
# Saved folders also carry the modules as Hub custom code (`trust_remote_code=True` without the package).
PlaceConfig.register_for_auto_class()
PlaceModel.register_for_auto_class("AutoModel")

# Downstream heads (heads_place.py): installed-package registration and Hub custom code.
_HEADS = {
    AutoModelForImageClassification: PlaceForImageClassification,
    AutoModelForSemanticSegmentation: PlaceForSemanticSegmentation,
    AutoModelForObjectDetection: PlaceForObjectDetection,
    AutoModelForImageTextToText: PlaceForReportGeneration,
}
for _auto_class, _head in _HEADS.items():
    _auto_class.register(PlaceConfig, _head, exist_ok=True)
    _head.register_for_auto_class(_auto_class.__name__)

# One import registers everything: the image processor and processor (`modeling_place.processing`, the
# repository's processing/ folder) register themselves with AutoImageProcessor / AutoProcessor.
from .processing import PlaceImageProcessor, PlaceProcessor  # noqa: E402

__all__ = [
    "PlaceConfig",
    "PlaceImageProcessor",
    "PlaceProcessor",
    "PlaceForImageClassification",
    "PlaceForObjectDetection",
    "PlaceForReportGeneration",
    "PlaceForSemanticSegmentation",
    "PlaceModel",
    "PlaceObjectDetectionOutput",
    "PlaceOutput",
    "PlacePreTrainedModel",
]
