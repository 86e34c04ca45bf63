"""Where a campaign's faults are sampled: the whole campaign planned as deterministic work units.

Each layer's faults come from a generator seeded by (seed, layer[, bit]) alone, so they do not
depend on the other layers, on how many workers run, or on where a resumed run restarts. Each
fault meets ``images_per_fault`` evaluation images: pair p of a layer (fault p // N, its
(p mod N)-th image) is evaluated on evaluation image p mod n_eval; with N = 1, fault k meets image
k mod n_eval. A unit is a fixed range of one layer's pairs, whole faults only, stored as one chunk
file named after the unit; a plan grows by appending units (later sampling rounds).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import torch

from headstrong.campaign.spec import CampaignSpec


def stable_seed(*parts: Any) -> int:
    """A 63-bit seed from the parts' text: the same everywhere (Python's hash() is salted)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


STRATIFIED_STRIDE = 1 << 32  # fault ids of a stratified campaign's layer start at position x this


@dataclass(frozen=True)
class LayerPlan:
    """How many faults one layer gets, per bit stratum (all bits in one stratum unless per_bit).

    A stratified campaign's layer has no fixed strata; its ``rounds`` grow as the campaign runs:
    each round's faults per bit (``headstrong.faults.strata``), drawn from a seed of their own."""

    name: str
    position: int  # position among the model's injectable layers, in forward order
    elements: int  # neurons of one sample's output, or weights
    bits: tuple[int, ...]
    strata: tuple[tuple[tuple[int, ...], int], ...]  # (bits of the stratum, number of faults)
    fault_offset: int  # fault_id of this layer's first fault
    rounds: tuple[tuple[int, ...], ...] = ()  # stratified: faults per bit of each round so far

    @property
    def n_faults(self) -> int:
        return sum(n for _, n in self.strata) + sum(sum(r) for r in self.rounds)

    def with_round(self, counts: Sequence[int]) -> "LayerPlan":
        """This layer with one more stratified round (faults per bit)."""
        return dataclasses.replace(self, rounds=(*self.rounds, tuple(int(c) for c in counts)))


def plan_layers(
    spec: CampaignSpec,
    layers: Sequence[str],
    positions: dict[str, int],
    elements: dict[str, int],
    bits: Sequence[int],
    sample_size: Any,
) -> list[LayerPlan]:
    """Fault counts per layer: ``spec.n_faults`` or Leveugle over N = elements x bits; none yet for
    a stratified campaign (its rounds come as it runs)."""
    plans = []
    offset = 0
    for name in layers:
        count = int(elements[name])
        if spec.stratified:
            plans.append(LayerPlan(name, positions[name], count, tuple(bits), (), positions[name] * STRATIFIED_STRIDE))
            continue
        if spec.per_bit:
            strata = tuple(((b,), _count(spec, count, sample_size)) for b in bits)
        else:
            strata = ((tuple(bits), _count(spec, count * len(bits), sample_size)),)
        plan = LayerPlan(name, positions[name], count, tuple(bits), strata, offset)
        offset += plan.n_faults
        plans.append(plan)
    return plans


def _count(spec: CampaignSpec, population: int, sample_size: Any) -> int:
    if spec.n_faults is not None:
        return spec.n_faults
    return int(sample_size(population, spec.margin, spec.confidence))


@dataclass(frozen=True)
class Unit:
    """One chunk of work: pairs ``start..stop`` of one layer (whole faults), stored as one file."""

    id: str
    layer: str
    start: int
    stop: int

    @property
    def rows(self) -> int:
        """Records the unit stores: one per (fault, image) pair."""
        return self.stop - self.start

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "layer": self.layer, "start": self.start, "stop": self.stop}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Unit:
        missing = [k for k in ("id", "layer", "start", "stop") if k not in data]
        if missing:
            raise ValueError(f"a work unit lacks {', '.join(missing)}; units have id, layer, start and stop")
        return cls(str(data["id"]), str(data["layer"]), int(data["start"]), int(data["stop"]))


MAX_PAIRS_PER_UNIT = 1 << 20  # at most about a million records in one chunk


def make_units(plans: Iterable[LayerPlan], chunk_size: int, images_per_fault: int = 1) -> list[Unit]:
    """Fixed ranges of whole faults (at most ``chunk_size`` faults, and about a million pairs,
    each), as pair ranges; ids sort in campaign order."""
    return [unit for plan in plans for unit in layer_units(plan, 0, chunk_size, images_per_fault)]


def layer_units(plan: LayerPlan, first_fault: int, chunk_size: int, images_per_fault: int = 1) -> list[Unit]:
    """Units for a layer's faults from ``first_fault`` on (a stratified round appends these)."""
    per_unit = max(1, min(chunk_size, MAX_PAIRS_PER_UNIT // images_per_fault))
    units = []
    for first in range(first_fault, plan.n_faults, per_unit):
        last = min(first + per_unit, plan.n_faults)
        start, stop = first * images_per_fault, last * images_per_fault
        units.append(Unit(f"L{plan.position:03d}_{start:09d}", plan.name, start, stop))
    return units


@dataclass(frozen=True, eq=False)
class Plan:
    """Everything a worker needs besides the model to run any unit of the campaign.

    ``images``: the considered images (profiled once); ``eval_samples``: positions of the
    evaluation images among them; ``images_per_fault``: images each fault meets; ``units`` grow
    by appending (``with_units``)."""

    spec: CampaignSpec
    layers: tuple[LayerPlan, ...]
    images: Any  # torch.Tensor [N, ...]
    labels: Any  # torch.Tensor [N]
    eval_samples: Any  # torch.Tensor of positions into images
    images_per_fault: int
    batch_size: int
    units: tuple[Unit, ...] = field(default=())

    def layer(self, name: str) -> LayerPlan:
        for plan in self.layers:
            if plan.name == name:
                return plan
        raise ValueError(f"unit names layer {name!r}, which this campaign does not plan")

    @property
    def n_pairs(self) -> int:
        return sum(unit.rows for unit in self.units)

    def with_units(self, more: Sequence[Unit]) -> Plan:
        """The plan with ``more`` units appended (ids must be new)."""
        have = {unit.id for unit in self.units}
        clash = [unit.id for unit in more if unit.id in have]
        if clash:
            raise ValueError(f"unit id {clash[0]!r} is already planned; appended units need new ids")
        return Plan(self.spec, self.layers, self.images, self.labels, self.eval_samples, self.images_per_fault,
                    self.batch_size, (*self.units, *more))


def layer_faults(spec: CampaignSpec, plan: LayerPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """All of one layer's faults as (flat index, bit) int64 tensors, each stratum from its own seed."""
    from headstrong.faults import sample_neuron_faults, sample_weight_faults

    sampler = sample_neuron_faults if spec.kind == "neuron" else sample_weight_faults
    indices, bits = [], []
    for stratum_bits, n in plan.strata:
        generator = torch.Generator().manual_seed(stable_seed(spec.seed, spec.kind, plan.name, *stratum_bits))
        faults = sampler((plan.elements,), n, list(stratum_bits), generator=generator, layer=plan.name)
        indices.append(faults.index)
        bits.append(faults.bit)
    if plan.rounds:
        from headstrong.faults.strata import Strata, draw_round

        strata = Strata(plan.name, plan.elements, plan.bits)
        for number, counts in enumerate(plan.rounds):
            generator = torch.Generator().manual_seed(stable_seed(spec.seed, spec.kind, plan.name, "round", number))
            index, bit = draw_round(strata, counts, generator)
            indices.append(index)
            bits.append(bit)
    if not indices:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    return torch.cat(indices), torch.cat(bits)


def collect_images(data: Any, max_images: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``max_images`` (image, label) pairs of a Dataset, a DataLoader or a tensor pair."""
    limit = max_images if max_images is not None else None
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"images and labels differ in length: {x.shape[0]} vs {y.shape[0]}")
        x, y = x[:limit], y[:limit]
    elif isinstance(data, torch.utils.data.DataLoader):
        xs, ys, seen = [], [], 0
        for batch in data:
            bx, by = batch[0], batch[1]
            xs.append(bx)
            ys.append(torch.as_tensor(by))
            seen += bx.shape[0]
            if limit is not None and seen >= limit:
                break
        if not xs:
            raise ValueError("the data loader yielded no batches")
        x, y = torch.cat(xs)[:limit], torch.cat(ys)[:limit]
    elif isinstance(data, torch.utils.data.Dataset):
        n = len(data)  # type: ignore[arg-type]
        n = n if limit is None else min(n, limit)
        if n == 0:
            raise ValueError("the data set is empty")
        items = [data[i] for i in range(n)]
        x = torch.stack([torch.as_tensor(item[0]) for item in items])
        y = torch.as_tensor([int(item[1]) for item in items])
    else:
        raise ValueError(
            f"data must be a torch Dataset, a DataLoader or a pair of tensors (images, labels); got {type(data).__name__}"
        )
    if x.shape[0] == 0:
        raise ValueError("no images to evaluate: the data is empty")
    from headstrong.engine.layers import check_input

    check_input(x, "images")  # uint8 images are refused, as hs.inject refuses them: scale them first
    return x.float().contiguous(), y.long().contiguous()


def tensor_fingerprint(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def model_fingerprint(model: torch.nn.Module) -> str:
    """Architecture (class and module tree) and every state tensor's bytes."""
    digest = hashlib.sha256()
    digest.update(f"{type(model).__module__}.{type(model).__qualname__}\n{model}".encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor_fingerprint(tensor).encode())
    return digest.hexdigest()
