"""PLACE training library: configuration, data pipeline and one accelerate-driven loop (`loop.py`) behind
pretraining (`PlaceTrainer`) and head fine-tuning (`HeadTrainer`, which the downstream protocols' `fit` runs).

Not shipped as Hub custom code: it trains models, it is not needed to load them.
"""

from .config import TrainConfig, load_train_config
from .data import (
    ImageReportPairs,
    PairSplits,
    PlaceCollator,
    build_model_and_processor,
    build_processor,
    build_tokenizer,
    load_pair_splits,
)
from .finetune import FitConfig, HeadTask, HeadTrainer
from .trainer import NonFiniteLossError, PlaceTrainer, recall_at_k

__all__ = [
    "FitConfig",
    "HeadTask",
    "HeadTrainer",
    "ImageReportPairs",
    "NonFiniteLossError",
    "PairSplits",
    "PlaceCollator",
    "PlaceTrainer",
    "build_model_and_processor",
    "TrainConfig",
    "build_processor",
    "build_tokenizer",
    "load_pair_splits",
    "load_train_config",
    "recall_at_k",
]
