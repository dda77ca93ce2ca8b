"""The training env of a run, in-process or on Ray, with the PRM where the backends put it.

:func:`training_env` returns the vector env the rollout steps (a ``SyncVectorEnv`` wrapped with
the PRM, or a :class:`~vla_rl.distributed.env_workers.RayVectorEnv` whose workers hold the PRM
wrapper and share one PRM server actor), the PRM the final evaluation scores its videos with,
and the counters the trainer logs. The ranks of an FSDP run join one Ray cluster: each rank
has its own env workers, and rank 0's PRM server (a named actor) serves them all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from vla_rl.config import TrainConfig
from vla_rl.distributed.prm_server import PRMSpec

AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
PRM_NAMESPACE = "vla_rl"  # where an FSDP run's shared PRM server is named


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
    """The reward wrapper's shaping flags. The potential mode discounts with the return's own
    discount, so that its terms telescope over an episode: ``--gamma`` under GAE, 1 under the
    group estimators, whose episode returns are undiscounted sums (with 0.99 there, every step
    would also pay ``-0.01 * p``: a penalty for time spent in frames the PRM scores high)."""
    return {
        "weight": config.prm.prm_reward_weight,
        "mode": config.prm.prm_reward_mode,
        "threshold": config.prm.decision_threshold(),
        "window": config.prm.score_window(),
        "gamma": 1.0 if config.ppo.grouped else config.ppo.gamma,
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


def join_shared_cluster(config: TrainConfig, ranks) -> str:
    """Connect every rank of an FSDP run to one Ray cluster: ``--ray_address``, or the local
    cluster rank 0 starts (its address is passed to the other ranks). Ray Train workers are
    connected already."""
    import sys

    from vla_rl.distributed.ray_setup import init_ray, require_ray

    if "ray" in sys.modules and sys.modules["ray"].is_initialized():  # Ray Train workers: every rank alike
        return "Ray already initialised in this process"
    if ranks.is_main:
        ray = require_ray()
        where = init_ray(config.scale.ray_address)
        # A cluster that ray.init() starts uses token authentication: the other ranks get its mode and
        # token, which Ray reads when it is imported.
        auth = {k: os.environ[k] for k in AUTH_ENV if k in os.environ}
        token_file = os.path.expanduser(os.path.join("~", ".ray", "auth_token"))
        if auth.get("RAY_AUTH_MODE") == "token" and "RAY_AUTH_TOKEN" not in auth and os.path.isfile(token_file):
            with open(token_file) as f:
                auth["RAY_AUTH_TOKEN"] = f.read().strip()
        ranks.gather((ray.get_runtime_context().gcs_address, auth))
        return where
    address, auth = ranks.gather(None)[0]
    os.environ.update(auth)
    return init_ray(address)


def shared_prm_server(spec: PRMSpec, config: TrainConfig, options: dict, ranks):
    """``(actor or None, client)``: rank 0 starts the PRM server, every rank gets a client on it,
    so the frames of all ranks' env workers are batched together."""
    import ray

    from vla_rl.distributed.prm_server import RemotePRM, start_prm_server

    server = None
    if ranks.is_main:
        name = f"vla-rl-prm-{os.getpid()}-{id(config)}"
        options = {**options, "name": name, "namespace": PRM_NAMESPACE} if ranks.world > 1 else options
        server, client = start_prm_server(
            spec, config.scale.prm_server_batch_size, config.scale.prm_server_wait_ms, options
        )
    name = ranks.gather(name if ranks.is_main else None)[0]  # after rank 0's server has loaded its PRM
    if not ranks.is_main:
        client = RemotePRM(ray.get_actor(name, namespace=PRM_NAMESPACE))
    return server, client


def training_env(
    config: TrainConfig, assigned: list[str], image_size: int, ranks=None, camera: str | None = None
) -> TrainingEnv:
    """The run's env (see the module doc), seen from the policy's ``camera`` (None: the front
    one); ``ranks`` (FSDP) share one Ray cluster and PRM server."""
    from vla_rl.distributed.ranks import SINGLE

    ranks = ranks or SINGLE
    backends = config.scale.backends
    spec = prm_spec(config)
    prm_name = "off" if spec is None else spec.name
    if not backends.use_ray:
        import gymnasium as gym

        from reward.vector import VectorRewardWrapper
        from vla_rl.rollout import task_env_fns

        env = gym.vector.SyncVectorEnv(
            task_env_fns(
                assigned,
                image_size,
                config.env.max_env_length,
                config.prm.frame_size(),
                config.env.handover(),
                config.prm.frame_camera(),
                camera,
            )
        )
        prm = build_prm(config, backends.prm)
        if prm is not None:
            env = VectorRewardWrapper(env, prm, **shaping_options(config))
        described = f"PRM: {'off' if prm is None else type(prm).__name__ + ' ' + prm_name}; in-process envs"
        return TrainingEnv(env, prm if spec is not None and spec.is_model else None, described)

    from vla_rl.distributed.env_workers import RayVectorEnv
    from vla_rl.distributed.ray_setup import placement, plan_resources

    where = join_shared_cluster(config, ranks)
    import ray

    # What this run can still reserve on a shared cluster, split between the ranks as rank 0 saw it.
    resources = ranks.gather(ray.available_resources() if ranks.is_main else None)[0]
    cpus, gpus = resources.get("CPU", 0) / ranks.world, resources.get("GPU", 0) / ranks.world
    workers = config.scale.num_env_workers or max(1, min(config.env.num_envs, int(os.cpu_count() or 1) // ranks.world))
    serves = spec is not None and ranks.is_main
    plan = plan_resources(cpus, gpus, workers, serves, serves and spec.is_model)
    worker_options, prm_options, group = placement(plan)
    actors, client = [], None
    if spec is not None:
        if spec.is_model and prm_options.get("num_gpus"):
            spec = PRMSpec(spec.name, spec.adapter_path, "cuda", spec.batch_size, spec.seed)
        server, client = shared_prm_server(spec, config, prm_options, ranks)
        actors += [server] if server is not None else []
    env = RayVectorEnv(
        assigned,
        image_size,
        config.env.max_env_length,
        num_workers=workers,
        prm=client,
        shaping=shaping_options(config),
        actor_options=worker_options,
        prm_image_size=config.prm.frame_size(),
        handover=config.env.handover(),
        prm_camera=config.prm.frame_camera(),
        camera=camera,
    )
    per_rank = " per rank" if ranks.world > 1 else ""
    described = (
        f"{where}; {workers} env worker actors{per_rank}"
        + (f", PRM server ({prm_name})" if client else ", PRM off")
        + (f"; {'; '.join(plan.notes)}" if plan.notes else "")
    )
    eval_prm = client if spec is not None and spec.is_model else None
    return TrainingEnv(env, eval_prm, described, ray_env=env, actors=actors, group=group)
