"""Text-guided classifiers: descriptions, language-model client, text encoders, heads.

``descriptions`` and ``llm`` load lazily (they are another layer's concern and ``llm`` pulls in
an API client); the encoders and models are imported here.
"""

from __future__ import annotations

import importlib
from typing import Any

from headstrong.textguided.backbones import create_features, list_backbones, register_backbone
from headstrong.textguided.encoders import encode_classes, encode_names, list_encoders
from headstrong.textguided.models import (
    INITS,
    BaselineClassifier,
    TextGuidedClassifier,
    build_baseline,
)

__all__ = [
    "encode_classes", "encode_names", "list_encoders",
    "TextGuidedClassifier", "BaselineClassifier", "build_baseline", "INITS",
    "create_features", "list_backbones", "register_backbone",
    "descriptions", "llm",
]

_SUBMODULES = ("descriptions", "llm")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f"headstrong.textguided.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'headstrong.textguided' has no attribute {name!r}")
