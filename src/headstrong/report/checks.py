"""Warnings for results that mean nothing, printed after a campaign and shown in reports.

Two are known to mislead: a golden model no better than chance (its "resilience" measures noise,
and with only_correct the few images it gets right are a biased handful), and a bit-error-rate
campaign in which no fault flipped a single bit (its "accuracy under faults" is the golden model's).
"""

from __future__ import annotations

from typing import Any

from headstrong.metrics import wilson_interval


def golden_accuracy(run: Any) -> tuple[int, int]:
    """(images the golden model classifies correctly, images considered) for a campaign result."""
    manifest = getattr(run, "manifest", {}) or {}
    if run.spec.only_correct and "n_images" in manifest and "n_eval_images" in manifest:
        return int(manifest["n_eval_images"]), int(manifest["n_images"])
    records = run.records
    if records.empty:
        return 0, 0
    per_image = records.drop_duplicates("sample")
    return int((per_image["golden_pred"] == per_image["label"]).sum()), len(per_image)


def result_warnings(run: Any, num_classes: int | None = None) -> list[str]:
    """One sentence per reason this run's figures should not be trusted; [] when there is none.

    ``num_classes``: the model's number of outputs; by default the largest class seen in the
    records plus one (a lower bound, so chance is if anything over-estimated).
    """
    found = []
    records = run.records
    if num_classes is None and not records.empty:
        num_classes = int(records[["label", "golden_pred", "faulty_pred"]].to_numpy().max()) + 1
    correct, total = golden_accuracy(run)
    if num_classes and num_classes > 1 and total > 0:
        _, low, _ = wilson_interval(correct, total)
        chance = 1 / num_classes
        if low <= chance:
            found.append(
                f"the golden model classifies {correct} of {total} images correctly ({correct / total:.1%}), "
                f"not clearly better than chance ({chance:.1%} for {num_classes} classes): its ΔLoss and mismatch "
                "describe an untrained or broken model; use a trained checkpoint"
            )
    spec = run.spec
    if getattr(spec, "fault_model", "flip") == "ber" and "masked" in records.columns and not records.empty:
        flipped = int((~records.groupby("fault_id")["masked"].all()).sum())
        if flipped == 0:
            faults = int(records["fault_id"].nunique())
            found.append(
                f"the ber campaign at p={spec.ber:g} drew no bit error in any of its {faults:,} faults: its accuracy "
                "is the golden model's, not a measurement under faults; raise --ber or --n-faults"
            )
    return found
