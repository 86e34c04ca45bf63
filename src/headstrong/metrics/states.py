"""Metric classes with declared, mergeable states (torchmetrics-style, no dependency on it).

Each metric declares its states with ``add_state(name, default, reduce)``: ``"sum"`` states add
up on ``merge``, ``"cat"`` states (kept values, for the median) concatenate. ``reset`` restores
the defaults, so a campaign can merge per-chunk states on resume and get what one pass gives.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from headstrong.metrics._functional import DEFAULT_CONFIDENCE, normal_interval, split_finite, wilson_interval

REDUCTIONS = ("sum", "cat")


def _array(values: Any, dtype: Any = np.float64) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype).reshape(-1)


class Metric(ABC):
    """Base class: declared states, ``update``, ``compute``, ``reset`` and ``merge``."""

    def __init__(self, confidence: float = DEFAULT_CONFIDENCE) -> None:
        self.confidence = confidence
        self._defaults: dict[str, tuple[Any, str]] = {}
        self._updated = False

    def add_state(self, name: str, default: Any, reduce: str) -> None:
        if reduce not in REDUCTIONS:
            raise ValueError(f"unknown reduction {reduce!r}; expected one of {', '.join(REDUCTIONS)}")
        self._defaults[name] = (copy.deepcopy(default), reduce)
        setattr(self, name, copy.deepcopy(default))

    def reset(self) -> None:
        for name, (default, _) in self._defaults.items():
            setattr(self, name, copy.deepcopy(default))
        self._updated = False

    def merge(self, other: Metric) -> Metric:
        """Fold ``other``'s state into this one (same metric type); returns self."""
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        for name, (_, reduce) in self._defaults.items():
            mine, theirs = getattr(self, name), getattr(other, name)
            setattr(self, name, mine + theirs if reduce == "sum" else [*mine, *theirs])
        self._updated = self._updated or other._updated
        return self

    def state_dict(self) -> dict[str, Any]:
        return {name: copy.deepcopy(getattr(self, name)) for name in self._defaults}

    @abstractmethod
    def update(self, *args: Any) -> None: ...

    @abstractmethod
    def compute(self) -> dict[str, float]: ...


class DeltaLoss(Metric):
    """ΔLoss mean with a normal interval, and the median; non-finite outputs counted apart."""

    def __init__(self, confidence: float = DEFAULT_CONFIDENCE) -> None:
        super().__init__(confidence)
        self.add_state("total", 0.0, "sum")
        self.add_state("total_sq", 0.0, "sum")
        self.add_state("count", 0, "sum")
        self.add_state("nonfinite", 0, "sum")
        self.add_state("values", [], "cat")

    def update(self, delta_loss: Any, nonfinite: Any = None) -> None:
        finite, n_bad = split_finite(_array(delta_loss), None if nonfinite is None else _array(nonfinite, bool))
        self.total += float(finite.sum())
        self.total_sq += float((finite * finite).sum())
        self.count += len(finite)
        self.nonfinite += n_bad
        self.values = [*self.values, finite]
        self._updated = True

    def compute(self) -> dict[str, float]:
        mean, std, lo, hi = normal_interval(self.total, self.total_sq, self.count, self.confidence)
        values = np.concatenate(self.values) if self.values else np.zeros(0)
        return {"delta_loss_mean": mean, "delta_loss_ci_low": lo, "delta_loss_ci_high": hi,
                "delta_loss_median": float(np.median(values)) if len(values) else math.nan,
                "delta_loss_std": std, "n_finite": self.count}


class Mismatch(Metric):
    """Share of faulty predictions that differ from the golden ones, with a Wilson interval."""

    def __init__(self, confidence: float = DEFAULT_CONFIDENCE) -> None:
        super().__init__(confidence)
        self.add_state("k", 0, "sum")
        self.add_state("n", 0, "sum")

    def update(self, golden_pred: Any, faulty_pred: Any) -> None:
        g, f = _array(golden_pred, np.int64), _array(faulty_pred, np.int64)
        if g.shape != f.shape:
            raise ValueError(f"golden and faulty predictions differ in length: {len(g)} vs {len(f)}")
        self.k += int((g != f).sum())
        self.n += len(g)
        self._updated = True

    def compute(self) -> dict[str, float]:
        rate, lo, hi = wilson_interval(self.k, self.n, self.confidence)
        return {"mismatch_rate": rate, "mismatch_ci_low": lo, "mismatch_ci_high": hi}


class Top2Diff(Metric):
    """Mean golden top-2 margin ``(p1 - p2) * 100``."""

    def __init__(self, confidence: float = DEFAULT_CONFIDENCE) -> None:
        super().__init__(confidence)
        self.add_state("total", 0.0, "sum")
        self.add_state("n", 0, "sum")

    def update(self, top2_diff: Any) -> None:
        values = _array(top2_diff)
        self.total += float(values.sum())
        self.n += len(values)
        self._updated = True

    def compute(self) -> dict[str, float]:
        return {"top2_diff_mean": self.total / self.n if self.n else math.nan}


class NonFinite(Metric):
    """Share of faulty outputs holding Inf or NaN."""

    def __init__(self, confidence: float = DEFAULT_CONFIDENCE) -> None:
        super().__init__(confidence)
        self.add_state("k", 0, "sum")
        self.add_state("n", 0, "sum")

    def update(self, nonfinite: Any, delta_loss: Any = None) -> None:
        flags = _array(nonfinite, bool)
        if delta_loss is not None:
            flags = flags | ~np.isfinite(_array(delta_loss))
        self.k += int(flags.sum())
        self.n += len(flags)
        self._updated = True

    def compute(self) -> dict[str, float]:
        return {"nonfinite_rate": self.k / self.n if self.n else math.nan}


class ResilienceMetrics:
    """All four metrics over evaluated (fault, sample) pairs; ``compute`` gives a summary row."""

    def __init__(self, confidence: float = DEFAULT_CONFIDENCE) -> None:
        self.delta_loss = DeltaLoss(confidence)
        self.mismatch = Mismatch(confidence)
        self.top2 = Top2Diff(confidence)
        self.nonfinite = NonFinite(confidence)

    def update(self, outcomes: Any) -> None:
        """``outcomes``: a dict (as ``FaultEvaluator.evaluate`` returns) or a records DataFrame."""
        self.delta_loss.update(outcomes["delta_loss"], outcomes["nonfinite"])
        self.mismatch.update(outcomes["golden_pred"], outcomes["faulty_pred"])
        self.top2.update(outcomes["top2_diff"])
        self.nonfinite.update(outcomes["nonfinite"], outcomes["delta_loss"])

    def merge(self, other: ResilienceMetrics) -> ResilienceMetrics:
        for name in ("delta_loss", "mismatch", "top2", "nonfinite"):
            getattr(self, name).merge(getattr(other, name))
        return self

    def reset(self) -> None:
        for name in ("delta_loss", "mismatch", "top2", "nonfinite"):
            getattr(self, name).reset()

    def compute(self) -> dict[str, float]:
        row: dict[str, float] = {"n": self.mismatch.n}
        row.update(self.delta_loss.compute())
        row.update(self.mismatch.compute())
        row.update(self.top2.compute())
        row.update(self.nonfinite.compute())
        order = ["n", "delta_loss_mean", "delta_loss_ci_low", "delta_loss_ci_high", "delta_loss_median",
                 "mismatch_rate", "mismatch_ci_low", "mismatch_ci_high", "top2_diff_mean", "nonfinite_rate",
                 "delta_loss_std", "n_finite"]
        return {k: row[k] for k in order}
