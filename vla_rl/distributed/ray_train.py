"""FSDP ranks launched as Ray Train workers: ``python -m vla_rl.train --fsdp_ranks N``.

The process that parses the flags becomes a Ray Train driver: it joins ``--ray_address`` (or
starts a local cluster), and a ``TorchTrainer`` starts ``N`` workers that Ray Train joins into
one torch process group (gloo on CPU, NCCL with one GPU per worker when the cluster has enough
GPUs). Each worker runs :func:`vla_rl.trainer.train` exactly as a ``torchrun`` rank does, so
sharding, checkpoints, resume and the final evaluation on rank 0 are the same code. The workers
are already connected to the cluster, so ``--use_ray`` env workers and the shared PRM server of
the run live in the same cluster.
"""

from __future__ import annotations

import json
import os

from vla_rl.config import TrainConfig
from vla_rl.distributed.backends import LAUNCHER_ENV
from vla_rl.distributed.ray_setup import init_ray, require_ray


def _rank_main(loop_config: dict) -> None:
    """One rank: the driver's config, with the backends resolved again in this process group."""
    os.chdir(loop_config["cwd"])  # relative paths of the flags mean what they meant to the driver
    os.environ[LAUNCHER_ENV] = "Ray Train"
    config: TrainConfig = loop_config["config"]
    config.scale.fsdp_ranks = 0  # this process is a rank now, not a launcher
    config.scale.validate()
    from vla_rl.trainer import train

    train(config)


def launch_ranks(config: TrainConfig) -> dict:
    """Train with ``config.scale.fsdp_ranks`` FSDP ranks on Ray; returns rank 0's summary."""
    require_ray()
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    ranks = config.scale.fsdp_ranks
    where = init_ray(config.scale.ray_address)
    resources = ray.available_resources()
    use_gpu = resources.get("GPU", 0) >= ranks
    cpus = min(1.0, resources.get("CPU", 0) / ranks)
    print(
        f"{where}; launching {ranks} FSDP ranks as Ray Train workers ({'1 GPU' if use_gpu else f'{cpus:g} CPU'} each)",
        flush=True,
    )
    trainer = TorchTrainer(
        _rank_main,
        train_loop_config={"config": config, "cwd": os.getcwd()},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=ranks, use_gpu=use_gpu, resources_per_worker={"CPU": cpus}),
        run_config=RunConfig(name="ray_train", storage_path=os.path.abspath(config.run_dir)),
    )
    trainer.fit()
    with open(os.path.join(config.run_dir, "summary.json")) as f:
        return json.load(f)
