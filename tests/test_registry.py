"""The one registry behind formats, fault models, RA estimators and backbones."""

from __future__ import annotations

import pytest

import headstrong as hs
from headstrong._registry import Registry
from headstrong.formats._registry import register_format
from headstrong.ra import estimators
from headstrong.textguided.backbones import list_backbones, register_backbone


def test_entries_in_order_lookup_lists_the_names_duplicates_refused() -> None:
    colours: Registry[int] = Registry("colour")
    colours.register("red")(1)
    colours.add("blue", 2)
    assert list(colours) == ["red", "blue"] and colours["blue"] == 2 and "red" in colours and len(colours) == 2
    assert colours.get("red") == 1
    with pytest.raises(ValueError, match="unknown colour 'green'; expected one of red, blue"):
        colours.get("green")
    with pytest.raises(ValueError, match="colour 'red' is already registered"):
        colours.add("red", 3)
    assert colours["red"] == 1
    with pytest.raises(ValueError, match="needs a non-empty name"):
        colours.add("", 4)


def test_every_registry_refuses_a_second_entry_under_a_name() -> None:
    with pytest.raises(ValueError, match="format 'bf16' is already registered"):
        register_format("bf16")(lambda: None)
    with pytest.raises(ValueError, match="fault model 'ber' is already registered"):
        hs.faults.register_fault_model("ber")(lambda: None)
    with pytest.raises(ValueError, match="estimator 'is-b' is already registered"):
        estimators.register("is-b")(type("Other", (estimators.Estimator,), {}))
    with pytest.raises(ValueError, match="backbone 'cnn-small' is already registered"):
        register_backbone("cnn-small")(lambda in_chans: None)
    assert "is-b" in estimators.list_estimators() and "cnn-small" in list_backbones("builtin")
    with pytest.raises(ValueError, match="unknown estimator 'isb'; expected one of uniform, mac, is, is-b"):
        estimators.get("isb")
