"""Hardening: model transforms that raise resilience, each returning a new model.

``range_restrict`` (Ranger's clamp, or clipped activations with ``mode="zero"``), ``duplicate``
(selective DMR/TMR), ``fault_aware_finetune`` (training with bit flips in the forward pass) and,
in ``headstrong.textguided``, the ETF head (``init="etf"``). Every hardened model keeps its
original layer names and records its steps in ``model.hardening``; ``headstrong.train``'s
checkpoints save and replay them. ``measure_cost`` compares a hardened model with its source.
"""

from __future__ import annotations

from headstrong.harden import duplicate as _duplicate
from headstrong.harden import finetune as _finetune
from headstrong.harden import range as _range
from headstrong.harden.cost import Cost, count_macs, count_params, measure_cost
from headstrong.harden.duplicate import duplicate, top_layers
from headstrong.harden.finetune import fault_aware_finetune
from headstrong.harden.methods import METHODS, HardenOptions, apply_methods, parse_methods
from headstrong.harden.range import RangeBound, bounds_table, range_restrict
from headstrong.train.checkpoints import register_rebuild

register_rebuild("range", _range.rebuild)
register_rebuild("duplicate", _duplicate.rebuild)
register_rebuild("fault-aware", _finetune.rebuild)

__all__ = [
    "range_restrict", "duplicate", "fault_aware_finetune", "top_layers", "bounds_table", "RangeBound",
    "measure_cost", "Cost", "count_macs", "count_params", "METHODS", "HardenOptions", "apply_methods", "parse_methods",
]
