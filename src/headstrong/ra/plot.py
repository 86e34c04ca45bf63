"""The convergence figure: every estimator's running RA against samples, beside the exact RA."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from headstrong.ra.estimators import RAEstimate


def convergence_plot(
    estimates: Mapping[str, RAEstimate], path: str | Path, exact: Optional[float] = None,
    title: str = "Resiliency Accuracy: running estimates",
) -> Path:
    """Write a PNG of each estimator's running estimate (with its final 95% interval) to ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not estimates:
        raise ValueError("no estimates to plot; run at least one of uniform, mac, is, is-b")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    try:
        for name, est in estimates.items():
            if name == "exact":
                continue
            steps = np.arange(1, len(est.trace) + 1)
            (line,) = ax.plot(steps, est.trace * 100, label=f"{name} ({est.ra * 100:.2f}%)", lw=1.3)
            ax.fill_between([steps[-1] * 0.97, steps[-1]], est.ci[0] * 100, est.ci[1] * 100,
                            color=line.get_color(), alpha=0.3)
        if exact is not None:
            ax.axhline(exact * 100, color="black", ls="--", lw=1, label=f"exact ({exact * 100:.2f}%)")
        some = next(iter(estimates.values()))
        settled = [e.trace[min(9, len(e.trace) - 1):] * 100 for k, e in estimates.items() if k != "exact"]
        if settled:  # zoom on the estimates after their first draws; SA goes in the title
            low = min(float(t.min()) for t in settled + [np.array([exact * 100 if exact is not None else np.inf])])
            high = max(float(t.max()) for t in settled + [np.array([exact * 100 if exact is not None else -np.inf])])
            pad = max(0.1, (high - low) * 0.15)
            ax.set_ylim(low - pad, high + pad)
        title = f"{title} (SA {some.sa * 100:.2f}%)"
        ax.set_xscale("log")
        ax.set_xlabel("samples (faults drawn)")
        ax.set_ylabel("RA estimate (%)")
        ax.set_title(title)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return path
