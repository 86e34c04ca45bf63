"""A self-contained HTML report (PNGs embedded as base64), PNG files and a Markdown summary."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from headstrong.report import plots
from headstrong.report.tables import LAYER_COLUMNS, html_table, layer_rows, markdown

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5rem 0; }
code { background: #f4f4f4; padding: 0 0.2rem; }
"""


def build_report(
    runs: Sequence[Any], out_dir: str | Path, labels: Sequence[str] | None = None,
    comparison: pd.DataFrame | None = None,
) -> Path:
    """Write PNG plots, ``report.html`` and ``summary.md`` for one or more campaign results.

    ``runs``: CampaignResult objects (``per_layer``, ``per_bit``, ``spec``, ``out``); ``labels``
    default to the run folders' names; ``comparison``: an improvement table for two runs.
    Returns the HTML path.
    """
    if not runs:
        raise ValueError("build_report needs at least one campaign result")
    labels = list(labels) if labels is not None else _labels(runs)
    if len(labels) != len(runs):
        raise ValueError(f"got {len(labels)} labels for {len(runs)} runs; give one label per run")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"report folder {str(out_dir)!r} is a file; give a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    per_layer = {label: run.per_layer for label, run in zip(labels, runs)}
    per_bit = {label: run.per_bit for label, run in zip(labels, runs)}
    figures = [
        ("ΔLoss per layer (bars: mean with 99% interval; diamonds: median)",
         plots.delta_loss_per_layer(per_layer, out_dir / "delta_loss_per_layer.png")),
        ("Mismatch rate per bit position", plots.mismatch_heatmap(per_bit, out_dir / "mismatch_per_bit.png")),
    ]
    from headstrong.report import fault_models

    if not fault_models.ber_points(runs, labels).empty:
        figures.append(("Accuracy against bit-error rate (ber runs; a curve per model)",
                        fault_models.accuracy_vs_ber(runs, labels, out_dir / "accuracy_vs_ber.png")))
    if not fault_models.masked_shares(runs, labels).empty:
        figures.append(("Masked share of stuck-at faults per layer (the stuck bit already held its value)",
                        fault_models.masked_share(runs, labels, out_dir / "masked_share.png")))
    if len(runs) > 1:
        figures.append(("Mismatch rate per layer, side by side",
                        plots.side_by_side(per_layer, "mismatch_rate", out_dir / "mismatch_per_layer.png")))
    headings = [h for _, h in LAYER_COLUMNS]
    md = ["# headstrong campaign report", ""]
    parts = ["<h1>headstrong campaign report</h1>"]
    if comparison is not None:
        rows = [[str(c) for c in row] for row in comparison.astype(str).itertuples(index=False)]
        md += ["## Improvement (baseline ΔLoss / text-guided ΔLoss)", "", markdown(list(comparison.columns), rows)]
        parts += ["<h2>Improvement (baseline ΔLoss / text-guided ΔLoss)</h2>", html_table(list(comparison.columns), rows)]
    for label, run in zip(labels, runs):
        spec = run.spec.to_dict()
        settings = ", ".join(f"{k}={v}" for k, v in spec.items())
        rows = layer_rows(run.per_layer)
        md += [f"## {label}", "", f"Spec: `{settings}`; records: {len(run.records):,}", "", markdown(headings, rows)]
        parts += [f"<h2>{html.escape(label)}</h2>",
                  f"<p>Spec: <code>{html.escape(settings)}</code>; records: {len(run.records):,}</p>",
                  html_table(headings, rows)]
    for caption, path in figures:
        encoded = base64.b64encode(path.read_bytes()).decode()
        parts.append(f"<h2>{html.escape(caption)}</h2><img alt='{html.escape(caption)}' "
                     f"src='data:image/png;base64,{encoded}'>")
        md += [f"![{caption}]({path.name})", ""]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>headstrong report</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>")
    (out_dir / "summary.md").write_text("\n".join(md))
    target = out_dir / "report.html"
    target.write_text(page, encoding="utf-8")
    return target


def _labels(runs: Sequence[Any]) -> list[str]:
    labels = []
    for i, run in enumerate(runs):
        name = Path(run.out).name if getattr(run, "out", None) else f"run {i + 1}"
        labels.append(name if name not in labels else f"{name} ({i + 1})")
    return labels
