"""Applying faults to a model: fault sites, exact injection and the fast campaign core.

``injectable_layers`` lists the modules faults can target; ``inject`` applies every fault
alone to every input (the exact yardstick); ``FaultEvaluator`` evaluates (fault, image) pairs of
any fault model fast, with upstream reuse, weight deltas and an analytic last layer, and returns
``Outcomes``.
"""

from __future__ import annotations

from headstrong.engine.evaluator import FaultEvaluator, Golden, top2_margin
from headstrong.engine.inject import inject, inject_edits
from headstrong.engine.layers import (
    INJECTABLE_TYPES,
    eval_mode,
    injectable_layers,
    is_injectable,
    mark_weights_reused,
    weights_reused,
)
from headstrong.engine.outcomes import Outcomes

__all__ = [
    "INJECTABLE_TYPES",
    "FaultEvaluator",
    "Golden",
    "Outcomes",
    "eval_mode",
    "inject",
    "inject_edits",
    "injectable_layers",
    "is_injectable",
    "mark_weights_reused",
    "top2_margin",
    "weights_reused",
]
