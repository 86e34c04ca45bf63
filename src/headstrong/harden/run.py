"""Harden a saved checkpoint and write what changed: the one function behind ``headstrong harden``."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from headstrong._lock import hold_folder
from headstrong.harden.cost import count_macs, count_params
from headstrong.harden.methods import HardenOptions, apply_methods, parse_methods
from headstrong.harden.range import bounds_table
from headstrong.metrics import paired_rate_change

__all__ = ["HardenSummary", "harden_checkpoint"]


@dataclass
class HardenSummary:
    """What ``harden_checkpoint`` did: methods, accuracy before and after, cost, bounds."""

    source: str
    checkpoint: Path
    methods: tuple[str, ...]
    options: dict[str, Any]
    dataset: str
    test_images: int
    top1_before: float  # percent
    top1_after: float
    top1_change_pp: tuple[float, float, float]  # after - before, and its 95% paired interval
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    bounds: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["checkpoint"] = str(self.checkpoint)
        data["steps"] = [{k: v for k, v in step.items() if k != "sites"} for step in self.steps]
        return data


def _tensors(dataset: Any) -> torch.Tensor:
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


@torch.no_grad()
def _correct(model: torch.nn.Module, dataset: Any, batch: int = 500) -> torch.Tensor:
    """Which test images the model classifies correctly (the same images before and after)."""
    model.eval()
    hits = []
    for start in range(0, len(dataset), batch):
        items = [dataset[i] for i in range(start, min(start + batch, len(dataset)))]
        x = torch.stack([item[0] for item in items])
        y = torch.as_tensor([int(item[1]) for item in items])
        hits.append(model(x).argmax(1) == y)
    return torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool)


def harden_checkpoint(
    path: str | Path,
    method: str,
    out: str | Path,
    options: Optional[HardenOptions] = None,
    *,
    dataset: Optional[str] = None,
    profile_images: int = 2000,
    test_images: int = 2000,
    ranking: Optional[str | Path] = None,
) -> HardenSummary:
    """Load ``path``, harden it by ``method`` (one name or a '+' combination), save the hardened
    checkpoint as ``out/model.pt`` with ``out/summary.json``; bounds are profiled on
    ``profile_images`` training images, accuracy measured on ``test_images`` test images of
    ``dataset`` (default: the one the checkpoint was trained on)."""
    from headstrong.train import load_checkpoint

    methods = parse_methods(method)
    if not methods:
        raise ValueError("harden needs a method: range, clip, duplicate, fault-aware or a '+' combination")
    for name, value in (("profile_images", profile_images), ("test_images", test_images)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    options = options or HardenOptions()
    model, config = load_checkpoint(path)
    config = dict(config or {})
    dataset = dataset or config.get("dataset")
    if not dataset:
        raise ValueError(f"checkpoint {path} does not say which data set it was trained on; give dataset=")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file; give a folder")
    with hold_folder(out, "harden"):  # two harden runs on one --out would mix their files
        return _harden_held(path, methods, out, options, model, config, dataset, profile_images, test_images, ranking)


def _harden_held(path: str | Path, methods: list[Any], out: Path, options: HardenOptions, model: torch.nn.Module,
                 config: dict[str, Any], dataset: str, profile_images: int, test_images: int,
                 ranking: Optional[str | Path]) -> HardenSummary:
    from headstrong.data import load_dataset
    from headstrong.train import save_checkpoint

    root, size = config.get("data_root"), config.get("image_size")
    result = None
    if ranking is not None:
        from headstrong.campaign import load_results

        result = load_results(ranking)
    test = load_dataset(dataset, "test", root, size, limit=test_images, seed=0)
    profile = _tensors(load_dataset(dataset, "train", root, size, limit=profile_images, seed=1))
    hardened = apply_methods(model, methods, options, profile_data=profile, train_data=dataset, ranking=result,
                             out=out / "fault_aware")
    sample = profile[:1]
    before, after = _correct(model, test), _correct(hardened, test)
    change = paired_rate_change(before.numpy(), after.numpy(), 0.95)
    summary = HardenSummary(
        source=str(path), checkpoint=out / "model.pt", methods=methods, options=dataclasses.asdict(options),
        dataset=dataset, test_images=len(test), top1_before=100.0 * float(before.float().mean()),
        top1_after=100.0 * float(after.float().mean()), top1_change_pp=tuple(100.0 * v for v in change),
        params_before=count_params(model), params_after=count_params(hardened),
        macs_before=count_macs(model, sample), macs_after=count_macs(hardened, sample),
        bounds=bounds_table(hardened), steps=list(getattr(hardened, "hardening", [])),
    )
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / "model.pt", hardened, config=config or None, hardened_from=str(path))
    (out / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2))
    return summary
