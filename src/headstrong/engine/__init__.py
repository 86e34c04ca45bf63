"""Applying faults to a model: fault sites, exact injection and the fast campaign core.

``injectable_layers`` lists the modules faults can target; ``inject`` applies every fault
alone to every input (the exact yardstick); ``FaultEvaluator`` evaluates batches of faults
fast, with upstream reuse, weight deltas and an analytic last layer.
"""

from __future__ import annotations

from headstrong.engine.edit_evaluator import EditEvaluator, FaultModelEvaluator
from headstrong.engine.edits import inject_edits
from headstrong.engine.evaluator import OUTPUT_KEYS, FaultEvaluator, top2_margin
from headstrong.engine.inject import inject
from headstrong.engine.layers import INJECTABLE_TYPES, eval_mode, injectable_layers, is_injectable

__all__ = [
    "EditEvaluator",
    "FaultModelEvaluator",
    "inject_edits",
    "INJECTABLE_TYPES",
    "OUTPUT_KEYS",
    "FaultEvaluator",
    "eval_mode",
    "inject",
    "injectable_layers",
    "is_injectable",
    "top2_margin",
]
