"""The study's report: the paper's table per backbone, the init ablation, and the seeds' spread.

Each campaign also gets the detailed report of ``headstrong.report`` (baseline beside the
text-guided model); the top page links them and embeds the headline plot.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from headstrong.report.tables import html_table, markdown

# (column, heading, format) of the headline table
_HEADLINE = (
    ("backbone", "backbone", "{}"),
    ("init", "init", "{}"),
    ("campaign", "campaign", "{}"),
    ("seeds", "seeds", "{}"),
    ("baseline_top1", "top-1 baseline", "{:.2%}"),
    ("text_top1", "top-1 text", "{:.2%}"),
    ("improvement_last", "improvement, last layer [99% CI]", "{:.3g}x"),
    ("improvement_overall", "improvement, overall [99% CI]", "{:.3g}x"),
    ("baseline_top2_diff", "top-2 diff baseline (pp)", "{:.1f}"),
    ("text_top2_diff", "top-2 diff text (pp)", "{:.1f}"),
    ("baseline_mismatch", "mismatch baseline", "{:.2%}"),
    ("text_mismatch", "mismatch text", "{:.2%}"),
)
_NUMERIC = [c for c, _, _ in _HEADLINE[4:]]
_INTERVALS = [f"{c}_ci_{side}" for c in ("improvement_last", "improvement_overall") for side in ("low", "high")]


def aggregate(summary: pd.DataFrame, paired: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """Mean and standard deviation over seeds of every headline figure.

    An improvement keeps a 99% interval: with one seed, the run's own (over its faults); with
    several and ``paired`` (``study.seeds``), the geometric mean over seeds with the paired
    comparison's interval over seeds and faults and its reading, which decides only where the
    bootstrap and the paired t test across seeds agree. Without ``paired``, the envelope of the
    seeds' intervals (lowest bound to highest), which covers each of them but is no interval of
    the mean.
    """
    if summary.empty:
        return summary
    keys = ["backbone", "init", "campaign"]
    grouped = summary.groupby(keys, sort=False)
    mean = grouped[_NUMERIC].mean()
    std = grouped[_NUMERIC].std(ddof=1).add_suffix("_std")
    seeds = grouped["seed"].nunique().rename("seeds")
    parts = [mean, std, seeds]
    present = [c for c in _INTERVALS if c in summary.columns]
    if present:
        parts.append(grouped[[c for c in present if c.endswith("_low")]].min())
        parts.append(grouped[[c for c in present if c.endswith("_high")]].max())
    table = pd.concat(parts, axis=1).reset_index()
    if paired is not None and not paired.empty:
        table = _across_seeds(table, paired)
    return table


# headline improvement -> the paired figure behind it across seeds
_PAIRED_FIGURE = {"improvement_last": "delta_loss_last", "improvement_overall": "delta_loss_all"}


def _across_seeds(table: pd.DataFrame, paired: pd.DataFrame) -> pd.DataFrame:
    """Rows with several seeds take their improvements from the paired comparison baseline -> init."""
    table = table.copy()
    for column in _PAIRED_FIGURE:
        table[f"{column}_reading"] = None
    index = paired.set_index(["backbone", "campaign", "a", "b", "figure"])
    for i, row in table.iterrows():
        if row["seeds"] < 2:
            continue
        for column, figure in _PAIRED_FIGURE.items():
            key = (row["backbone"], row["campaign"], "baseline", row["init"], figure)
            if key not in index.index:
                continue
            match = index.loc[key]
            match = match.iloc[0] if isinstance(match, pd.DataFrame) else match
            table.loc[i, [column, f"{column}_std", f"{column}_ci_low", f"{column}_ci_high"]] = [
                float(match["estimate"]), float("nan"), float(match["ci_low"]), float(match["ci_high"])]
            table.loc[i, f"{column}_reading"] = _short_reading(match)
    return table


def _short_reading(match: pd.Series) -> str:
    """The paired comparison's verdict in the headline's words."""
    if bool(match["decided"]):
        return "text-guided better" if float(match["ci_low"]) > 1 else "baseline better"
    if float(match["ci_low"]) <= 1 <= float(match["ci_high"]):
        return "CI includes 1"
    return "no clear difference: the paired t interval across seeds includes 1"


def _cell(row: pd.Series, column: str, template: str) -> str:
    value = row[column]
    if isinstance(value, float) and pd.isna(value):
        return "-"
    text = template.format(value)
    spread = row.get(f"{column}_std")
    if spread is not None and not pd.isna(spread) and row.get("seeds", 1) > 1:
        text += " ± " + template.format(spread).rstrip("x%")
    low, high = row.get(f"{column}_ci_low"), row.get(f"{column}_ci_high")
    if low is not None and high is not None and not pd.isna(low) and not pd.isna(high):
        text += f" [{low:.3g}, {high:.3g}]"
    return text


def _reading(row: pd.Series, column: str) -> str:
    """What an improvement's interval says, in words (an interval that includes 1 says so)."""
    from headstrong.report.tables import improvement_words

    across = row.get(f"{column}_reading")
    if isinstance(across, str):
        return across + " (across seeds)"
    low, high = row.get(f"{column}_ci_low"), row.get(f"{column}_ci_high")
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return "-"
    return improvement_words(float(row[column]), float(low), float(high))


def headline_rows(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """The paper's table, a row per (backbone, init, campaign); an improvement says what its interval says."""
    headings = [h for _, h, _ in _HEADLINE]
    rows = []
    for _, row in table.iterrows():
        cells = []
        for column, _, template in _HEADLINE:
            text = _cell(row, column, template)
            reading = _reading(row, column) if column.startswith("improvement") else "-"
            cells.append(text if reading == "-" else f"{text} ({reading})")
        rows.append(cells)
    return headings, rows


def transposed_tables(table: pd.DataFrame) -> list[tuple[str, list[str], list[list[str]]]]:
    """One narrow table per (backbone, init): a figure a row, a campaign a column (for terminals).

    Each improvement row is followed by its reading: whether its interval lies above 1, below 1,
    or includes 1 (no clear difference).
    """
    tables = []
    for (backbone, init), group in table.groupby(["backbone", "init"], sort=False):
        headings = ["", *group["campaign"]]
        rows = []
        for column, heading, template in _HEADLINE[3:]:
            rows.append([heading, *(_cell(row, column, template) for _, row in group.iterrows())])
            if column.startswith("improvement"):
                rows.append(["  reading", *(_reading(row, column) for _, row in group.iterrows())])
        tables.append((f"{backbone}: baseline vs text-guided ({init} init)", headings, rows))
    return tables


def cost_rows(cells: list[Any]) -> tuple[list[str], list[list[str]]]:
    headings = ["model", "top-1", "parameters", "MACs per image"]
    rows = [[r.cell.name, f"{r.top1:.2%}", f"{r.params:,}", f"{r.macs:,}"] for r in cells]
    return headings, rows


def _hardening_section(result: Any, out: Path, md: list[str]) -> list[str]:
    """The resilience-against-cost figure and table (a study with a hardening axis): appended to
    ``md``; the HTML parts are returned."""
    rows = getattr(result, "hardening_rows", None)
    if not rows:
        return []
    from headstrong.report.hardening import cost_figure, markdown_table

    figure = cost_figure(rows, out / "resilience_vs_cost.png", title=result.config.name)
    note = ("Each hardened model (and each head) against the unhardened baseline of its backbone and seed: "
            "improvement = baseline ΔLoss / hardened ΔLoss with 99% bootstrap intervals over the faults; accuracy "
            "change on the recipe's test images with a 95% paired interval; parameters, MACs and median CPU latency "
            "of a 128-image batch measured in the same run. The campaign in brackets says whether GoldenEye's range "
            "detector was on ('detector-off': off).")
    md += ["## Resilience against cost", "", note, "", markdown_table(rows), f"![resilience against cost]({figure.name})", ""]
    encoded = base64.b64encode(figure.read_bytes()).decode()
    table = markdown_table(rows).splitlines()
    headings = [c.strip() for c in table[0].strip("|").split("|")]
    body = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]
    return ["<h2>Resilience against cost</h2>", f"<p>{html.escape(note)}</p>", html_table(headings, body),
            f"<img alt='resilience against cost' src='data:image/png;base64,{encoded}'>"]


def _seeds_section(result: Any, md: list[str]) -> list[str]:
    """Across seeds, arms paired by seed (``study.seeds``): every arm against the unhardened
    baseline, and the heads against the text head; the rest of the pairs are in paired.csv."""
    from headstrong.study.seeds import paired_markdown_rows

    paired = getattr(result, "paired", None)
    if paired is None or paired.empty:
        return []
    note = ("Arms (a head, a hardening, or both) paired by seed: the same data order and, in shared layers, the same "
            "fault sites. Mean ΔLoss: B's improvement over A (A / B, the geometric mean over seeds) with a 99% "
            "two-level bootstrap interval (seeds drawn again, then each arm's faults within strata); paired.csv also "
            "holds the paired t test across seeds. Median ΔLoss and mismatch: the change B - A with a 99% paired t "
            "interval across seeds (none with one seed). 'A beats B' is written only where the interval excludes no "
            "difference.")
    parts = ["<h2>Across seeds (arms paired by seed)</h2>", f"<p>{html.escape(note)}</p>"]
    md += ["## Across seeds (arms paired by seed)", "", note, ""]
    sections = [("Every arm against the unhardened baseline", "baseline"), ("The heads against the text head", "text")]
    for title, against in sections:
        figures = ["delta_loss_last", "delta_loss_all", "median_delta_loss_last", "mismatch_all"]
        headings, rows = paired_markdown_rows(paired, figures, against=against)
        if not rows:
            continue
        md += [f"### {title}", "", markdown(headings, rows)]
        parts += [f"<h3>{html.escape(title)}</h3>", html_table(headings, rows)]
    return parts


def _timing_section(out: Path, md: list[str]) -> list[str]:
    """Wall and CPU seconds per stage, summed over every attempt (a killed and resumed study too)."""
    from headstrong.study.timing import stage_table

    table = stage_table(out)
    if table.empty:
        return []
    headings = ["stage", "count", "wall (s)", "CPU (s)", "attempts"]
    rows = [[r["stage"], str(int(r["count"])), f"{r['wall_s']:.1f}", f"{r['cpu_s']:.1f}", str(int(r["attempts"]))]
            for _, r in table.iterrows()]
    md += ["## Wall time per stage", "", markdown(headings, rows)]
    return ["<h2>Wall time per stage</h2>", html_table(headings, rows)]


def write_study_report(result: Any) -> Path:
    """Write ``report.html`` and ``summary.md`` (and one detailed report per comparison)."""
    from headstrong.report.html import build_report

    out = Path(result.out) / "report"
    out.mkdir(parents=True, exist_ok=True)
    details: list[tuple[str, Path]] = []
    for pair in result.pairs:
        base, text, name = pair.baseline, pair.text, pair.campaign
        page = build_report(
            [base.campaigns[name], text.campaigns[name]], out / f"{text.cell.name}__{name}",
            labels=[f"{base.cell.name} {name}", f"{text.cell.name} {name}"], comparison=pair.table,
        )
        details.append((f"{text.cell.name} vs {base.cell.name}: {name}", page))

    table = aggregate(result.summary, getattr(result, "paired", None))
    headings, rows = headline_rows(table)
    cost_headings, cost = cost_rows(result.cells)
    config = result.config
    intro = (
        f"Data set {config.dataset}; encoder {config.encoder}; backbones {', '.join(config.backbones)}; "
        f"inits {', '.join(config.inits)}; formats {', '.join(config.formats)}; seeds {', '.join(map(str, config.seeds))}. "
        "Improvement = baseline ΔLoss / text-guided ΔLoss (mean ΔLoss per layer, range detector "
        f"{'on' if config.campaign.range_detector else 'off'}); 'overall' is the ratio of ΔLoss averaged over all layers. "
        "With one seed an improvement's interval covers that run's faults; with several, the improvement is the "
        "geometric mean over seeds with the paired 99% interval over seeds and faults, and its reading decides only "
        "where the bootstrap and the paired t test across seeds agree (section 'Across seeds')."
    )
    md = [f"# headstrong study: {config.name}", "", intro, "", "## Resilience (the paper's table)", "",
          markdown(headings, rows), "## Cost", "", markdown(cost_headings, cost)]
    hardening_parts = _hardening_section(result, out, md)
    seeds_parts = _seeds_section(result, md)
    timing_parts = _timing_section(Path(result.out), md)
    md += ["## Detailed reports", ""]
    md += [f"- [{title}]({page.relative_to(out)})" for title, page in details]
    parts = [f"<h1>headstrong study: {html.escape(config.name)}</h1>", f"<p>{html.escape(intro)}</p>",
             "<h2>Resilience (the paper's table)</h2>", html_table(headings, rows),
             "<h2>Cost</h2>", html_table(cost_headings, cost), *hardening_parts, *seeds_parts, *timing_parts]
    if details:
        first = details[0][1].parent / "delta_loss_per_layer.png"
        if first.exists():
            encoded = base64.b64encode(first.read_bytes()).decode()
            parts.append(f"<h2>ΔLoss per layer: {html.escape(details[0][0])}</h2>"
                         f"<img alt='ΔLoss per layer' src='data:image/png;base64,{encoded}'>")
    parts.append("<h2>Detailed reports</h2><ul>" + "".join(
        f"<li><a href='{html.escape(str(page.relative_to(out)))}'>{html.escape(title)}</a></li>" for title, page in details
    ) + "</ul>")
    style = "body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px}table{border-collapse:collapse}" \
            "th,td{border:1px solid #ccc;padding:.2rem .5rem}img{max-width:100%}"
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>headstrong study</title><style>{style}</style>"
            f"</head><body>{''.join(parts)}</body></html>")
    (out / "summary.md").write_text("\n".join(md) + "\n")
    target = out / "report.html"
    target.write_text(page, encoding="utf-8")
    return target
