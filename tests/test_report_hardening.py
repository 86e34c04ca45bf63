"""The resilience-against-cost table says in words which intervals include no effect."""

from __future__ import annotations

from headstrong.report.hardening import HardeningRow, Ratio, markdown_table


def _row(improvement: Ratio, accuracy: Ratio, latency: Ratio) -> HardeningRow:
    return HardeningRow(
        backbone="cnn-small", head="baseline", hardening="range (neuron-fp32)", range_detector=True,
        top1_reference=90.0, top1=90.0, accuracy_change_pp=accuracy, improvement_all=improvement,
        improvement_last=Ratio(3.0, 2.0, 4.5), delta_loss_all=0.1, delta_loss_all_reference=0.2, delta_loss_last=0.1,
        delta_loss_last_reference=0.3, median_delta_loss_all=0.0, median_delta_loss_all_reference=0.0,
        params=110, params_reference=100, macs=1000, macs_reference=1000, latency_overhead=latency)


def test_every_interval_says_whether_it_includes_no_effect() -> None:
    table = markdown_table([_row(Ratio(1.65, 0.17, 3.3), Ratio(-0.4, -0.9, 0.1, 0.95), Ratio(0.048, -0.019, 0.104, 0.95)),
                            _row(Ratio(2.0, 1.2, 3.0), Ratio(0.0, 0.0, 0.0, 0.95), Ratio(0.2, 0.1, 0.3, 0.95))])
    first, second = table.splitlines()[2:4]
    assert "1.65x [0.17, 3.3] (includes 1)" in first and "3x [2, 4.5] |" in first
    assert "-0.40 [-0.90, +0.10] (includes 0)" in first and "+4.8 [-1.9, +10.4] (includes 0)" in first
    assert "2x [1.2, 3] |" in second and "+0.00 [+0.00, +0.00] |" in second and "+20.0 [+10.0, +30.0] |" in second
