"""A self-contained HTML report (PNGs embedded as base64), PNG files and a Markdown summary.

Order of the page: warnings, what the figures mean (units), the improvement of two runs (a
sentence with its interval, then the table), the figures, then one table per run. Tables are
laid out to fit the page: numbers shortened, units in the headings, long layer names may break.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from headstrong.report import plots
from headstrong.report.checks import result_warnings
from headstrong.report.tables import (
    COMPARISON_LEGEND,
    LAYER_COLUMNS,
    LEGEND,
    comparison_rows,
    headline,
    html_table,
    images_note,
    layer_names_note,
    layer_rows,
    markdown,
)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 1100px; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0 1.5rem; max-width: 100%; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.45rem; text-align: right; }
th { background: #f4f4f4; font-weight: 600; }
th:first-child, td:first-child { text-align: left; overflow-wrap: anywhere; }
td { white-space: nowrap; }
td:first-child { white-space: normal; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5rem 0; }
code { background: #f4f4f4; padding: 0 0.2rem; overflow-wrap: anywhere; }
.note { color: #555; font-size: 0.85rem; max-width: 60rem; }
.warning { background: #fff4e5; border-left: 4px solid #e67e22; padding: 0.4rem 0.8rem; }
.headline { font-size: 1.05rem; }
"""

_HEATMAP_CAPTION = ("Mismatch rate per layer and bit position (%; grey: no fault was sampled at that "
                    "layer and bit, so there is nothing to show)")


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
    figures = _figures(runs, labels, out_dir)
    md = ["# headstrong campaign report", ""]
    parts = ["<h1>headstrong campaign report</h1>"]
    for label, run in zip(labels, runs):
        for warning in result_warnings(run):
            md += [f"> **warning ({label})**: {warning}", ""]
            parts.append(f"<p class='warning'><b>warning ({html.escape(label)})</b>: {html.escape(warning)}</p>")
    names = [str(n) for run in runs for n in run.per_layer["layer"]]
    notes = [LEGEND, images_note(all(bool(run.spec.only_correct) for run in runs)), layer_names_note(names)]
    note = " ".join(n for n in notes if n)
    md += [note, ""]
    parts.append(f"<p class='note'>{html.escape(note)}</p>")
    if comparison is not None:
        sentences = [headline(comparison, row) for row in ("last layer", "overall")]
        headings, rows = comparison_rows(comparison)
        title = "Improvement: baseline ΔLoss / text-guided ΔLoss"
        md += [f"## {title}", "", *(f"- {s}" for s in sentences), "", markdown(headings, rows), COMPARISON_LEGEND, ""]
        parts += [f"<h2>{html.escape(title)}</h2>",
                  "<ul class='headline'>" + "".join(f"<li>{html.escape(s)}</li>" for s in sentences) + "</ul>",
                  html_table(headings, rows), f"<p class='note'>{html.escape(COMPARISON_LEGEND)}</p>"]
    for caption, path in figures:
        encoded = base64.b64encode(path.read_bytes()).decode()
        parts.append(f"<h2>{html.escape(caption)}</h2><img alt='{html.escape(caption)}' "
                     f"src='data:image/png;base64,{encoded}'>")
        md += [f"## {caption}", "", f"![{caption}]({path.name})", ""]
    headings = [h for _, h in LAYER_COLUMNS]
    for label, run in zip(labels, runs):
        settings = _settings(run.spec.to_dict())
        rows = layer_rows(run.per_layer)
        said = f"Spec: `{settings}`; (fault, image) pairs: {len(run.records):,}"
        md += [f"## {label}", "", said, "", markdown(headings, rows)]
        parts += [f"<h2>{html.escape(label)}</h2>",
                  f"<p>Spec: <code>{html.escape(settings)}</code>; (fault, image) pairs: {len(run.records):,}</p>",
                  html_table(headings, rows)]
    page = (f"<!doctype html><html><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>headstrong report</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>")
    (out_dir / "summary.md").write_text("\n".join(md))
    target = out_dir / "report.html"
    target.write_text(page, encoding="utf-8")
    return target


def _figures(runs: Sequence[Any], labels: Sequence[str], out_dir: Path) -> list[tuple[str, Path]]:
    """(caption, PNG) of every figure that applies to these runs, in the order the page shows them."""
    from headstrong.report import fault_models

    per_layer = {label: run.per_layer for label, run in zip(labels, runs)}
    per_bit = {label: run.per_bit for label, run in zip(labels, runs)}
    figures = []
    if not fault_models.ber_points(runs, labels).empty:
        figures.append(("Accuracy against bit-error rate (a curve per model; bars: 99% interval over faults)",
                        fault_models.accuracy_vs_ber(runs, labels, out_dir / "accuracy_vs_ber.png")))
    figures += [
        ("ΔLoss per layer (bars: mean with 99% interval; diamonds: median, not drawn when 0 on the log scale)",
         plots.delta_loss_per_layer(per_layer, out_dir / "delta_loss_per_layer.png")),
        (_HEATMAP_CAPTION, plots.mismatch_heatmap(per_bit, out_dir / "mismatch_per_bit.png")),
    ]
    if not fault_models.masked_shares(runs, labels).empty:
        figures.append(("Masked share of stuck-at faults per layer (the stuck bit already held its value)",
                        fault_models.masked_share(runs, labels, out_dir / "masked_share.png")))
    if len(runs) > 1:
        figures.append(("Mismatch rate per layer, side by side (points: rate; bars: 99% interval)",
                        plots.side_by_side(per_layer, "mismatch_rate", out_dir / "mismatch_per_layer.png")))
    return figures


def _settings(spec: dict[str, Any]) -> str:
    """'kind=neuron, fmt=fp32, ...' with short numbers (1e-07, not 1.0000000000000001e-07)."""
    short = lambda v: f"{v:.6g}" if isinstance(v, float) else ",".join(map(str, v)) if isinstance(v, list) else str(v)  # noqa: E731
    return ", ".join(f"{k}={short(v)}" for k, v in spec.items())


def _labels(runs: Sequence[Any]) -> list[str]:
    labels = []
    for i, run in enumerate(runs):
        name = Path(run.out).name if getattr(run, "out", None) else f"run {i + 1}"
        labels.append(name if name not in labels else f"{name} ({i + 1})")
    return labels
