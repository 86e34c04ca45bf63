"""``headstrong ra``: runs from a checkpoint, prints the table, writes results and the plot."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import headstrong as hs
from headstrong.cli.main import app
from headstrong.train import save_checkpoint

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = hs.build_baseline("cnn-small", num_classes=10, in_chans=1)
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "model.pt", model, config={"dataset": "fashion-mnist"})


def test_ra_command_prints_table_and_writes_results(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "ra"
    result = runner.invoke(app, [
        "ra", str(checkpoint), "--estimator", "uniform,is-b", "--samples", "12", "--pilot", "16",
        "--pilot-images", "3", "--max-images", "6", "--fmt", "int8", "--threads", "1", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    assert "Resiliency Accuracy" in result.stdout and "is-b" in result.stdout and "SA (no fault)" in result.stdout
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["estimates"]) == {"uniform", "is-b"}
    assert saved["images"] == 6 and saved["accelerator"]["name"] == "systolic-32x32-os"
    for estimate in saved["estimates"].values():
        assert estimate["ci"][0] <= estimate["ra"] <= estimate["ci"][1]
    pilot = saved["estimates"]["is-b"]
    assert 0 < pilot["pilot"] <= 16 and pilot["pilot_cost"] == pytest.approx(pilot["pilot"] * 3 / 6)
    assert (out / "convergence.png").stat().st_size > 1000
    assert torch.get_num_threads() == 1


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()  # --threads sets torch's threads for this process
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--samples", "0"], "must be >= 1"),
        (["--estimator", "uniform,bogus"], "expected a comma-separated list"),
        (["--accelerator", "tpu-v9"], "unknown accelerator preset"),
        (["--pilot-images", "0"], "--pilot-images 0: must be >= 1"),
        (["--threads", "0"], "'--threads': Input should be greater than or equal to 1"),
    ],
)
def test_ra_command_rejects_bad_input(checkpoint: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["ra", str(checkpoint), "--max-images", "4", "--out", str(tmp_path), *args])
    assert result.exit_code == 2
    assert message in result.output


def test_replay_chunk_follows_the_largest_activation() -> None:
    from headstrong.ra.api import auto_chunk_size

    assert auto_chunk_size([(16, 28, 28), (10,)], "cpu") == (16 << 20) // (16 * 28 * 28 * 4)  # 334 pairs
    assert auto_chunk_size([(4, 5, 5)], "cpu") == 4096  # tiny activations: capped
    assert auto_chunk_size([(512, 112, 112)], "cpu") == 64  # huge ones: floored
    assert auto_chunk_size([(16, 28, 28)], "cuda") == 4096
