"""The training env of a run, in-process or on Ray, with the PRM where the backends put it.

:func:`training_env` returns the vector env the rollout steps (a ``SyncVectorEnv`` wrapped with
the PRM, or a :class:`~vla_rl.distributed.env_workers.RayVectorEnv` whose workers hold the PRM
wrapper and share one PRM server actor), the PRM the final evaluation scores its videos with,
and the counters the trainer logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from vla_rl.config import TrainConfig
from vla_rl.distributed.prm_server import PRMSpec


def prm_spec(config: TrainConfig) -> PRMSpec | None:
    """The PRM of the config as a buildable spec (``None`` when ``--process_reward_model False``)."""
    if not config.prm.process_reward_model:
        return None
    return PRMSpec(
        config.prm.resolved_model(),
        adapter_path=config.prm.prm_checkpoint_path or None,
        device=config.policy.device,
        batch_size=max(32, config.env.num_envs),
        seed=config.run.seed,
    )


def build_prm(config: TrainConfig, backend: str = "hf"):
    """The PRM of the config in this process (``None`` when off); ``backend="vllm"`` serves a
    Qwen2-VL PRM with vLLM."""
    spec = prm_spec(config)
    if spec is None:
        return None
    if backend == "vllm" and spec.is_model:
        from reward.vllm_prm import VLLMProcessRM

        return VLLMProcessRM(
            spec.name,
            adapter_path=spec.adapter_path,
            gpu_memory_utilization=config.scale.vllm_gpu_memory_utilization,
        )
    return spec.build()


def shaping_options(config: TrainConfig) -> dict:
    return {
        "weight": config.prm.prm_reward_weight,
        "mode": config.prm.prm_reward_mode,
        "threshold": config.prm.prm_threshold,
        "gamma": config.ppo.gamma,
        "deferred": config.prm.prm_deferred,
    }


@dataclass
class TrainingEnv:
    env: object
    eval_prm: object | None  # scores the final evaluation's videos (None: no model PRM)
    description: str
    ray_env: object | None = None
    actors: list = field(default_factory=list)
    group: object | None = None  # the run's placement group (GPU clusters)

    def counters(self) -> dict:
        if self.ray_env is None:
            return {}
        return {
            "perf/env_worker_restarts": float(sum(self.ray_env.restarts)),
            "rollout/dropped_episodes_total": float(self.ray_env.dropped_episodes),
            "rollout/prm_unscored_steps_total": float(self.ray_env.unscored_steps),
        }

    def close(self) -> None:
        self.env.close()
        if self.actors or self.group is not None:
            import ray

            for actor in self.actors:
                ray.kill(actor)
            self.actors = []
        if self.group is not None:
            from ray.util import remove_placement_group

            remove_placement_group(self.group)
            self.group = None


def training_env(config: TrainConfig, assigned: list[str], image_size: int) -> TrainingEnv:
    backends = config.scale.backends
    spec = prm_spec(config)
    prm_name = "off" if spec is None else spec.name
    if not backends.use_ray:
        import gymnasium as gym

        from reward.vector import VectorRewardWrapper
        from vla_rl.rollout import task_env_fns

        env = gym.vector.SyncVectorEnv(task_env_fns(assigned, image_size, config.env.max_env_length))
        prm = build_prm(config, backends.prm)
        if prm is not None:
            env = VectorRewardWrapper(env, prm, **shaping_options(config))
        described = f"PRM: {'off' if prm is None else type(prm).__name__ + ' ' + prm_name}; in-process envs"
        return TrainingEnv(env, prm if spec is not None and spec.is_model else None, described)

    from vla_rl.distributed.env_workers import RayVectorEnv
    from vla_rl.distributed.prm_server import start_prm_server
    from vla_rl.distributed.ray_setup import init_ray, placement, plan_resources

    where = init_ray(config.scale.ray_address)
    import ray

    resources = ray.available_resources()  # what this run can still reserve on a shared cluster
    workers = config.scale.num_env_workers or max(1, min(config.env.num_envs, int(os.cpu_count() or 1)))
    plan = plan_resources(
        resources.get("CPU", 0), resources.get("GPU", 0), workers, spec is not None, spec is not None and spec.is_model
    )
    worker_options, prm_options, group = placement(plan)
    actors, client = [], None
    if spec is not None:
        if spec.is_model and prm_options.get("num_gpus"):
            spec = PRMSpec(spec.name, spec.adapter_path, "cuda", spec.batch_size, spec.seed)
        server, client = start_prm_server(
            spec, config.scale.prm_server_batch_size, config.scale.prm_server_wait_ms, prm_options
        )
        actors.append(server)
    env = RayVectorEnv(
        assigned,
        image_size,
        config.env.max_env_length,
        num_workers=workers,
        prm=client,
        shaping=shaping_options(config),
        actor_options=worker_options,
    )
    described = (
        f"{where}; {workers} env worker actors"
        + (f", PRM server ({prm_name})" if client else ", PRM off")
        + (f"; {'; '.join(plan.notes)}" if plan.notes else "")
    )
    eval_prm = client if spec is not None and spec.is_model else None
    return TrainingEnv(env, eval_prm, described, ray_env=env, actors=actors, group=group)
