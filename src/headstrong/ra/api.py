"""``estimate``: RA of a model on an accelerator, with the engine measuring A(j) for each site.

The engine targets module outputs (neuron faults) and weights. An input-activation fault of
layer L (one element of L's input flipped for one inference) is a neuron fault on an identity
"tap" placed right before L in a private copy of the model: the tap's output is exactly L's
input, whatever produced it (the image for the first layer, a ReLU, a pooling, a functional op),
so no layer is left out. Output faults are neuron faults on L; weight faults, weight faults on L.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable, Optional

import numpy as np
import torch
from torch import nn

from headstrong.ra.accelerator import Accelerator
from headstrong.ra.estimators import ProgressFn, RAEstimate, get, is_positive_int
from headstrong.ra.sites import SiteSpace


class _Tapped(nn.Module):
    """Runs ``op`` on the output of an identity ``tap``: a place for input faults to land."""

    def __init__(self, op: nn.Module) -> None:
        super().__init__()
        self.tap = nn.Identity()
        self.op = op

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.op(self.tap(x), *args, **kwargs)


def tap_model(model: nn.Module, layers: Iterable[str]) -> nn.Module:
    """A copy of ``model`` with each named layer L wrapped: L's input at ``L.tap``, L at ``L.op``."""
    tapped = copy.deepcopy(model)
    for name in layers:
        parent_name, _, child = name.rpartition(".")
        parent = tapped.get_submodule(parent_name) if parent_name else tapped
        setattr(parent, child, _Tapped(getattr(parent, child)))
    return tapped.eval()


def gather(data: Any, max_images: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The evaluation set as tensors (x, y): from (x, y), a Dataset of (image, label) or batches."""
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images = {max_images}: must be >= 1, or None for the whole set")
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
    elif hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(data, torch.Tensor):
        n = len(data) if max_images is None else min(len(data), max_images)
        items = [data[i] for i in range(n)]
        x = torch.stack([torch.as_tensor(i[0]) for i in items])
        y = torch.as_tensor([int(i[1]) for i in items])
    elif isinstance(data, Iterable):
        xs, ys = [], []
        for xb, yb in data:
            xs.append(xb)
            ys.append(torch.as_tensor(yb))
            if max_images is not None and sum(len(b) for b in xs) >= max_images:
                break
        if not xs:
            raise ValueError("the data gave no batches: RA needs a non-empty evaluation set")
        x, y = torch.cat(xs), torch.cat(ys)
    else:
        raise TypeError(f"data must be (x, y) tensors, a Dataset of (image, label) or (x, y) batches; got {type(data).__name__}")
    if max_images is not None:
        x, y = x[:max_images], y[:max_images]
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"evaluation set has {len(x)} images and {len(y)} labels: need the same, at least 1")
    return x.float(), y.long()


class EngineOracle:
    """A(j) for site ids from the engine: one fault, every image of the fixed set, the accuracy.

    The engine's golden run holds activations in the format for neuron faults and weights for
    weight faults; A(j) is read as SA minus the accuracy the flip cost against the golden run
    of its own kind, so the format's rounding is never counted as harm (DESIGN.md, fault model).
    Results are cached per site, so estimators sharing an oracle never pay twice for a site.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, space: SiteSpace,
                 fmt: str = "fp16", range_detector: bool = False, device: str = "cpu", pairs: int = 8192,
                 chunk_size: Optional[int] = None):
        from headstrong.engine import FaultEvaluator

        self.space, self.x, self.y = space, x.to(device), y.to(device)
        self.fmt, self.range_detector, self.pairs = fmt, range_detector, int(pairs)
        self.model = tap_model(model, list(space.shapes))
        kinds = {"input": ("neuron", "tap"), "output": ("neuron", "op"), "weight": ("weight", "op")}
        self._kind = [kinds[t][0] for t in space.type]
        self._module = [f"{layer}.{kinds[t][1]}" for layer, t in zip(space.layer, space.type)]
        taps = [m for m in self._module if m.endswith(".tap")]
        self.evaluator = FaultEvaluator(self.model, fmt=fmt, range_detector=range_detector, device=device,
                                        layers=taps, chunk_size=chunk_size)
        self.evaluator.profile([self.x])
        if chunk_size is None:
            self.evaluator.chunk_size = auto_chunk_size(self.evaluator.layer_info["output_shape"], self.x.device)
        self.n_images = len(self.x)
        self._golden: dict[int, dict[str, float]] = {}
        self.sa = self.sa_on(self.n_images)
        self._cache: dict[int, dict[int, float]] = {}  # images -> site -> accuracy

    @property
    def golden(self) -> dict[str, float]:
        """Fault-free accuracy over the whole set, per golden run (neuron, weight)."""
        return self._golden_on(self.n_images)

    def _golden_on(self, images: int) -> dict[str, float]:
        if images not in self._golden:
            x, y = self.x[:images], self.y[:images]
            self._golden[images] = {
                kind: float((self.evaluator.golden(x, y, kind=kind).golden_pred == y.cpu()).float().mean())
                for kind in ("neuron", "weight")
            }
        return self._golden[images]

    def sa_on(self, images: int) -> float:
        """SA over the first ``images`` images of the set."""
        return self._golden_on(min(int(images), self.n_images))["neuron"]

    @property
    def evaluated(self) -> int:
        """Distinct sites measured, on any number of images."""
        return len(set().union(*self._cache.values()))

    def accuracy(self, ids: np.ndarray, progress: Optional[ProgressFn] = None,
                 images: Optional[int] = None) -> np.ndarray:
        """A(j) over the set's first ``images`` images (all when None), each site measured once."""
        m = self.n_images if images is None else min(int(images), self.n_images)
        if m < 1:
            raise ValueError(f"images = {images}: must be >= 1")
        ids = np.asarray(ids, dtype=np.int64)
        cache = self._cache.setdefault(m, {})
        todo = np.setdiff1d(ids, np.fromiter(cache, dtype=np.int64, count=len(cache)))
        total, done = len(todo), 0
        if progress is not None:
            progress(0, total)
        group = self.space.decode(todo)[0]
        per_call = max(1, self.pairs // m)
        for g in np.unique(group):
            sites = todo[group == g]
            for start in range(0, len(sites), per_call):
                part = sites[start:start + per_call]
                for site, acc in zip(part.tolist(), self._measure(int(g), part, m).tolist()):
                    cache[site] = acc
                done += len(part)
                if progress is not None:
                    progress(done, total)
        return np.array([cache[int(i)] for i in ids], dtype=np.float64)

    def _measure(self, group: int, ids: np.ndarray, images: int) -> np.ndarray:
        from headstrong.faults import FaultSet

        _, element, bit = self.space.decode(ids)
        kind = self._kind[group]
        faults = FaultSet(kind, self._module[group], torch.as_tensor(element), torch.as_tensor(bit))
        x, y = self.x[:images], self.y[:images]
        out = self.evaluator.evaluate_all_pairs(x, y, faults)
        acc = (out.faulty_pred == y.cpu()).float().mean(1).double().numpy()
        golden = self._golden_on(images)
        return golden["neuron"] - (golden[kind] - acc)


def auto_chunk_size(output_shapes: Iterable[tuple[int, ...]], device: torch.device | str) -> int:
    """(fault, image) pairs per replay: on the CPU, enough that the largest activation of a
    replay fills about 16 MB, so it stays in cache (2x faster than 2,048 pairs on a ResNet-8 at
    28x28; the tiny validation CNN wants more); on a GPU, large batches.
    """
    if torch.device(device).type != "cpu":
        return 4096
    largest = max((int(np.prod(shape)) for shape in output_shapes), default=1) * 4  # float32 bytes per image
    return int(np.clip((16 << 20) // max(largest, 1), 64, 4096))


def estimate(
    model: nn.Module,
    data: Any,
    accelerator: Accelerator | str = "systolic-32x32-os",
    fmt: str = "fp16",
    estimator: str = "is-b",
    samples: int = 1000,
    seed: int = 0,
    *,
    max_images: Optional[int] = None,
    range_detector: bool = False,
    pilot: Optional[int] = None,
    pilot_images: Optional[int] = 25,
    progress: Optional[ProgressFn] = None,
    oracle: Optional[EngineOracle] = None,
    device: str = "cpu",
) -> RAEstimate:
    """RA of ``model`` given one transient fault in ``accelerator``, by ``estimator``.

    ``data`` is the fixed evaluation set ((x, y) tensors, a Dataset or batches; the first
    ``max_images``). The range detector is off by default: the accelerator modelled has none.
    Pass ``oracle`` (from ``make_oracle``) to share measured sites between several estimators.
    ``pilot`` and ``pilot_images`` size is-b's pilot campaign (16 faults per bit on 25 images).
    """
    params = {"pilot": pilot, "pilot_images": pilot_images} if estimator == "is-b" else {}
    chosen = get(estimator, **params)  # unknown names fail before any engine work
    if estimator != "exact" and not is_positive_int(samples):
        raise ValueError(f"samples = {samples!r}: must be an integer >= 1")
    if oracle is None:
        oracle = make_oracle(model, data, accelerator, fmt, max_images=max_images,
                             range_detector=range_detector, device=device)
    return chosen.estimate(oracle, samples=samples, seed=seed, progress=progress)


def make_oracle(model: nn.Module, data: Any, accelerator: Accelerator | str = "systolic-32x32-os",
                fmt: str = "fp16", *, max_images: Optional[int] = None, range_detector: bool = False,
                device: str = "cpu") -> EngineOracle:
    """The engine-backed accuracy oracle for one model, evaluation set, accelerator and format."""
    from headstrong import formats

    acc = accelerator if isinstance(accelerator, Accelerator) else Accelerator.load(accelerator)
    x, y = gather(data, max_images)
    space = SiteSpace(model, acc, tuple(x.shape[1:]), formats.get(fmt).bits)
    return EngineOracle(model, x, y, space, fmt=fmt, range_detector=range_detector, device=device)
