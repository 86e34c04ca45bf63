"""Site probabilities: MACs and shapes from the real model, p summing to 1, site ids round trip."""

import numpy as np
import torch
import pytest
from torch import nn

from headstrong.ra import Accelerator, SiteSpace, layer_shapes, site_probabilities


def _tiny() -> nn.Module:
    return nn.Sequential(
        nn.AvgPool2d(2), nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.ReLU(),
        nn.Flatten(), nn.Linear(128, 10),
    )


def test_layer_shapes_count_macs_from_the_forward_pass() -> None:
    shapes = layer_shapes(_tiny(), (1, 28, 28))
    assert [s.name for s in shapes] == ["1", "3", "6"]
    conv1, conv2, fc = shapes
    assert conv1.input_shape == (1, 14, 14) and conv1.output_shape == (4, 6, 6)
    assert conv1.macs == 4 * 36 * 9 and conv2.macs == 8 * 16 * 36 and fc.macs == 10 * 128
    assert conv2.counts == {"input": 144, "weight": 288, "output": 128}


def test_probabilities_follow_the_formula_and_sum_to_one() -> None:
    acc = Accelerator.systolic(32, 32, "os")
    df = site_probabilities(_tiny(), acc, (1, 28, 28), bits=8)
    assert len(df) == 3 * 4
    assert df["p"].sum() == pytest.approx(1.0)
    bits = np.where(df["type"] == "control", 1, 8)
    assert (df["p_site"] * df["n_variables"] * bits).sum() == pytest.approx(1.0)
    total = 1296 + 4608 + 1280
    row = df[(df["layer"] == "3") & (df["type"] == "weight")].iloc[0]
    assert row["LP"] == pytest.approx(4608 / total)
    assert row["TP"] == pytest.approx(0.3056, abs=1e-4)
    assert row["VP"] == pytest.approx(1 / 288)
    assert row["UF"] == pytest.approx(8 * 16 / (32 * 32))
    assert row["p_site"] == pytest.approx(row["LP"] * row["TP"] / 288 / 8)
    # control of every layer together carries the control share
    assert df[df["type"] == "control"]["p"].sum() == pytest.approx(acc.type_probabilities()["control"])


def test_site_space_ids_round_trip_and_cover_every_site() -> None:
    space = SiteSpace(_tiny(), Accelerator.systolic(8, 8, "ws"), (1, 28, 28), bits=8)
    assert space.size == (196 + 36 + 144 + 144 + 288 + 128 + 128 + 1280 + 10) * 8
    ids = np.arange(space.size)
    group, element, bit = space.decode(ids)
    assert np.array_equal(space.encode(group, element, bit), ids)
    assert np.all(element < space.n[group]) and np.all(bit < 8)
    # every software site's p plus the control mass is 1
    assert space.p_site(group).sum() + space.p_control == pytest.approx(1.0)
    with pytest.raises(ValueError, match="site ids"):
        space.decode(np.array([space.size]))


def test_bad_shape_and_bits_are_clear_errors() -> None:
    acc = Accelerator.systolic()
    with pytest.raises(ValueError, match="one sample's shape"):
        site_probabilities(_tiny(), acc, (), bits=8)
    with pytest.raises(ValueError, match="bits"):
        site_probabilities(_tiny(), acc, (1, 28, 28), bits=0)
    with pytest.raises(ValueError, match="no Conv or Linear"):
        site_probabilities(nn.Sequential(nn.Flatten()), acc, (1, 4, 4))


def test_estimate_rejects_bad_arguments_before_any_engine_work() -> None:
    import headstrong as hs

    model = _tiny()
    data = (torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="samples"):
        hs.ra.estimate(model, data, estimator="is", samples=0)
    with pytest.raises(ValueError, match="unknown estimator"):
        hs.ra.estimate(model, data, estimator="stratified", samples=10)
    with pytest.raises(ValueError, match="max_images"):
        hs.ra.estimate(model, data, estimator="is", samples=10, max_images=0)
