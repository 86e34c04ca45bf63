"""Reports of campaign results: rich/Markdown/HTML tables, PNG plots, a self-contained HTML page."""

from headstrong.report.checks import result_warnings
from headstrong.report.html import build_report
from headstrong.report.model_layers import LayerInfo, describe_layers
from headstrong.report.plots import delta_loss_per_layer, mismatch_heatmap, side_by_side
from headstrong.report.tables import layer_table, rank_layers, write_tables

__all__ = [
    "build_report", "delta_loss_per_layer", "mismatch_heatmap", "side_by_side", "layer_table", "rank_layers",
    "write_tables", "result_warnings", "describe_layers", "LayerInfo",
]
