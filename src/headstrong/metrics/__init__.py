"""Resilience metrics (GoldenEye-compatible): ΔLoss, mismatch, top-2 diff, non-finite share.

Classes with mergeable states (``DeltaLoss``, ``Mismatch``, ``Top2Diff``, ``NonFinite``,
``ResilienceMetrics``) and their functional twins (``summarize``, ``improvement``) share the
helpers in ``_functional``. Definitions: DESIGN.md, "Metrics".
"""

from __future__ import annotations

from headstrong.metrics._functional import normal_interval, wilson_interval, z_value
from headstrong.metrics.states import DeltaLoss, Metric, Mismatch, NonFinite, ResilienceMetrics, Top2Diff
from headstrong.metrics.summary import RECORD_COLUMNS, SUMMARY_COLUMNS, improvement, summarize

__all__ = [
    "RECORD_COLUMNS",
    "SUMMARY_COLUMNS",
    "DeltaLoss",
    "Metric",
    "Mismatch",
    "NonFinite",
    "ResilienceMetrics",
    "Top2Diff",
    "improvement",
    "normal_interval",
    "summarize",
    "wilson_interval",
    "z_value",
]
