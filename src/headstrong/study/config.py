"""A study: the demo's pipeline over a grid of backbones x inits x formats x seeds, as data.

The config is validated in full before anything runs (an unknown key or value names the key and
what is allowed), because a typo found after an hour of training costs the hour.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

# The "init" axis: the baseline (ordinary C-way Linear) and the text-guided head's four inits.
INITS = ("baseline", "text", "name", "random", "random-linear", "etf")
STUDY_KEYS = ("name", "dataset", "encoder", "backbones", "inits", "formats", "seeds", "hardenings", "hardening_inits",
              "out", "device")
CAMPAIGN_KEYS = ("n_faults", "margin", "target", "max_faults", "max_images", "weight_last_layer", "weight_n_faults",
                 "range_detector", "batch_size")
# Train settings the grid sets itself, per cell: they may not appear under [train].
GRID_OWNED_TRAIN_KEYS = ("backbone", "head", "init", "seed", "dataset", "encoder", "device")


@dataclass(frozen=True)
class CampaignSettings:
    """Neuron campaigns over every injectable layer, and a weight campaign on the last layer.

    Neuron campaigns are stratified and sized by ``margin`` on ``target`` (99% interval per
    layer, ``max_faults`` the budget per layer) unless ``n_faults`` fixes a uniform count; the
    weight campaign draws ``weight_n_faults`` faults, each on every evaluation image."""

    n_faults: Optional[int] = None  # None: stratified, each layer sized by margin
    margin: float = 0.005  # half-width of the 99% interval: ±0.5 pp on the mismatch rate
    target: str = "mismatch"  # or "delta_loss" (margin relative to the mean)
    max_faults: Optional[int] = None  # per layer; None: the campaign's default (102,400)
    max_images: int = 256
    weight_last_layer: bool = True
    weight_n_faults: int = 2048
    range_detector: bool = True
    batch_size: int = 256


@dataclass(frozen=True)
class StudyConfig:
    name: str = "study"
    dataset: str = "fashion-mnist"
    encoder: str = "minilm"
    backbones: tuple[str, ...] = ("cnn-small",)
    inits: tuple[str, ...] = ("baseline", "text")
    formats: tuple[str, ...] = ("fp32", "bf16")
    seeds: tuple[int, ...] = (0,)
    # The hardening axis: "none", a method of headstrong.harden or a '+' combination, per cell;
    # [harden] holds the methods' settings (headstrong.harden.HardenOptions fields).
    hardenings: tuple[str, ...] = ("none",)
    # The inits the hardening axis applies to (each also gets detector-off campaigns); () = every init.
    hardening_inits: tuple[str, ...] = ()
    harden: dict[str, Any] = field(default_factory=dict)
    out: str = "runs/study"
    device: str = "cpu"
    train: dict[str, Any] = field(default_factory=dict)
    campaign: CampaignSettings = field(default_factory=CampaignSettings)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("backbones", "inits", "formats", "seeds", "hardenings", "hardening_inits"):
            data[key] = list(data[key])
        if not data["hardening_inits"]:  # every init (the default) keeps study.json as it was
            del data["hardening_inits"]
        if data["hardenings"] == ["none"] and not data["harden"]:  # a study without the axis stays as it was
            del data["hardenings"], data["harden"]
        return data


def _unknown(section: str, keys: set[str], allowed: tuple[str, ...] | list[str]) -> None:
    unknown = sorted(keys - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(repr(k) for k in unknown)} in [{section}]; "
            f"allowed: {', '.join(allowed)}"
        )


def _list_of(name: str, value: Any, kind: type) -> tuple[Any, ...]:
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value or not all(
        isinstance(v, kind) and not isinstance(v, bool) for v in value
    ):
        raise ValueError(f"[study] {name} must be a non-empty list of {kind.__name__}; got {value!r}")
    return tuple(value)


def _check_choices(name: str, values: tuple[str, ...], allowed: list[str] | tuple[str, ...]) -> None:
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ValueError(f"[study] {name}: unknown value(s) {', '.join(map(repr, bad))}; allowed: {', '.join(allowed)}")


def parse_study(data: dict[str, Any]) -> StudyConfig:
    """Validate a study mapping (as read from TOML) and build the config."""
    from headstrong import formats
    from headstrong._device import resolve_device
    from headstrong.data import list_datasets
    from headstrong.textguided.encoders import check_encoder
    from headstrong.textguided.backbones import list_backbones
    from headstrong.train import TrainConfig

    _unknown("top level", set(data), ("study", "train", "campaign", "harden"))
    study = dict(data.get("study", {}))
    _unknown("study", set(study), STUDY_KEYS)
    values: dict[str, Any] = {}
    for key in ("name", "dataset", "encoder", "out", "device"):
        if key in study:
            if not isinstance(study[key], str) or not study[key]:
                raise ValueError(f"[study] {key} must be a non-empty string; got {study[key]!r}")
            values[key] = study[key]
    for key, kind in (("backbones", str), ("inits", str), ("formats", str), ("seeds", int), ("hardenings", str),
                      ("hardening_inits", str)):
        if key in study:
            values[key] = _list_of(key, study[key], kind)
    if "encoder" in values:
        check_encoder(values["encoder"])
    if "device" in values:  # an unknown name is refused now; a missing GPU where the study runs
        values["device"] = str(resolve_device(values["device"], available=False))
    config = StudyConfig(**values)

    datasets = list_datasets()
    if config.dataset not in datasets and not config.dataset.startswith("imagefolder:"):
        raise ValueError(f"[study] dataset: unknown {config.dataset!r}; allowed: {', '.join(datasets)}, imagefolder:PATH")
    _check_choices("inits", config.inits, INITS)
    if "baseline" not in config.inits:
        raise ValueError("[study] inits must include 'baseline': every text-guided model is compared to it")
    _check_choices("formats", config.formats, formats.list())
    known = list_backbones()
    bad = [b for b in config.backbones if b not in known]
    if bad:
        builtin = ", ".join(list_backbones("builtin"))
        raise ValueError(
            f"[study] backbones: unknown {', '.join(map(repr, bad))}; allowed: a built-in ({builtin}), "
            "a torchvision model name or a timm model name"
        )
    if any(s < 0 for s in config.seeds):
        raise ValueError(f"[study] seeds must be non-negative integers; got {list(config.seeds)}")
    _check_choices("hardening_inits", config.hardening_inits, config.inits)

    train = dict(data.get("train", {}))
    train_fields = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in GRID_OWNED_TRAIN_KEYS]
    _unknown("train", set(train), train_fields)
    TrainConfig(**train)  # its own validation names bad values

    campaign = dict(data.get("campaign", {}))
    _unknown("campaign", set(campaign), CAMPAIGN_KEYS)
    for key in ("n_faults", "max_faults", "max_images", "weight_n_faults", "batch_size"):
        value = campaign.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"[campaign] {key} must be a positive integer; got {value!r}")
    for key in ("weight_last_layer", "range_detector"):
        if key in campaign and not isinstance(campaign[key], bool):
            raise ValueError(f"[campaign] {key} must be true or false; got {campaign[key]!r}")
    margin = campaign.get("margin", CampaignSettings.margin)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 < margin < 1:
        raise ValueError(f"[campaign] margin must be a number in the open interval (0, 1), e.g. 0.005 for ±0.5 pp; "
                         f"got {margin!r}")
    from headstrong.faults.strata import TARGETS

    if campaign.get("target", CampaignSettings.target) not in TARGETS:
        raise ValueError(f"[campaign] target: unknown {campaign['target']!r}; allowed: {', '.join(TARGETS)}")
    harden = _check_harden(config.hardenings, dict(data.get("harden", {})))
    return dataclasses.replace(config, train=train, campaign=CampaignSettings(**campaign), harden=harden)


def _check_harden(hardenings: tuple[str, ...], settings: dict[str, Any]) -> dict[str, Any]:
    """Every hardening parses (names what is allowed) and [harden] holds known settings."""
    from headstrong.harden import HardenOptions, parse_methods

    if "none" not in hardenings:
        raise ValueError("[study] hardenings must include 'none': every hardening is compared to the unhardened model")
    for text in hardenings:
        try:
            parse_methods(text)
        except ValueError as error:
            raise ValueError(f"[study] hardenings: {error}") from None
    allowed = [f.name for f in dataclasses.fields(HardenOptions) if f.name not in ("top", "layers", "seed")]
    _unknown("harden", set(settings), allowed)
    HardenOptions(**settings)
    return settings


def load_study(path: str | Path) -> StudyConfig:
    """Read and validate a study TOML file."""
    from headstrong.campaign.spec import read_toml

    return parse_study(read_toml(path, "study config"))
