"""PLACE model package: configuration, model, losses, and registration with the transformers Auto classes."""

from transformers import AutoConfig, AutoModel

from .configuration_place import PlaceConfig
from .modeling_place import PlaceModel, PlaceOutput, PlacePreTrainedModel

AutoConfig.register("place", PlaceConfig, exist_ok=True)
AutoModel.register(PlaceConfig, PlaceModel, exist_ok=True)
# Saved folders also carry the modules as Hub custom code (`trust_remote_code=True` without the package).
PlaceConfig.register_for_auto_class()
PlaceModel.register_for_auto_class("AutoModel")

__all__ = ["PlaceConfig", "PlaceModel", "PlaceOutput", "PlacePreTrainedModel"]
