"""headstrong: make image classifiers resilient to hardware bit flips, and prove it.

The public API (see DESIGN.md) is resolved lazily: ``import headstrong`` stays fast and does
not pull in open_clip, Ray or matplotlib until a name that needs them is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> "module" (a submodule) or "module:attribute"
_LAZY: dict[str, str] = {
    # layers, as submodules
    "formats": "headstrong.formats",
    "faults": "headstrong.faults",
    "engine": "headstrong.engine",
    "metrics": "headstrong.metrics",
    "campaign": "headstrong.campaign",
    "textguided": "headstrong.textguided",
    "train": "headstrong.train",
    "ra": "headstrong.ra",
    "report": "headstrong.report",
    "harden": "headstrong.harden",
    "data": "headstrong.data",
    "descriptions": "headstrong.textguided.descriptions",
    # fault injection
    "injectable_layers": "headstrong.engine:injectable_layers",
    "inject": "headstrong.engine:inject",
    "FaultSet": "headstrong.faults:FaultSet",
    # campaigns
    "CampaignSpec": "headstrong.campaign:CampaignSpec",
    "run_campaign": "headstrong.campaign:run_campaign",
    "load_results": "headstrong.campaign:load_results",
    # text-guided classifiers
    "encode_classes": "headstrong.textguided:encode_classes",
    "TextGuidedClassifier": "headstrong.textguided:TextGuidedClassifier",
    "build_baseline": "headstrong.textguided:build_baseline",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'headstrong' has no attribute {name!r}")
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    value = getattr(module, attribute) if attribute else module
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
