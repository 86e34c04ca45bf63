"""``headstrong inject`` end to end on Fashion-MNIST, and each bad input as one clear error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import headstrong as hs
from headstrong.cli.main import app
from headstrong.train import save_checkpoint
from test_campaign_resume import one_thread  # noqa: F401  (autouse fixture)

runner = CliRunner()
SMALL = ["--dataset", "fashion-mnist", "--max-images", "24", "--n-faults", "6", "--all-images", "--no-progress",
         "--bits", "exponent", "--batch-size", "8", "--chunk-size", "8"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = hs.build_baseline("cnn-small", num_classes=10, in_chans=1, small_input=True)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt", model)


@pytest.fixture(scope="module")
def wrong_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = hs.build_baseline("cnn-small", num_classes=10, in_chans=3, small_input=True)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt3") / "model.pt", model)


def test_inject_from_checkpoint_then_rerun_resumes_with_the_same_records(tmp_path: Path, checkpoint: Path) -> None:
    out = tmp_path / "run"
    first = runner.invoke(app, ["inject", str(checkpoint), *SMALL, "--layers", "head", "--out", str(out)])
    assert first.exit_code == 0, first.output
    assert "head" in first.stdout and "ΔLoss" in first.stdout
    records = hs.load_results(out).records
    assert len(records) == 6 and set(records["bit"]) <= set(range(23, 31))
    sorted((out / "chunks").glob("*.parquet"))[0].unlink()  # as if killed before its last chunk
    again = runner.invoke(app, ["inject", str(checkpoint), *SMALL, "--layers", "head", "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert hs.load_results(out).records.equals(records)


def test_inject_with_a_toml_spec_and_an_override(tmp_path: Path, checkpoint: Path) -> None:
    spec_file = tmp_path / "c.toml"
    hs.CampaignSpec(kind="weight", layers="backbone.stage3.*", n_faults=3, seed=9, only_correct=False,
                    max_images=16).to_toml(spec_file)
    out = tmp_path / "run"
    result = runner.invoke(app, ["inject", str(checkpoint), "--spec", str(spec_file), "--n-faults", "4",
                                 "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.output
    res = hs.load_results(out)
    assert res.spec.kind == "weight" and res.spec.n_faults == 4 and res.spec.seed == 9
    assert all(name.startswith("backbone.stage3.") for name in res.layers)


def test_model_by_name_warns_that_weights_are_random(tmp_path: Path) -> None:
    result = runner.invoke(app, ["inject", "cnn-small", *SMALL, "--layers", "head", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "random (untrained)" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["CKPT", "--dataset", "imagenet-9000"], "unknown data set"),
        (["resnet-1000"], "unknown backbone 'resnet-1000'"),
        (["WRONG"], "does not accept this data set's images"),
        (["CKPT", "--margin", "1.5"], r"margin must be a number in the open interval \(0, 1\)"),
        (["CKPT", "--layers", "nothing.*"], "matches no injectable layer"),
    ],
)
def test_bad_input_is_one_clear_error_and_stored_results_untouched(
    tmp_path: Path, checkpoint: Path, wrong_checkpoint: Path, args: list, message: str
) -> None:
    out = tmp_path / "run"
    good = runner.invoke(app, ["inject", str(checkpoint), *SMALL, "--layers", "head", "--out", str(out)])
    assert good.exit_code == 0, good.output
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    args = [str(checkpoint) if a == "CKPT" else str(wrong_checkpoint) if a == "WRONG" else a for a in args]
    # options after SMALL override its values (the last one given wins)
    result = runner.invoke(app, ["inject", args[0], *SMALL, "--layers", "head", *args[1:], "--out", str(out)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert re.search(message, result.output), result.output
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before


def test_out_that_is_a_file(tmp_path: Path, checkpoint: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("x")
    result = runner.invoke(app, ["inject", str(checkpoint), *SMALL, "--out", str(target)])
    assert result.exit_code == 2 and "is a file" in result.output
    assert target.read_text() == "x"


def test_inject_writes_csv_tables_and_a_table_that_fits_100_columns(tmp_path: Path, checkpoint: Path) -> None:
    import json

    import pandas as pd

    out = tmp_path / "run"
    result = runner.invoke(app, ["inject", str(checkpoint), *SMALL, "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line.rstrip()) for line in lines if str(out) not in line) <= 100  # a path may be longer
    res = hs.load_results(out)
    for name, n in zip(res.per_layer["layer"], res.per_layer["n"]):  # every name whole, n beside it
        assert any(line.split()[:2] == [name, str(n)] for line in lines), name
    assert "percentage points" in result.stdout and "golden model" in result.stdout
    per_layer, per_bit = pd.read_csv(out / "per_layer.csv"), pd.read_csv(out / "per_bit.csv")
    assert per_layer["layer"].tolist() == res.per_layer["layer"].tolist()
    assert per_layer["delta_loss_mean"].to_numpy() == pytest.approx(res.per_layer["delta_loss_mean"].to_numpy())
    assert sorted(per_layer["vulnerability_rank"]) == list(range(1, len(per_layer) + 1))
    assert len(per_bit) == len(res.per_bit) and {"layer", "bit", "mismatch_rate"} <= set(per_bit.columns)
    assert json.loads((out / "model.json").read_text()) == {"model": str(checkpoint), "name": checkpoint.parent.name}


def test_inject_warns_when_the_golden_model_is_at_chance_level(tmp_path: Path, checkpoint: Path) -> None:
    result = runner.invoke(app, ["inject", str(checkpoint), *SMALL, "--layers", "head", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "warning: the golden model classifies" in result.output and "not clearly better than chance" in result.output


def test_inject_warns_when_a_ber_campaign_drew_no_bit_error(tmp_path: Path, checkpoint: Path) -> None:
    args = ["inject", str(checkpoint), *SMALL, "--layers", "head", "--kind", "weight", "--fault-model", "ber",
            "--ber", "1e-12", "--fmt", "int8", "--bits", "all", "--out", str(tmp_path / "r")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "drew no bit error in any of its 6 faults" in result.output
