"""Starting or joining a Ray cluster and sizing the actors of a run.

``init_ray`` joins the cluster named by ``--ray_address`` (or ``RAY_ADDRESS``) and otherwise
starts a local one sized to the machine. ``plan_resources`` decides what each actor asks for:
on CPU-only clusters every actor gets an equal share of the CPUs (so env workers and the PRM
server always fit, even on 2 cores); when the cluster has GPUs and the PRM is a model, the PRM
server takes one GPU and all actors are gathered in one placement group (``PACK``), so a run's
actors are reserved together or not at all.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field

from vla_rl.distributed.backends import installed

logger = logging.getLogger("vla_rl.distributed")

INSTALL_HINT = "Ray is not installed: pip install '.[dist]' (or: bash scripts/setup.sh --extras dist)."


def require_ray():
    if not installed("ray"):
        raise ImportError(INSTALL_HINT)
    import ray

    return ray


def init_ray(address: str = "", num_cpus: int | None = None) -> str:
    """Join ``address`` (or ``$RAY_ADDRESS``) or start a local cluster; returns a description."""
    ray = require_ray()
    address = address or os.environ.get("RAY_ADDRESS", "")
    if ray.is_initialized():
        return "Ray already initialised in this process"
    if address:
        ray.init(address=address, log_to_driver=True)
        where = f"joined the Ray cluster at {address}"
    else:
        cpus = num_cpus or os.cpu_count() or 1
        # The driver keeps its own threads; workers inherit the env below so that each actor uses
        # one math thread instead of one per core.
        ray.init(
            num_cpus=cpus,
            include_dashboard=False,
            log_to_driver=True,
            runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}},
        )
        where = f"started a local Ray cluster with {cpus} CPUs"
    resources = ray.cluster_resources()
    return f"{where} ({resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs)"


@dataclass
class ResourcePlan:
    """What every actor of a run asks Ray for."""

    worker_options: list[dict]
    prm_options: dict
    bundles: list[dict] | None = None  # a placement group's bundles (GPU runs), else None
    notes: list[str] = field(default_factory=list)


def plan_resources(cpus: float, gpus: float, num_workers: int, prm_server: bool, prm_on_gpu: bool) -> ResourcePlan:
    """Per-actor resource requests for ``num_workers`` env workers and an optional PRM server.

    Every actor asks for at most one CPU and an equal share when there are fewer CPUs than
    actors. With GPUs in the cluster and a model PRM, the PRM server asks for one GPU and the
    actors are placed in one placement group (bundle ``i`` = env worker ``i``, the last = PRM)."""
    if num_workers < 1:
        raise ValueError(f"--num_env_workers must be >= 1, got {num_workers}.")
    actors = num_workers + int(prm_server)
    share = math.floor(min(1.0, cpus / actors) * 1000) / 1000 if cpus > 0 else 0.0  # the shares must fit
    workers = [{"num_cpus": share} for _ in range(num_workers)]
    prm = {"num_cpus": share}
    notes = []
    if share < 1.0:
        notes.append(f"{actors} actors share {cpus:g} CPUs ({share:g} each)")
    use_gpu = prm_server and prm_on_gpu and gpus >= 1
    if use_gpu:
        prm["num_gpus"] = 1
        notes.append("the PRM server holds one GPU")
    bundles = None
    if gpus >= 1:
        bundles = [{"CPU": w["num_cpus"]} for w in workers]
        if prm_server:
            bundles.append({"CPU": share, **({"GPU": 1} if use_gpu else {})})
    return ResourcePlan(workers, prm, bundles, notes)


def placement(plan: ResourcePlan, timeout_s: float = 120.0):
    """Reserve ``plan.bundles`` as one placement group and return per-actor scheduling options
    ``(worker_options, prm_options, group)``; without bundles, the plan's own options and no
    group. Remove the group (``ray.util.remove_placement_group``) when the run ends."""
    if plan.bundles is None:
        return plan.worker_options, plan.prm_options, None
    ray = require_ray()
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    group = placement_group(plan.bundles, strategy="PACK")
    ready, _ = ray.wait([group.ready()], timeout=timeout_s)
    if not ready:
        raise RuntimeError(
            f"Ray could not reserve {plan.bundles} within {timeout_s:g} s; the cluster has "
            f"{ray.available_resources()}. Use fewer --num_env_workers or a larger cluster."
        )

    def at(index: int, options: dict) -> dict:
        strategy = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=index)
        return {**options, "scheduling_strategy": strategy}

    workers = [at(i, o) for i, o in enumerate(plan.worker_options)]
    return workers, at(len(workers), plan.prm_options), group
