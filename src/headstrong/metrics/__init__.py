"""Resilience metrics (GoldenEye-compatible): ΔLoss, mismatch, top-2 diff, non-finite share.

``summarize`` turns a campaign's records into one row per group, design-weighted when the
records come from a stratified campaign; ``improvement`` compares two models' per-layer ΔLoss.
The math lives in ``_functional`` (plain samples) and ``headstrong.faults.strata`` (stratified
samples). Definitions: DESIGN.md, "Metrics".

There are no per-chunk metric state classes: a campaign's records are stored chunk by chunk and
concatenated on resume, so they already are the mergeable state, and a stratified summary needs
per-stratum sums that ``summarize`` computes from them in one place.

``headstrong.metrics.paired`` carries a figure across training seeds: its spread, a paired t test
and a two-level bootstrap (seeds, then faults) comparing two arms of a study.
"""

from __future__ import annotations

from headstrong.metrics._functional import normal_interval, paired_rate_change, wilson_interval, z_value
from headstrong.metrics.paired import Paired, SeedSpread, across_seeds, bootstrap_paired, paired_t
from headstrong.metrics.summary import RECORD_COLUMNS, SUMMARY_COLUMNS, improvement, summarize

__all__ = [
    "Paired",
    "SeedSpread",
    "across_seeds",
    "bootstrap_paired",
    "paired_t",
    "RECORD_COLUMNS",
    "SUMMARY_COLUMNS",
    "improvement",
    "normal_interval",
    "paired_rate_change",
    "summarize",
    "wilson_interval",
    "z_value",
]
