"""What a fault-injection campaign does, as a frozen value that round-trips through TOML.

The spec is saved beside the results (in the manifest), so a rerun on the same ``out`` can tell
whether it continues the same campaign or would mix two different ones.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import tomli_w

KINDS = ("neuron", "weight")
# spec option: (the fault model it belongs to, an example value)
FAULT_OPTIONS = {"ber": ("ber", "1e-7"), "k": ("multi-bit", "2"), "sites": ("multi-site", "4")}
BIT_FIELDS = ("sign", "exponent", "mantissa")
SAMPLINGS = ("stratified", "uniform")

@dataclass(frozen=True)
class CampaignSpec:
    """One campaign: which faults, how many, on which images.

    ``layers``: "all", a glob ("layer1.*"), one layer name, or a list of names.
    ``bits``: None (every bit of the format), a list of bit positions, or one of
    "sign" / "exponent" / "mantissa". ``n_faults``: a fixed number of faults per layer (per layer
    and bit with ``per_bit``); when None the Leveugle sample size is computed from ``margin`` and
    ``confidence`` over each layer's N = elements x bits (over N = elements for each bit, with
    ``per_bit``). ``max_images``: only the first images of the data are considered;
    ``only_correct``: faults land only on those the golden (format-quantised) model gets right.
    ``images_per_fault``: evaluation images each fault meets (a record per pair), a positive int
    or "all"; None: "all" for permanent faults (weights, stuck-at: PyTorchFI and GoldenEye apply a
    weight fault to a whole batch), 1 for transient ones (activation upsets). Leveugle sizing
    counts faults, not pairs.
    ``sampling``: "stratified" draws by (layer, bit) strata, a pilot then Neyman rounds, until each
    layer's 99% interval for ``target`` ("mismatch": ``margin`` absolute on the rate;
    "delta_loss": ``margin`` relative to the mean) is that narrow or ``max_faults`` (per layer,
    default 102,400) is spent; "uniform" draws uniformly over (element, bit), ``n_faults`` or the
    Leveugle size. None: stratified for a campaign sized by margin (no ``n_faults``, no
    ``per_bit``) whose fault model plans one (element, bit) site per fault, uniform otherwise.
    """

    kind: str = "neuron"
    layers: str | tuple[str, ...] = "all"
    fmt: str = "fp32"
    bits: str | tuple[int, ...] | None = None
    range_detector: bool = True
    n_faults: int | None = None
    margin: float = 0.01
    confidence: float = 0.99
    per_bit: bool = False
    seed: int = 0
    only_correct: bool = True
    max_images: int | None = None
    fault_model: str = "flip"  # headstrong.faults.models: flip, stuck-at-0/1, multi-bit, multi-site, ber, metadata
    ber: float | None = None  # the bit-error rate p of "ber"
    k: int | None = None  # bits per fault of "multi-bit"
    sites: int | None = None  # faults per inference of "multi-site"
    images_per_fault: int | str | None = None  # evaluation images per fault: N, "all", None (by permanence)
    sampling: str | None = None  # "stratified" | "uniform"; None: stratified when sized by margin
    target: str = "mismatch"  # what a stratified campaign's margin is on: "mismatch" or "delta_loss"
    max_faults: int | None = None  # a stratified campaign's budget per layer (None: 102,400)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        layers = self.layers
        if isinstance(layers, (list, tuple)):
            if not layers or not all(isinstance(n, str) and n for n in layers):
                raise ValueError(
                    f"layers must be 'all', a glob, a layer name or a non-empty list of names; got {layers!r}"
                )
            object.__setattr__(self, "layers", tuple(layers))
        elif not isinstance(layers, str) or not layers:
            raise ValueError(f"layers must be 'all', a glob, a layer name or a list of names; got {layers!r}")
        if not isinstance(self.fmt, str) or not self.fmt:
            raise ValueError(f"fmt must be a format name such as 'fp32' or 'int8'; got {self.fmt!r}")
        object.__setattr__(self, "bits", _normalise_bits(self.bits))
        if self.n_faults is not None and (
            isinstance(self.n_faults, bool) or not isinstance(self.n_faults, int) or self.n_faults < 1
        ):
            raise ValueError(f"n_faults must be a positive integer or None (Leveugle sizing); got {self.n_faults!r}")
        for name in ("margin", "confidence"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be a number in the open interval (0, 1); got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer; got {self.seed!r}")
        if self.max_images is not None and (
            isinstance(self.max_images, bool) or not isinstance(self.max_images, int) or self.max_images < 1
        ):
            raise ValueError(f"max_images must be a positive integer or None (all images); got {self.max_images!r}")
        for name in ("range_detector", "per_bit", "only_correct"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false; got {getattr(self, name)!r}")
        n = self.images_per_fault
        if n is not None and n != "all" and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"images_per_fault must be a positive integer, 'all' or None (by the fault's "
                             f"permanence); got {n!r}")
        self.fault_model_object()  # unknown names, bad parameters, a model that does not fit fmt
        self._check_sampling()

    def _check_sampling(self) -> None:
        from headstrong.faults.strata import TARGETS

        if self.sampling is not None and self.sampling not in SAMPLINGS:
            raise ValueError(f"unknown sampling {self.sampling!r}; expected one of {', '.join(SAMPLINGS)} "
                             "(or leave it out: stratified for a campaign sized by margin)")
        if self.target not in TARGETS:
            raise ValueError(f"unknown target {self.target!r}; expected one of {', '.join(TARGETS)}")
        if self.max_faults is not None and (
            isinstance(self.max_faults, bool) or not isinstance(self.max_faults, int) or self.max_faults < 1
        ):
            raise ValueError(f"max_faults must be a positive integer or None (102,400 per layer); got {self.max_faults!r}")
        if self.sampling != "stratified":
            if self.max_faults is not None and not self.stratified:
                raise ValueError("max_faults is the budget of a stratified campaign; this one samples uniformly "
                                 "(n_faults or Leveugle sizing): leave max_faults out or set sampling='stratified'")
            return
        if self.n_faults is not None:
            raise ValueError("sampling='stratified' sizes each layer by margin and stops there; leave n_faults out "
                             "(max_faults caps what a layer may spend) or use sampling='uniform'")
        if self.per_bit:
            raise ValueError("per_bit sizes a uniform sample per bit; stratified sampling already allocates faults "
                             "by bit: leave per_bit out or use sampling='uniform'")
        if not self.fault_model_object().single_site:
            raise ValueError(f"stratified sampling draws each fault's (element, bit) site by stratum, so it needs a "
                             f"single-site fault model (e.g. flip, stuck-at-0/1, multi-bit); {self.fault_model!r} puts "
                             "a fault on several sites: use sampling='uniform'")

    @property
    def stratified(self) -> bool:
        """Whether faults are drawn by (layer, bit) strata (see ``sampling``)."""
        if self.sampling is not None:
            return self.sampling == "stratified"
        return self.n_faults is None and not self.per_bit and bool(self.fault_model_object().single_site)

    def stopping_rule(self) -> Any:
        """When a stratified campaign's layer is done (``headstrong.faults.strata.StoppingRule``)."""
        from headstrong.faults.strata import DEFAULT_MAX_FAULTS, StoppingRule

        return StoppingRule(target=self.target, margin=self.margin, confidence=self.confidence,
                            max_faults=self.max_faults or DEFAULT_MAX_FAULTS)

    def images_per_fault_for(self, n_eval: int) -> int:
        """Evaluation images each fault meets, out of ``n_eval``: the field, or by default all of
        them for a permanent fault (its fault model says) and one for a transient one."""
        n = self.images_per_fault
        if n is None:
            n = "all" if self.fault_model_object().permanent(self.kind) else 1
        if n == "all":
            return n_eval
        if n > n_eval:
            raise ValueError(f"images_per_fault={n} but the campaign has only {n_eval} evaluation images; "
                             f"give at most {n_eval} or 'all'")
        return int(n)

    def fault_model_object(self) -> Any:
        """The campaign's fault model (``headstrong.faults.models``), checked against ``fmt``."""
        from headstrong import formats
        from headstrong.faults.models import get_fault_model

        if not isinstance(self.fault_model, str) or not self.fault_model:
            raise ValueError(f"fault_model must be a fault model name such as 'stuck-at-1'; got {self.fault_model!r}")
        name = self.fault_model.strip().lower()
        given = {option: getattr(self, option) for option in FAULT_OPTIONS if getattr(self, option) is not None}
        for option in given:
            if FAULT_OPTIONS[option][0] != name:
                raise ValueError(
                    f"{option} is only for fault model {FAULT_OPTIONS[option][0]!r}; fault model {self.fault_model!r} "
                    f"takes {', '.join(o for o, (m, _) in FAULT_OPTIONS.items() if m == name) or 'no options'}"
                )
        needed = [option for option, (model, _) in FAULT_OPTIONS.items() if model == name and option not in given]
        if needed:
            raise ValueError(f"fault model {name!r} needs {needed[0]} (e.g. {needed[0]}={FAULT_OPTIONS[needed[0]][1]})")
        params = {"p": self.ber, "k": self.k, "n": self.sites}
        model = get_fault_model(name, **{k: v for k, v in params.items() if v is not None})
        try:
            fmt = formats.get(self.fmt)
        except ValueError:
            return model  # an unknown format name is reported, with the choices, when the campaign runs
        model.check(fmt)
        return model

    # --- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain values only; None fields are left out (TOML has no null)."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None or (field.name == "fault_model" and value == "flip"):
                continue  # a flip campaign's manifest reads as it did before fault models
            if field.name == "target" and not self.stratified:
                continue  # a uniform campaign has no target: its manifest reads as before
            out[field.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CampaignSpec":
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise ValueError(f"unknown campaign option(s) {', '.join(unknown)}; expected some of {', '.join(allowed)}")
        values = dict(data)
        for key in ("layers", "bits"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        return cls(**values)

    def to_toml(self, path: str | Path) -> None:
        Path(path).write_text(tomli_w.dumps(self.to_dict()))

    @classmethod
    def from_toml(cls, path: str | Path) -> "CampaignSpec":
        return cls.from_dict(read_toml(path, "campaign spec file"))

    def replace(self, **changes: Any) -> "CampaignSpec":
        return dataclasses.replace(self, **changes)


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """A TOML file as a dict; a missing file or bad TOML is a ValueError naming ``what`` and the path."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} {str(path)!r} does not exist or is not a file")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{what} {str(path)!r} is not valid TOML: {error}") from None


def _normalise_bits(bits: Any) -> str | tuple[int, ...] | None:
    if bits is None or bits == "all":
        return None
    if isinstance(bits, str):
        if bits not in BIT_FIELDS:
            raise ValueError(f"unknown bit field {bits!r}; expected 'all', {', '.join(BIT_FIELDS)} or a list of bit positions")
        return bits
    if isinstance(bits, int) and not isinstance(bits, bool):
        bits = (bits,)
    if isinstance(bits, (list, tuple)) and bits and all(isinstance(b, int) and not isinstance(b, bool) for b in bits):
        if any(b < 0 for b in bits):
            raise ValueError(f"bit positions must be non-negative; got {list(bits)}")
        return tuple(sorted(set(bits)))
    raise ValueError(f"bits must be 'all', {', '.join(BIT_FIELDS)} or a non-empty list of bit positions; got {bits!r}")


def resolve_bits(spec: CampaignSpec, fmt: Any) -> list[int]:
    """The bit positions the spec means under a number format (bit 0 = least significant), as
    its fault model reads them (metadata faults: positions in the metadata; multi-bit: a burst's
    lowest bit)."""
    return spec.fault_model_object().planned_bits(fmt, spec.bits)


def select_layers(spec: CampaignSpec, available: Sequence[str]) -> list[str]:
    """The injectable layers the spec names, in the model's forward order."""
    available = list(available)
    layers = spec.layers
    if layers == "all":
        chosen = available
    elif isinstance(layers, str) and any(c in layers for c in "*?["):
        chosen = [name for name in available if fnmatch.fnmatchcase(name, layers)]
    else:
        wanted = [layers] if isinstance(layers, str) else list(layers)
        unknown = [name for name in wanted if name not in available]
        if unknown:
            from headstrong._suggest import unknown_layers_message

            raise ValueError(unknown_layers_message(unknown, available))
        chosen = [name for name in available if name in wanted]
    if not chosen:
        raise ValueError(
            f"the layer selection {layers!r} matches no injectable layer; injectable layers are {_short_list(available)}"
        )
    return chosen


def _short_list(names: Sequence[str], limit: int = 30) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return f"{len(names)} of them, listed by `headstrong layers MODEL`"
