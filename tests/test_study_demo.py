"""The demo pipeline end to end: the paper's table, the report, reuse, resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from headstrong.study import demo_config, run_study

from _models import one_thread_module  # noqa: F401  (module-scoped fixture)

TINY_TRAIN = {"epochs": 1, "limit_train": 384, "limit_test": 128, "batch_size": 64}
TINY_CAMPAIGN = {"n_faults": 8, "max_images": 32, "weight_n_faults": 32, "batch_size": 32}


def tiny_demo(out: Path, formats: tuple[str, ...] = ("fp32", "bf16")):
    return demo_config(out=str(out), formats=formats, train=TINY_TRAIN, campaign=TINY_CAMPAIGN)




@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread_module):
    """Same thread count here and in the killed subprocess: float sums then round alike."""


@pytest.fixture(scope="module")
def finished_demo(tmp_path_factory: pytest.TempPathFactory, _one_thread):
    out = tmp_path_factory.mktemp("demo") / "run"
    return run_study(tiny_demo(out), progress=False)


def test_demo_writes_the_papers_table_and_a_report(finished_demo) -> None:
    result = finished_demo
    summary = pd.read_csv(result.out / "summary.csv")
    assert set(summary["campaign"]) == {"neuron-fp32", "neuron-bf16", "weight-last-fp32"}
    row = summary[summary["campaign"] == "neuron-fp32"].iloc[0]
    for column in ("baseline_top1", "text_top1", "improvement_last", "improvement_overall",
                   "baseline_top2_diff", "text_top2_diff", "baseline_mismatch", "text_mismatch"):
        assert pd.notna(row[column]), column
    assert 0.0 < row["baseline_top1"] <= 1.0 and 0.0 < row["text_top1"] <= 1.0
    # the improvement is the ratio of the last layers' mean ΔLoss, as stored in the campaigns
    assert row["improvement_last"] == pytest.approx(row["baseline_delta_loss_last"] / row["text_delta_loss_last"], rel=1e-6)
    report = result.report
    assert report.name == "report.html" and report.exists()
    page = report.read_text()
    assert "data:image/png;base64," in page and "improvement, last layer" in page
    assert (report.parent / "summary.md").read_text().count("|") > 20
    pngs = list(report.parent.rglob("*.png"))
    assert len(pngs) >= 3 and all(p.stat().st_size > 1000 for p in pngs)


def test_demo_rerun_reuses_every_stage(finished_demo) -> None:
    before = {p: p.stat().st_mtime_ns for p in (finished_demo.out / "campaigns").rglob("*.parquet")}
    again = run_study(finished_demo.config, progress=False)
    after = {p: p.stat().st_mtime_ns for p in (finished_demo.out / "campaigns").rglob("*.parquet")}
    assert before == after  # nothing recomputed
    pd.testing.assert_frame_equal(again.summary, finished_demo.summary)


def test_demo_refuses_a_different_study_in_the_same_folder(finished_demo) -> None:
    other = tiny_demo(finished_demo.out, formats=("fp32",))
    with pytest.raises(ValueError, match="holds a different study .*formats"):
        run_study(other, progress=False)


def test_demo_killed_mid_run_resumes_to_the_same_result(tmp_path: Path, finished_demo) -> None:
    out = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import torch
        from headstrong.study import demo_config, run_study
        torch.set_num_threads(1)
        config = demo_config(out={str(out)!r}, train={TINY_TRAIN!r}, campaign={TINY_CAMPAIGN!r})
        run_study(config, progress=False)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.time() + 240
        # kill once the second model is training or its campaigns run: the first stages are done
        while time.time() < deadline and process.poll() is None:
            if (out / "campaigns").is_dir() and len(list((out / "campaigns").rglob("*.parquet"))) >= 2:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be killed; make it longer"
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    assert not (out / "report" / "report.html").exists()
    resumed = run_study(tiny_demo(out), progress=False)
    columns = [c for c in finished_demo.summary.columns]
    pd.testing.assert_frame_equal(resumed.summary[columns], finished_demo.summary[columns])
    assert json.loads((out / "study.json").read_text())["name"] == "demo"


def test_demo_table_prints_each_improvement_with_its_interval_and_reading(finished_demo) -> None:
    from headstrong.study.summary import aggregate, transposed_tables

    summary = pd.read_csv(finished_demo.out / "summary.csv")
    (title, headings, rows), = transposed_tables(aggregate(summary))
    by_name = {row[0]: row[1:] for row in rows}
    for i, campaign in enumerate(headings[1:]):
        stored = summary[summary["campaign"] == campaign].iloc[0]
        for key, name in (("last", "improvement, last layer [99% CI]"), ("overall", "improvement, overall [99% CI]")):
            low, high = stored[f"improvement_{key}_ci_low"], stored[f"improvement_{key}_ci_high"]
            assert by_name[name][i] == f"{stored[f'improvement_{key}']:.3g}x [{low:.3g}, {high:.3g}]"
        reading = rows[[r[0] for r in rows].index("improvement, last layer [99% CI]") + 1]
        expected = ("CI includes 1" if stored["improvement_last_ci_low"] <= 1 <= stored["improvement_last_ci_high"]
                    else "text-guided better" if stored["improvement_last_ci_low"] > 1 else "baseline better")
        assert reading[0] == "  reading" and reading[1 + i] == expected
    assert "top-2 diff baseline (pp)" in by_name
    from headstrong.study.summary import headline_rows

    headings, html_rows = headline_rows(aggregate(summary))
    column = headings.index("improvement, last layer [99% CI]")
    assert all(row[column].endswith(("(CI includes 1)", "(text-guided better)", "(baseline better)")) for row in html_rows)
