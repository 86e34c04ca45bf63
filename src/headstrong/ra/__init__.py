"""Resiliency Accuracy (Thales, HPCA 2023): expected accuracy given one transient accelerator fault.

``Accelerator`` models the hardware, ``site_probabilities`` weighs every fault site, and
``estimate`` runs an estimator (uniform, mac, is, is-b, exact) with the engine measuring the
accuracy under each sampled fault.
"""

from headstrong.ra.accelerator import Accelerator, presets
from headstrong.ra.estimators import RAEstimate, TableOracle, exact_from_table, list_estimators, proposal_std
from headstrong.ra.sites import SiteSpace, layer_shapes, site_probabilities

__all__ = [
    "Accelerator", "presets", "site_probabilities", "layer_shapes", "SiteSpace", "estimate", "make_oracle",
    "RAEstimate", "TableOracle", "exact_from_table", "list_estimators", "proposal_std",
]


def __getattr__(name: str):
    # the engine-backed parts import the engine only when used
    if name in ("estimate", "make_oracle", "EngineOracle", "tap_model"):
        from headstrong.ra import api

        return getattr(api, name)
    raise AttributeError(f"module 'headstrong.ra' has no attribute {name!r}")
