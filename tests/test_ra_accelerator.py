"""Accelerator models: presets, TOML round trip, utilisation per dataflow, and clear errors."""

from pathlib import Path

import pytest

from headstrong.ra import Accelerator, presets


def test_paper_systolic_preset_has_the_papers_shares() -> None:
    acc = Accelerator.preset("systolic-32x32-os")
    assert (acc.rows, acc.cols, acc.dataflow) == (32, 32, "os")
    assert acc.shares["input"] == pytest.approx(0.3056, abs=1e-4)
    assert acc.shares["weight"] == pytest.approx(0.3056, abs=1e-4)
    assert acc.shares["output"] == pytest.approx(0.2187, abs=1e-4)
    assert acc.shares["control"] == pytest.approx(0.170, abs=1e-4)
    assert sum(acc.shares.values()) == pytest.approx(1.0)
    assert Accelerator.systolic(32, 32, "os").shares == acc.shares


def test_presets_list_both_and_load_by_name() -> None:
    assert {"systolic-32x32-os", "nvdla"} <= set(presets())
    nvdla = Accelerator.load("nvdla")
    assert nvdla.dataflow == "ws" and (nvdla.rows, nvdla.cols) == (64, 16)


def test_toml_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(
        'rows = 4\ncols = 8\ndataflow = "weight-stationary"\ncontrol_crash = 0.5\n'
        "[shares]\ninput = 0.25\nweight = 0.25\noutput = 0.25\ncontrol = 0.25\n"
        "[fit]\ninput = 2.0\nweight = 1.0\noutput = 1.0\ncontrol = 0.0\n"
    )
    acc = Accelerator.load(path)
    assert acc.name == "mine" and acc.dataflow == "ws" and acc.control_crash == 0.5
    tp = acc.type_probabilities()
    # TP = share x FIT, normalised: 0.5 : 0.25 : 0.25 : 0
    assert tp == pytest.approx({"input": 0.5, "weight": 0.25, "output": 0.25, "control": 0.0})
    assert Accelerator.from_dict(acc.to_dict()) == acc


@pytest.mark.parametrize(
    ("dataflow", "expected"),
    [
        # M=40 outputs channels, N=10 pixels, K=50 reduction on a 32x16 array
        ("os", 40 * 10 / (64 * 16)),
        ("ws", 50 * 40 / (64 * 48)),
        ("is", 50 * 10 / (64 * 16)),
    ],
)
def test_utilisation_tiles_the_layer_onto_the_array(dataflow: str, expected: float) -> None:
    acc = Accelerator.systolic(32, 16, dataflow)
    assert acc.utilisation(m=40, n=10, k=50) == pytest.approx(expected)


def test_full_tiles_use_every_pe() -> None:
    acc = Accelerator.systolic(8, 8, "os")
    assert acc.utilisation(m=16, n=24, k=3) == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shares": {"input": 0.5, "weight": 0.5, "output": 0.5, "control": 0.0}}, "sum to 1.5"),
        ({"shares": {"input": 0.5, "weight": 0.5}}, "missing"),
        ({"fit": {"input": -1.0, "weight": 1.0, "output": 1.0, "control": 1.0}}, ">= 0"),
        ({"dataflow": "diagonal"}, "os \\(output-stationary\\)"),
        ({"rows": 0}, "rows"),
        ({"control_crash": 1.5}, "\\[0, 1\\]"),
    ],
)
def test_bad_accelerators_are_clear_errors(kwargs: dict, message: str) -> None:
    base = {
        "name": "x", "rows": 4, "cols": 4, "dataflow": "os",
        "shares": {"input": 0.25, "weight": 0.25, "output": 0.25, "control": 0.25},
    }
    base.update(kwargs)
    with pytest.raises(ValueError, match=message):
        Accelerator(**base)


def test_unknown_preset_and_toml_key_name_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="systolic-32x32-os"):
        Accelerator.load("tpu-v9")
    bad = tmp_path / "bad.toml"
    bad.write_text('rows = 4\ncols = 4\ndataflow = "os"\nsize = 3\n[shares]\ninput = 1.0\nweight = 0\noutput = 0\ncontrol = 0\n')
    with pytest.raises(ValueError, match="allowed"):
        Accelerator.load(bad)


def test_any_systolic_size_loads_by_name() -> None:
    acc = Accelerator.load("systolic-4x8-ws")
    assert (acc.rows, acc.cols, acc.dataflow) == (4, 8, "ws")
    assert acc.shares == Accelerator.preset("systolic-32x32-os").shares
