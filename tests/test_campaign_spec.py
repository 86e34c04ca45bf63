"""Campaign specs: validation with clear errors, TOML round trips, bit and layer selection."""

from pathlib import Path

import pytest

from headstrong.campaign import CampaignSpec
from headstrong.campaign.plan import LayerPlan, Unit, make_units, plan_layers, stable_seed
from headstrong.campaign.spec import resolve_bits, select_layers
from headstrong.faults import sample_size


def test_toml_round_trip_keeps_every_field(tmp_path: Path) -> None:
    spec = CampaignSpec(kind="weight", layers=("fc", "conv1"), fmt="bf16", bits=[3, 1, 3],
                        n_faults=17, seed=5, only_correct=False, max_images=40, per_bit=True)
    path = tmp_path / "spec.toml"
    spec.to_toml(path)
    again = CampaignSpec.from_toml(path)
    assert again == spec
    assert again.bits == (1, 3)  # sorted, deduplicated
    assert "n_faults = 17" in path.read_text()


def test_defaults_round_trip_without_none_values(tmp_path: Path) -> None:
    path = tmp_path / "spec.toml"
    CampaignSpec().to_toml(path)
    assert CampaignSpec.from_toml(path) == CampaignSpec()


@pytest.mark.parametrize("margin", [0.0, 1.0, -0.1, 1.5])
def test_margin_outside_open_unit_interval_is_refused(margin: float) -> None:
    with pytest.raises(ValueError, match=r"margin must be a number in the open interval \(0, 1\)"):
        CampaignSpec(margin=margin)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "activation"}, "expected one of neuron, weight"),
        ({"bits": "fraction"}, "expected 'all', sign, exponent, mantissa"),
        ({"n_faults": 0}, "n_faults must be a positive integer"),
        ({"confidence": 1.0}, "confidence must be a number"),
        ({"layers": []}, "non-empty list of names"),
        ({"max_images": -3}, "max_images must be a positive integer"),
    ],
)
def test_bad_values_name_what_is_allowed(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CampaignSpec(**changes)


def test_unknown_toml_key_lists_the_options(tmp_path: Path) -> None:
    path = tmp_path / "spec.toml"
    path.write_text('kind = "neuron"\nnfaults = 3\n')
    with pytest.raises(ValueError, match="unknown campaign option.*nfaults.*expected some of kind"):
        CampaignSpec.from_toml(path)


class _Int8:
    """The shape of a format as resolve_bits sees it: a width and its bit groups."""

    name, bits = "int8", 8

    def bit_groups(self) -> dict[str, list[int]]:
        return {"sign": [7], "mantissa": list(range(7))}


def test_bit_fields_follow_the_format_groups() -> None:
    fmt = _Int8()
    assert resolve_bits(CampaignSpec(bits="sign"), fmt) == [7]
    assert resolve_bits(CampaignSpec(bits="mantissa"), fmt) == list(range(7))
    assert resolve_bits(CampaignSpec(), fmt) == list(range(8))
    assert resolve_bits(CampaignSpec(bits=[0, 5]), fmt) == [0, 5]
    with pytest.raises(ValueError, match=r"do not exist in int8; expected positions 0..7"):
        resolve_bits(CampaignSpec(bits=[8]), fmt)
    with pytest.raises(ValueError, match="int8 has no exponent bits; its bit groups are sign, mantissa"):
        resolve_bits(CampaignSpec(bits="exponent"), fmt)


def test_layer_selection_by_all_glob_and_names() -> None:
    names = ["conv1", "layer1.0.conv1", "layer1.0.conv2", "fc"]
    assert select_layers(CampaignSpec(), names) == names
    assert select_layers(CampaignSpec(layers="layer1.*"), names) == names[1:3]
    assert select_layers(CampaignSpec(layers=("fc", "conv1")), names) == ["conv1", "fc"]  # forward order
    with pytest.raises(ValueError, match="matches no injectable layer; injectable layers are conv1"):
        select_layers(CampaignSpec(layers="block*"), names)
    with pytest.raises(ValueError, match="unknown layer.*conv9"):
        select_layers(CampaignSpec(layers="conv9"), names)


def test_plan_uses_leveugle_per_layer_and_per_bit() -> None:
    spec = CampaignSpec(margin=0.05, confidence=0.95, sampling="uniform")
    plans = plan_layers(spec, ["a", "b"], {"a": 0, "b": 1}, {"a": 1000, "b": 10}, [0, 1, 2], sample_size)
    assert [p.n_faults for p in plans] == [sample_size(3000, 0.05, 0.95), sample_size(30, 0.05, 0.95)]
    assert plans[1].fault_offset == plans[0].n_faults
    per_bit = plan_layers(spec.replace(per_bit=True), ["a"], {"a": 0}, {"a": 1000}, [0, 1, 2], sample_size)
    assert [n for _, n in per_bit[0].strata] == [sample_size(1000, 0.05, 0.95)] * 3


def test_units_cover_each_layer_exactly_once() -> None:
    plans = [LayerPlan("a", 0, 50, (0,), (((0,), 10),), 0), LayerPlan("b", 3, 50, (0,), (((0,), 4),), 10)]
    units = make_units(plans, chunk_size=4)
    assert [(u.id, u.start, u.stop) for u in units] == [
        ("L000_000000000", 0, 4), ("L000_000000004", 4, 8), ("L000_000000008", 8, 10), ("L003_000000000", 0, 4),
    ]
    # a fault meeting 3 images: units cover pairs, whole faults each (4 faults = 12 pairs)
    units = make_units(plans, chunk_size=4, images_per_fault=3)
    assert [(u.id, u.start, u.stop, u.rows) for u in units] == [
        ("L000_000000000", 0, 12, 12), ("L000_000000012", 12, 24, 12), ("L000_000000024", 24, 30, 6),
        ("L003_000000000", 0, 12, 12),
    ]
    assert [Unit.from_dict(u.to_dict()) for u in units] == units
    with pytest.raises(ValueError, match="lacks stop"):
        Unit.from_dict({"id": "x", "layer": "a", "start": 0})


def test_stable_seed_is_fixed_text_hash() -> None:
    assert stable_seed(0, "neuron", "fc") == stable_seed(0, "neuron", "fc")
    assert stable_seed(0, "neuron", "fc") != stable_seed(1, "neuron", "fc")
    assert 0 <= stable_seed("x") < 2**63
