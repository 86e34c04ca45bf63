"""Reports of campaign results: rich/Markdown/HTML tables, PNG plots, a self-contained HTML page."""

from headstrong.report.html import build_report
from headstrong.report.plots import delta_loss_per_layer, mismatch_heatmap, side_by_side
from headstrong.report.tables import layer_table

__all__ = ["build_report", "delta_loss_per_layer", "mismatch_heatmap", "side_by_side", "layer_table"]
