"""Environment workers as Ray actors, seen by the trainer as one ``gymnasium.vector.VectorEnv``.

Each :class:`EnvWorker` holds a slice of the sub-envs in a ``SyncVectorEnv`` (wrapped with the
process reward when the run has one, the PRM itself living in a :mod:`PRM server
<vla_rl.distributed.prm_server>` shared by all workers). :class:`RayVectorEnv` sends every
worker its slice of the actions at once and concatenates the answers in sub-env order, so the
rollout, the PRM wrapper logic and the PPO update are the same code with and without Ray, and
the same seeds give the same batch.

Fault tolerance: workers are restartable actors. A worker that dies during a step has its
sub-envs' in-flight episodes dropped: that step comes back as truncated at the last observation
with ``info["dropped"]`` set (the rollout excludes the episode's steps and counts it), and the
next step — a reset step under next-step autoreset — resets the restarted worker with fresh
deterministic seeds. Deferred PRM records lost with the worker come back unscored (NaN score,
zero PRM reward) and are counted.
"""

from __future__ import annotations

import logging
import time
from functools import partial

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from vla_rl import keys
from vla_rl.distributed.ray_setup import require_ray

logger = logging.getLogger("vla_rl.distributed")

RESEED_STRIDE = 1_000_003  # seeds of a restarted worker: original seed + restarts * stride


class EnvWorker:
    """One slice of the sub-envs (a Ray actor; also usable in-process).

    Args:
        tasks: the task of each sub-env of the slice.
        image_size, max_env_length, prm_image_size, handover, prm_camera, camera: as in
            :func:`vla_rl.rollout.task_env_fns`.
        prm: a PRM (typically a :class:`~vla_rl.distributed.prm_server.RemotePRM`) or ``None``.
        shaping: keyword arguments of :class:`reward.vector.VectorRewardWrapper`.
    """

    def __init__(
        self,
        tasks: list[str],
        image_size: int,
        max_env_length: int = 0,
        prm=None,
        shaping=None,
        prm_image_size: int | None = None,
        handover: dict | None = None,
        prm_camera: str | None = None,
        camera: str | None = None,
    ):
        import os

        from vla_rl.rollout import task_env_fns

        env = gym.vector.SyncVectorEnv(
            task_env_fns(tasks, image_size, max_env_length, prm_image_size, handover, prm_camera, camera)
        )
        if prm is not None:
            from reward.vector import VectorRewardWrapper

            env = VectorRewardWrapper(env, prm, **(shaping or {}))
        self.env = env
        self.pid = os.getpid()

    def info(self) -> dict:
        env = self.env
        return {
            "pid": self.pid,
            "num_envs": env.num_envs,
            "single_observation_space": env.single_observation_space,
            "single_action_space": env.single_action_space,
            "metadata": dict(env.metadata),
        }

    def reset(self, seed=None):
        return self.env.reset(seed=seed)

    def step(self, actions):
        return self.env.step(actions)

    def flush(self):
        return self.env.flush()

    def call(self, name: str, *args, **kwargs) -> tuple:
        """A method of every sub-env (``SyncVectorEnv.call``)."""
        return sync_env(self.env).call(name, *args, **kwargs)

    def close(self) -> None:
        self.env.close()


def sync_env(env):
    """The ``SyncVectorEnv`` (or other vector env with ``call``) under any vector wrappers."""
    while not hasattr(type(env), "call") and hasattr(env, "env"):
        env = env.env
    return env


def concat_infos(parts: list[dict], sizes: list[int]) -> dict:
    """Concatenate vector-env info dicts of consecutive slices; a key missing from a slice is
    filled with zeros (``None`` for objects) and a False ``_key`` mask."""
    keys_seen: dict[str, None] = {}
    for part in parts:
        keys_seen.update(dict.fromkeys(part))
    merged = {}
    for key in keys_seen:
        if key.startswith("_") and key[1:] in keys_seen:
            continue
        present = [part[key] for part in parts if key in part]
        if isinstance(present[0], dict):
            merged[key] = concat_infos([part.get(key, {}) for part in parts], sizes)
            continue
        example = np.asarray(present[0])
        chunks, masks = [], []
        for part, size in zip(parts, sizes, strict=True):
            if key in part:
                chunks.append(np.asarray(part[key]))
                masks.append(np.asarray(part.get(f"_{key}", np.ones(size, bool)), bool))
            else:
                filler = np.full((size, *example.shape[1:]), None if example.dtype == object else 0, example.dtype)
                chunks.append(filler)
                masks.append(np.zeros(size, bool))
        merged[key] = np.concatenate(chunks)
        merged[f"_{key}"] = np.concatenate(masks)
    return merged


def concat_observations(parts: list) -> dict | np.ndarray:
    if isinstance(parts[0], dict):
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    return np.concatenate(parts)


class RayVectorEnv(gym.vector.VectorEnv):
    """The sub-envs of ``num_workers`` :class:`EnvWorker` actors as one vector env.

    Args:
        tasks: the task of every sub-env (split into contiguous slices, one per worker).
        image_size, max_env_length, prm_image_size, handover, prm_camera, camera: env options (see
            :class:`EnvWorker`).
        num_workers: env worker actors.
        prm: a picklable PRM for the workers (a ``RemotePRM``) or ``None``.
        shaping: ``VectorRewardWrapper`` options (``deferred`` decides whether :meth:`flush` exists).
        actor_options: per-worker Ray options (resources, scheduling), see ``plan_resources``.
        max_restarts: how often Ray restarts a crashed worker (-1: always).
        start_timeout_s: how long to wait for every worker to start.
    """

    def __init__(
        self,
        tasks: list[str],
        image_size: int,
        max_env_length: int = 0,
        num_workers: int = 2,
        prm=None,
        shaping: dict | None = None,
        actor_options: list[dict] | None = None,
        max_restarts: int = -1,
        start_timeout_s: float = 300.0,
        prm_image_size: int | None = None,
        handover: dict | None = None,
        prm_camera: str | None = None,
        camera: str | None = None,
    ):
        ray = require_ray()
        if not 1 <= num_workers <= len(tasks):
            raise ValueError(f"--num_env_workers must be in 1..{len(tasks)} (one sub-env each at least).")
        self._ray = ray
        bounds = np.linspace(0, len(tasks), num_workers + 1).round().astype(int)
        self.slices = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        self.sizes = [s.stop - s.start for s in self.slices]
        remote = ray.remote(EnvWorker)
        options = actor_options or [{"num_cpus": 1}] * num_workers
        self.workers = [
            remote.options(max_restarts=max_restarts, max_task_retries=0, **options[k]).remote(
                tasks[s], image_size, max_env_length, prm, shaping, prm_image_size, handover, prm_camera, camera
            )
            for k, s in enumerate(self.slices)
        ]
        ready, pending = ray.wait(
            [w.info.remote() for w in self.workers], num_returns=num_workers, timeout=start_timeout_s
        )
        if pending:
            raise RuntimeError(
                f"{len(pending)} of {num_workers} env workers did not start within {start_timeout_s:g} s "
                f"(cluster resources free: {ray.available_resources()}); use fewer --num_env_workers."
            )
        info = ray.get(ready[0])
        self.num_envs = len(tasks)
        self.single_observation_space = info["single_observation_space"]
        self.single_action_space = info["single_action_space"]
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self.metadata = {**info["metadata"], "autoreset_mode": AutoresetMode.NEXT_STEP}
        self.deferred = bool(prm is not None and (shaping or {}).get("deferred", False))
        self.restarts = [0] * num_workers
        self.dropped_episodes = 0
        self.unscored_steps = 0
        self._needs_reset = [False] * num_workers
        self._seeds: list[list[int] | None] = [None] * num_workers
        self._last: list[tuple] = [None] * num_workers  # last (observation, infos) of each slice
        self._steps_since_flush = 0

    # ------------------------------------------------------------------ helpers
    def _split_seeds(self, seed) -> list:
        if seed is None:
            return [None] * len(self.workers)
        seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
        return [seeds[s] for s in self.slices]

    def _get_with_retry(self, make_ref, what: str, attempts: int = 40, first=None):
        """``ray.get(make_ref())`` (the first try may use an already submitted ``first`` ref),
        retried while a restarting actor is unavailable."""
        for attempt in range(attempts):
            try:
                return self._ray.get(first if attempt == 0 and first is not None else make_ref())
            except self._ray.exceptions.RayActorError as error:
                if attempt == attempts - 1:
                    raise RuntimeError(f"env worker did not come back for {what}: {error}") from error
                time.sleep(min(0.2 * (attempt + 1), 2.0))

    def worker_pids(self) -> list[int]:
        return [self._get_with_retry(lambda w=w: w.info.remote(), "info")["pid"] for w in self.workers]

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed=None, options=None):
        seeds = self._split_seeds(seed)
        results = [
            self._get_with_retry(lambda w=w, s=s: w.reset.remote(seed=s), "reset")
            for w, s in zip(self.workers, seeds, strict=True)
        ]
        for k, (obs, infos) in enumerate(results):
            self._seeds[k] = seeds[k]
            self._last[k] = (obs, infos)
        self._needs_reset = [False] * len(self.workers)
        self._steps_since_flush = 0
        return concat_observations([r[0] for r in results]), concat_infos([r[1] for r in results], self.sizes)

    def _restart_seeds(self, k: int):
        base = self._seeds[k] or [0] * self.sizes[k]
        return [int(s) + self.restarts[k] * RESEED_STRIDE for s in base]

    def step(self, actions):
        actions = np.asarray(actions)
        calls = [
            partial(worker.reset.remote, seed=self._restart_seeds(k))
            if self._needs_reset[k]
            else partial(worker.step.remote, actions[s])
            for k, (worker, s) in enumerate(zip(self.workers, self.slices, strict=True))
        ]
        refs = [call() for call in calls]
        observations, rewards, terminated, truncated, infos = [], [], [], [], []
        for k, ref in enumerate(refs):
            n = self.sizes[k]
            try:
                if self._needs_reset[k]:  # the restarted worker may still be starting: wait for it
                    result = self._get_with_retry(calls[k], "reset after a restart", first=ref)
                else:
                    result = self._ray.get(ref)
            except self._ray.exceptions.RayActorError as error:
                self.restarts[k] += 1
                self.dropped_episodes += n
                self._needs_reset[k] = True
                logger.warning("env worker %d died (%s); dropping its %d in-flight episodes", k, error, n)
                obs, last_infos = self._last[k]
                result = (obs, np.zeros(n), np.zeros(n, bool), np.ones(n, bool), _dropped(last_infos, n))
            else:
                if self._needs_reset[k]:  # a reset step after a crash: the reset observation
                    self._needs_reset[k] = False
                    obs, reset_infos = result
                    result = (obs, np.zeros(n), np.zeros(n, bool), np.zeros(n, bool), reset_infos)
                self._last[k] = (result[0], result[4])
            for store, value in zip((observations, rewards, terminated, truncated, infos), result, strict=True):
                store.append(value)
        self._steps_since_flush += 1
        return (
            concat_observations(observations),
            np.concatenate(rewards),
            np.concatenate(terminated),
            np.concatenate(truncated),
            concat_infos(infos, self.sizes),
        )

    def call(self, name: str, *args, **kwargs) -> tuple:
        """A method of every sub-env, worker by worker, in sub-env order."""
        results = []
        for worker in self.workers:
            results += self._get_with_retry(lambda w=worker: w.call.remote(name, *args, **kwargs), name)
        return tuple(results)

    def flush(self) -> dict[str, np.ndarray]:
        """Deferred PRM scores of every worker, ``(T, N)``; rows a restarted worker lost are
        NaN scores with zero reward (counted in ``unscored_steps``)."""
        steps, self._steps_since_flush = self._steps_since_flush, 0
        refs = [w.flush.remote() for w in self.workers]
        scores = np.full((steps, self.num_envs), np.nan, np.float32)
        rewards = np.zeros((steps, self.num_envs))
        for k, (ref, s) in enumerate(zip(refs, self.slices, strict=True)):
            try:
                part = self._ray.get(ref)
            except self._ray.exceptions.RayActorError:
                self.restarts[k] += 1
                self._needs_reset[k] = True
                part = {keys.PRM_SCORE: np.zeros((0, self.sizes[k])), keys.PRM_REWARD: np.zeros((0, self.sizes[k]))}
            rows = len(part[keys.PRM_SCORE])
            if rows:  # a restarted worker returns only its newest rows
                scores[steps - rows :, s] = part[keys.PRM_SCORE]
                rewards[steps - rows :, s] = part[keys.PRM_REWARD]
            self.unscored_steps += (steps - rows) * self.sizes[k]
        return {keys.PRM_SCORE: scores, keys.PRM_REWARD: rewards}

    def close_extras(self, **kwargs) -> None:
        for worker in self.workers:
            try:
                self._ray.get(worker.close.remote(), timeout=30)
            except Exception as error:  # a dead worker has nothing left to close
                logger.debug("env worker close: %s", error)
            self._ray.kill(worker)


def _dropped(infos: dict, n: int) -> dict:
    infos = {k: v for k, v in infos.items() if k in (keys.INSTRUCTION, f"_{keys.INSTRUCTION}")}
    infos[keys.DROPPED] = np.ones(n, bool)
    infos[f"_{keys.DROPPED}"] = np.ones(n, bool)
    return infos
