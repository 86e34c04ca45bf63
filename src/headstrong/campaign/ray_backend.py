"""Ray backend: the pending work units, dealt over Ray workers, each writing its own chunks.

The model and the plan (spec, layers, images, units) go into the object store once. Each worker profiles
its own evaluator over the same images, which gives the same profile as the local run, and takes
the next pending unit whenever it is free. The unit ids fix the file names, so the union of the chunks is the same
records whichever backend wrote them. Workers write under ``out`` directly: on a cluster of
several machines ``out`` must be on a file system they all share.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

RAY_ADDRESS_ENV = "RAY_ADDRESS"


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ValueError("backend 'ray' needs Ray: pip install 'headstrong[ray]'") from None
    return ray


def connect(address: str | None = None, num_cpus: int | None = None) -> Any:
    """Join the cluster at ``address`` (or $RAY_ADDRESS), or start a local instance; reuse a live one."""
    ray = _import_ray()
    if not ray.is_initialized():
        address = address or os.environ.get(RAY_ADDRESS_ENV) or None
        if address:
            try:
                ray.init(address=address, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as error:
                raise ValueError(
                    f"cannot join the Ray cluster at {address!r} ({error}); start one with 'ray start --head', "
                    f"pass --ray-address auto on its machines, or leave the address (and ${RAY_ADDRESS_ENV}) unset "
                    "for a local instance"
                ) from None
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    return ray


class _Worker:
    """One evaluator per worker slot, profiled once, running the units it is handed."""

    def __init__(self, model: torch.nn.Module, plan: Any, out: Path, device: str, threads: int) -> None:
        from headstrong.campaign.runner import make_evaluator

        torch.set_num_threads(threads)
        self.plan = plan
        self.out = out
        self.evaluator = make_evaluator(model, plan.spec, plan.images, plan.labels, device, plan.batch_size)

    def run(self, unit: Any) -> int:
        from headstrong.campaign.runner import run_units

        run_units(self.evaluator, self.plan, self.out, [unit])
        return int(unit.rows)

    def set_plan(self, plan: Any) -> None:
        """A stratified campaign's next round: the same campaign, more units (no new profile)."""
        self.plan = plan


def run_units_on_ray(
    model: torch.nn.Module,
    plan: Any,
    out: Path,
    units: Sequence[Any],
    device: str | torch.device,
    advance: Callable[[int], None],
    *,
    address: str | None = None,
    num_workers: int | None = None,
) -> None:
    """Run ``units`` on one Ray actor per GPU (device cuda) or CPU slot.

    Units go, in campaign order, to whichever actor is free: faults in early layers cost more
    (more of the network runs again), so fixed shards would leave workers idle.
    """
    pool = RayPool(model, plan, out, device, address=address, num_workers=num_workers, most=len(units))
    try:
        pool.run(plan, units, advance)
    finally:
        pool.close()


class RayPool:
    """Ray actors, each profiled once, kept for a whole campaign: a stratified campaign hands them
    each round's plan instead of starting (and profiling) new workers every round."""

    def __init__(self, model: torch.nn.Module, plan: Any, out: Path, device: str | torch.device, *,
                 address: str | None = None, num_workers: int | None = None, most: int | None = None) -> None:
        self.ray = ray = connect(address)
        on_gpu = str(device).startswith("cuda")
        resources = ray.cluster_resources()
        slots = int(resources.get("GPU" if on_gpu else "CPU", 0))
        if num_workers is None:
            num_workers = max(1, slots)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
            raise ValueError(f"num_workers must be a positive integer or None (one per slot); got {num_workers!r}")
        options = {"num_gpus": 1, "num_cpus": 1} if on_gpu else {"num_cpus": 1}
        actor_class = ray.remote(**options)(_Worker)
        on_cpu = all(t.device.type == "cpu" for t in model.state_dict().values())
        model_ref = ray.put(model if on_cpu else copy.deepcopy(model).cpu())
        plan_ref = ray.put(plan)
        count = num_workers if most is None else max(1, min(num_workers, most))
        self.plan = plan
        self.actors = [actor_class.remote(model_ref, plan_ref, out, "cuda" if on_gpu else "cpu", 1)
                       for _ in range(count)]

    def run(self, plan: Any, units: Sequence[Any], advance: Callable[[int], None]) -> None:
        """Run ``units`` of ``plan`` (this campaign's plan, perhaps grown by a round)."""
        from ray.util import ActorPool

        if plan is not self.plan:
            plan_ref = self.ray.put(plan)
            self.ray.get([actor.set_plan.remote(plan_ref) for actor in self.actors])
            self.plan = plan
        for done in ActorPool(self.actors).map_unordered(lambda actor, unit: actor.run.remote(unit), list(units)):
            advance(done)

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
