"""Shared check for the hardening tests: a campaign on a hardened model against exact injection."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

import headstrong as hs


def campaign_and_exact_losses(model: torch.nn.Module, data: torch.Tensor, labels: torch.Tensor, out: Path,
                              n_faults: int = 6, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, pd.DataFrame]:
    """Faulty losses of a neuron campaign's records, the same faults' losses by ``hs.inject``,
    and the records."""
    spec = hs.CampaignSpec(kind="neuron", layers="all", fmt="fp32", n_faults=n_faults, range_detector=False,
                           seed=seed, only_correct=False)
    records = hs.run_campaign(model, (data, labels), spec, out=out, progress=False).records
    faults = hs.FaultSet.from_records([{"kind": "neuron", "layer": r.layer, "index": int(r.index), "bit": int(r.bit)}
                                       for r in records.itertuples()])
    exact = hs.inject(model, data, faults, range_detector=False)  # [faults, images, classes]
    sample = torch.as_tensor(records["sample"].to_numpy().copy())
    loss = torch.nn.functional.cross_entropy(exact[torch.arange(len(records)), sample], labels[sample], reduction="none")
    fast = torch.as_tensor(records["faulty_loss"].to_numpy().copy(), dtype=loss.dtype)
    return fast, loss.detach(), records
