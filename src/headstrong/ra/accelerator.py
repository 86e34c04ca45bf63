"""Accelerator models for Resiliency Accuracy: which flip-flops a fault can hit, and how busy they are.

A transient fault lands on one flip-flop of the accelerator. Where it lands decides what it
corrupts: an input activation, a weight, an output activation (partial sum) or control state.
The chance of each type is its share of the flip-flops times that type's raw FIT rate
(Tyagi et al., HPCA 2023, "Thales"). The dataflow and array size decide how many processing
elements (PEs) a layer keeps busy; a fault in an idle PE is masked.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from headstrong._checks import check_number

TYPES: tuple[str, ...] = ("input", "weight", "output", "control")
SOFTWARE_TYPES: tuple[str, ...] = ("input", "weight", "output")

# accepted spellings -> canonical dataflow
_DATAFLOWS: dict[str, str] = {
    "os": "os", "output-stationary": "os", "output_stationary": "os",
    "ws": "ws", "weight-stationary": "ws", "weight_stationary": "ws",
    "is": "is", "input-stationary": "is", "input_stationary": "is",
}
_SHARE_TOLERANCE = 1e-3  # the paper's own shares (30.56+30.56+21.87+17.0) sum to 99.99%
_PRESET_DIR = Path(__file__).parent / "presets"
_TOML_KEYS = ("name", "rows", "cols", "dataflow", "shares", "fit", "control_crash", "description")


def _check_type_map(values: Mapping[str, float], what: str) -> dict[str, float]:
    if not isinstance(values, Mapping):
        raise ValueError(
            f"{what} = {values!r}: must be a table with one number per type, "
            f"e.g. [{what}] input = 0.3056, weight = 0.3056, output = 0.2187, control = 0.17"
        )
    unknown = sorted(set(values) - set(TYPES))
    missing = [t for t in TYPES if t not in values]
    if unknown or missing:
        raise ValueError(
            f"{what} must give exactly the types {', '.join(TYPES)}; "
            f"unknown: {unknown or 'none'}, missing: {missing or 'none'}"
        )
    out: dict[str, float] = {}
    for t in TYPES:
        v = check_number(f"{what}[{t!r}]", values[t])  # a string or NaN is refused here
        if v < 0:
            raise ValueError(f"{what}[{t!r}] = {values[t]!r}: must be a finite number >= 0")
        out[t] = v
    return out


@dataclass(frozen=True)
class Accelerator:
    """A DNN accelerator as Thales sees it: flip-flop shares, FIT rates, dataflow, array size.

    ``shares`` are the fractions of the flip-flops holding each type (they sum to 1);
    ``fit`` the raw FIT rate per flip-flop of each type (only their ratios matter);
    ``control_crash`` the fraction of control faults that crash the inference (accuracy 0);
    the rest are taken as masked (accuracy = SA).
    """

    name: str
    rows: int
    cols: int
    dataflow: str
    shares: Mapping[str, float]
    fit: Mapping[str, float] = field(default_factory=lambda: {t: 1.0 for t in TYPES})
    control_crash: float = 1.0
    description: str = ""

    def __post_init__(self) -> None:
        flow = _DATAFLOWS.get(str(self.dataflow).lower())
        if flow is None:
            raise ValueError(
                f"unknown dataflow {self.dataflow!r}; expected one of os (output-stationary), "
                "ws (weight-stationary), is (input-stationary)"
            )
        object.__setattr__(self, "dataflow", flow)
        for dim in ("rows", "cols"):
            value = getattr(self, dim)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{dim} = {value!r}: the array size must be an integer >= 1")
        shares = _check_type_map(self.shares, "shares")
        total = sum(shares.values())
        if abs(total - 1.0) > _SHARE_TOLERANCE:
            raise ValueError(
                f"flip-flop shares sum to {total:.6g}, not 1 (allowed within {_SHARE_TOLERANCE}): "
                + ", ".join(f"{t}={shares[t]:g}" for t in TYPES)
            )
        object.__setattr__(self, "shares", {t: shares[t] / total for t in TYPES})
        fit = _check_type_map(self.fit, "fit")
        if sum(shares[t] * fit[t] for t in TYPES) <= 0:
            raise ValueError("fit rates are zero on every type that has flip-flops: no fault can occur")
        object.__setattr__(self, "fit", fit)
        crash = check_number("control_crash", self.control_crash, 0, 1)
        object.__setattr__(self, "control_crash", crash)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def systolic(
        cls,
        rows: int = 32,
        cols: int = 32,
        dataflow: str = "os",
        shares: Mapping[str, float] | None = None,
        fit: Mapping[str, float] | None = None,
        control_crash: float = 1.0,
    ) -> "Accelerator":
        """A TPU-like systolic array; default shares are the paper's 32x32 output-stationary array."""
        default = {"input": 0.3056, "weight": 0.3056, "output": 0.2187, "control": 0.170}
        flow = _DATAFLOWS.get(str(dataflow).lower(), str(dataflow))
        return cls(
            name=f"systolic-{rows}x{cols}-{flow}",
            rows=rows,
            cols=cols,
            dataflow=dataflow,
            shares=dict(shares or default),
            fit=dict(fit or {t: 1.0 for t in TYPES}),
            control_crash=control_crash,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Accelerator":
        unknown = sorted(set(data) - set(_TOML_KEYS))
        if unknown:
            raise ValueError(f"unknown accelerator keys {unknown}; allowed: {', '.join(_TOML_KEYS)}")
        missing = [k for k in ("rows", "cols", "dataflow", "shares") if k not in data]
        if missing:
            raise ValueError(f"accelerator description lacks {missing}; required: rows, cols, dataflow, shares")
        return cls(
            name=str(data.get("name", "custom")),
            rows=data["rows"],
            cols=data["cols"],
            dataflow=data["dataflow"],
            shares=data["shares"],
            fit=data.get("fit", {t: 1.0 for t in TYPES}),
            control_crash=data.get("control_crash", 1.0),
            description=str(data.get("description", "")),
        )

    @classmethod
    def from_toml(cls, path: str | Path) -> "Accelerator":
        from headstrong.campaign.spec import read_toml

        path = Path(path)
        data = read_toml(path, "accelerator file")
        data.setdefault("name", path.stem)
        return cls.from_dict(data)

    @classmethod
    def preset(cls, name: str) -> "Accelerator":
        """A preset shipped with headstrong, by name (see ``presets()``)."""
        path = _PRESET_DIR / f"{name}.toml"
        if not path.is_file():
            raise ValueError(
                f"unknown accelerator preset {name!r}; expected one of {', '.join(presets())}, "
                "systolic-RxC-DF (DF one of os, ws, is) or a TOML file"
            )
        return cls.from_toml(path)

    @classmethod
    def load(cls, name_or_file: str | Path) -> "Accelerator":
        """A preset name, ``systolic-RxC-DF`` (any size, the paper's shares) or a TOML file."""
        text = str(name_or_file)
        match = re.fullmatch(r"systolic-(\d+)x(\d+)-(os|ws|is)", text)
        if match and not (_PRESET_DIR / f"{text}.toml").is_file():
            return cls.systolic(int(match[1]), int(match[2]), match[3])
        if text.endswith(".toml") or Path(text).is_file():
            if not Path(text).is_file():
                raise ValueError(f"accelerator file {text!r} does not exist; give a TOML file or one of {', '.join(presets())}")
            return cls.from_toml(text)
        return cls.preset(text)

    # -- what the model needs ----------------------------------------------------------------
    def type_probabilities(self) -> dict[str, float]:
        """TP: the chance a fault hits each type, share x FIT rate, normalised."""
        raw = {t: self.shares[t] * self.fit[t] for t in TYPES}
        total = sum(raw.values())
        return {t: raw[t] / total for t in TYPES}

    def utilisation(self, m: int, n: int, k: int) -> float:
        """Share of the array's PEs busy on a layer with M output channels, N output pixels, K reduction.

        Output-stationary: a PE holds one output (M on rows, N on columns);
        weight-stationary: a PE holds one weight (K on rows, M on columns);
        input-stationary: a PE holds one input (K on rows, N on columns).
        The layer is tiled onto the R x C array; UF = a*b / (ceil(a/R) R * ceil(b/C) C).
        """
        for label, value in (("M", m), ("N", n), ("K", k)):
            if value < 1:
                raise ValueError(f"layer dimension {label} = {value}: must be >= 1")
        a, b = {"os": (m, n), "ws": (k, m), "is": (k, n)}[self.dataflow]
        tiles = math.ceil(a / self.rows) * self.rows * math.ceil(b / self.cols) * self.cols
        return (a * b) / tiles

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "rows": self.rows, "cols": self.cols, "dataflow": self.dataflow,
            "shares": dict(self.shares), "fit": dict(self.fit), "control_crash": self.control_crash,
            "description": self.description,
        }


def presets() -> list[str]:
    """Names of the accelerator presets shipped in ``headstrong/ra/presets``."""
    return sorted(p.stem for p in _PRESET_DIR.glob("*.toml"))
