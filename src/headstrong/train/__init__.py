"""One training recipe for baseline and text-guided models, and checkpoints that rebuild them."""

from headstrong.train.checkpoints import load_checkpoint, read_checkpoint, save_checkpoint
from headstrong.train.recipe import (
    TrainConfig,
    TrainResult,
    build_model,
    class_embeddings_for,
    evaluate,
    train,
)

__all__ = [
    "TrainConfig", "TrainResult", "train", "build_model", "class_embeddings_for", "evaluate",
    "save_checkpoint", "load_checkpoint", "read_checkpoint",
]
