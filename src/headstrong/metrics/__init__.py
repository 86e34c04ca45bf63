"""Resilience metrics (GoldenEye-compatible): ΔLoss, mismatch, top-2 diff, non-finite share.

``summarize`` turns a campaign's records into one row per group, design-weighted when the
records come from a stratified campaign; ``improvement`` compares two models' per-layer ΔLoss.
The math lives in ``_functional`` (plain samples) and ``headstrong.faults.strata`` (stratified
samples). Definitions: DESIGN.md, "Metrics".

There are no per-chunk metric state classes: a campaign's records are stored chunk by chunk and
concatenated on resume, so they already are the mergeable state, and a stratified summary needs
per-stratum sums that ``summarize`` computes from them in one place.
"""

from __future__ import annotations

from headstrong.metrics._functional import normal_interval, wilson_interval, z_value
from headstrong.metrics.summary import RECORD_COLUMNS, SUMMARY_COLUMNS, improvement, summarize

__all__ = [
    "RECORD_COLUMNS",
    "SUMMARY_COLUMNS",
    "improvement",
    "normal_interval",
    "summarize",
    "wilson_interval",
    "z_value",
]
