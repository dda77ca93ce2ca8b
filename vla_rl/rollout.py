"""Rollouts: ``num_steps`` x ``num_envs`` transitions of the VLA policy in a vector env wrapped
with the process reward.

Episodes continue across iterations (the last observation is kept). Gymnasium's next-step
autoreset means the step after an episode ends is a reset step: its action is ignored by the
env, so it is marked ``valid = False`` and excluded from the PPO loss; the policy's value of
the observation it was given (the episode's final observation) is what a truncated step
bootstraps from. With deferred PRM scoring (the default) the PRM scores the whole rollout in
large batches after the last step, off the action-selection path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch

from vla_rl import keys


def assign_tasks(tasks: list[str], num_envs: int, group_size: int = 1) -> list[str]:
    """The task of every sub-env, round-robin so every task gets ``num_envs / len(tasks)``; with
    ``group_size > 1``, round-robin over groups of that many consecutive sub-envs (one task each)."""
    return [tasks[(i // group_size) % len(tasks)] for i in range(num_envs)]


def make_env_fns(tasks: list[str], num_envs: int, image_size: int, max_env_length: int = 0) -> tuple[list, list]:
    """Env constructors, tasks assigned round-robin (:func:`assign_tasks`), and the assignment."""
    assigned = assign_tasks(tasks, num_envs)
    return task_env_fns(assigned, image_size, max_env_length), assigned


def env_options(
    image_size: int,
    max_env_length: int | None = 0,
    prm_image_size: int | None = None,
    prm_camera: str | None = None,
    camera: str | None = None,
) -> dict:
    """``gym.make`` keyword arguments of a task env: the frame side, the episode step limit (0 or
    None: the task's), the policy's view ``camera`` (None: the task's front camera) and, where
    they differ from the policy's, the side and the camera of the PRM's frame
    (``envs.base.ManipulationEnv``)."""
    options = {"image_size": image_size}
    if max_env_length:
        options["max_episode_steps"] = max_env_length
    camera = camera or keys.FRONT_CAMERA
    if camera != keys.FRONT_CAMERA:
        options["camera"] = camera
    if prm_image_size and prm_image_size != image_size:
        options["prm_image_size"] = prm_image_size
    if prm_camera and prm_camera != camera:  # the policy's own view needs no option
        options["prm_camera"] = prm_camera
    return options


def task_env_fns(
    assigned: list[str],
    image_size: int,
    max_env_length: int = 0,
    prm_image_size: int | None = None,
    handover: dict | None = None,
    prm_camera: str | None = None,
    camera: str | None = None,
) -> list:
    """One env constructor per entry of ``assigned`` (a task name each), made with :func:`env_options`.

    ``handover`` (``{"tasks": [...], "max_steps": k, "action_noise": s}``) wraps every sub-env in
    :class:`envs.wrappers.ExpertHandover`, enabled on the listed tasks, at probability 0 until the
    trainer sets it (``env.call("set_handover_probability", p)``)."""
    import envs

    kwargs = env_options(image_size, max_env_length, prm_image_size, prm_camera, camera)

    def make(task):
        if not handover:
            return lambda: gym.make(envs.task_id(task), **kwargs)

        def build():
            from envs.wrappers import ExpertHandover

            return ExpertHandover(
                gym.make(envs.task_id(task), **kwargs),
                max_steps=handover["max_steps"],
                action_noise=handover.get("action_noise", 0.0),
                enabled=task in handover["tasks"],
            )

        return build

    return [make(task) for task in assigned]


@dataclass
class RolloutBatch:
    """One rollout, all arrays ``(T, N, ...)``."""

    images: np.ndarray
    states: np.ndarray
    instructions: list[list[str]]
    token_ids: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    next_values: torch.Tensor
    env_rewards: np.ndarray
    prm_rewards: np.ndarray
    prm_scores: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    valid: np.ndarray
    episodes: list[dict] = field(default_factory=list)  # finished episodes: task, success, length, returns
    dropped_episodes: int = 0  # episodes cut by a crashed env worker (their steps are not valid)
    timing: dict = field(default_factory=dict)
    prm_images: np.ndarray | None = None  # the PRM's frames, where kept (Rollout.keep_prm_frames)

    @property
    def rewards(self) -> np.ndarray:
        return self.env_rewards + self.prm_rewards


class Rollout:
    """Collects rollouts; holds the env and the observation where the last one stopped.

    Args:
        env: a vector env (optionally wrapped by :class:`reward.vector.VectorRewardWrapper`).
        policy: a :class:`vla_rl.policy.vla.VLAPolicy`.
        tasks: the task name of each sub-env (for per-task metrics).
        num_steps: steps per env per rollout.
        temperature: sampling temperature.
        seed: seeds the first reset (sub-env i gets ``seed + i``).
        group_size: 0 (the default) collects ``num_steps`` steps per sub-env, episodes running on
            across rollouts. ``> 1`` makes every rollout episodic, for group-relative advantages
            (GRPO, RLOO): all sub-envs are reset, each group of ``group_size`` consecutive sub-envs
            from one initial state (seeds ``seed, seed + 1, ...`` one per group, fresh every
            rollout), and each sub-env runs exactly one episode, to its end; ``num_steps`` is then
            the longest an episode may run (the tasks' step limit), a bound that is checked.
        keep_prm_frames: keep the PRM's own frames (``obs["prm_image"]``) in each batch, for
            videos that show them; off (the default), they are not copied.
    """

    def __init__(
        self,
        env,
        policy,
        tasks: list[str],
        num_steps: int,
        temperature: float = 1.0,
        seed: int = 0,
        group_size: int = 0,
        keep_prm_frames: bool = False,
    ):
        if group_size and env.num_envs % group_size:
            raise ValueError(f"group_size {group_size} must divide the number of envs ({env.num_envs}).")
        self.env = env
        self.policy = policy
        self.tasks = tasks
        self.num_steps = num_steps
        self.temperature = temperature
        self.group_size = group_size
        self.keep_prm_frames = keep_prm_frames
        self.next_group_seed = seed
        self.observations, infos = env.reset(seed=[seed + i for i in range(env.num_envs)])
        self.instructions = list(infos[keys.INSTRUCTION])
        self.handover = np.zeros(env.num_envs, int)  # expert steps before the current episode was handed over
        self._read_handover(infos, np.ones(env.num_envs, bool))
        self.ending = np.zeros(env.num_envs, bool)  # the next step is a reset step
        self.returns = np.zeros(env.num_envs)
        self.env_returns = np.zeros(env.num_envs)
        self.lengths = np.zeros(env.num_envs, int)
        self.prm = getattr(env, "flush", None) is not None and getattr(env, "deferred", False)

    def _reset_groups(self) -> None:
        """Episodic rollouts: every sub-env starts a new episode, one initial state per group."""
        N, G = self.env.num_envs, self.group_size
        seeds = [self.next_group_seed + i // G for i in range(N)]
        self.next_group_seed += N // G
        self.observations, infos = self.env.reset(seed=seeds)
        self.instructions = list(infos[keys.INSTRUCTION])
        self._read_handover(infos, np.ones(N, bool))
        self.ending[:] = False
        self.returns[:] = self.env_returns[:] = 0.0
        self.lengths[:] = 0

    def _read_handover(self, infos: dict, reset: np.ndarray) -> None:
        """Record ``handover_steps`` of the episodes that start at ``reset`` (0 where the env
        reports none)."""
        if keys.HANDOVER_STEPS not in infos:
            self.handover[reset] = 0
            return
        present = np.asarray(infos.get(f"_{keys.HANDOVER_STEPS}", np.ones(len(reset), bool)), bool)
        self.handover[reset] = np.where(present, np.asarray(infos[keys.HANDOVER_STEPS], int), 0)[reset]

    def collect(self) -> RolloutBatch:
        episodic = self.group_size > 0
        if episodic:
            self._reset_groups()
        T, N = self.num_steps + episodic, self.env.num_envs  # episodic: one step more, to see the last one end
        finished = np.zeros(N, bool)  # episodic: this sub-env's episode has ended
        image_shape = self.observations[keys.IMAGE].shape[1:]
        images = np.empty((T, N, *image_shape), np.uint8)
        states = np.empty((T, N, self.observations[keys.STATE].shape[1]), np.float32)
        prm_images = None
        if self.keep_prm_frames and keys.PRM_IMAGE in self.observations:
            prm_images = np.empty((T, N, *self.observations[keys.PRM_IMAGE].shape[1:]), np.uint8)
        instructions: list[list[str]] = []
        token_ids, logprobs, values = [], [], []
        env_rewards = np.zeros((T, N))
        prm_rewards = np.zeros((T, N))
        prm_scores = np.full((T, N), np.nan, np.float32)
        terminated = np.zeros((T, N), bool)
        truncated = np.zeros((T, N), bool)
        valid = np.zeros((T, N), bool)
        successes = np.zeros((T, N), bool)
        progress = np.full((T, N), np.nan)  # the simulator's privileged progress after each step
        dropped = np.zeros((T, N), bool)
        handover = np.zeros((T, N), int)  # expert steps before the episode of each step was handed over
        episode_start = np.zeros(N, int)  # first step of each env's current episode in this rollout
        timing = {"policy": 0.0, "env": 0.0, "prm": 0.0}
        for t in range(T):
            if episodic and finished.all():
                T = t
                break
            images[t] = self.observations[keys.IMAGE]
            states[t] = self.observations[keys.STATE]
            if prm_images is not None:
                prm_images[t] = self.observations[keys.PRM_IMAGE]
            instructions.append(list(self.instructions))
            valid[t] = ~(self.ending | finished)
            handover[t] = self.handover
            start = time.perf_counter()
            out = self._act(images[t], instructions[t], states[t], valid[t] if episodic else None)
            timing["policy"] += time.perf_counter() - start
            token_ids.append(out["token_ids"].cpu())
            logprobs.append(out["logprobs"].cpu())
            values.append(out["values"].cpu())
            actions = np.clip(out["actions"], -1.0, 1.0).astype(np.float32)
            start = time.perf_counter()
            self.observations, rewards, term, trunc, infos = self.env.step(actions)
            timing["env"] += time.perf_counter() - start
            env_rewards[t] = infos.get(keys.ENV_REWARD, rewards)
            if keys.PRM_REWARD in infos:  # per-step PRM scoring
                prm_rewards[t] = infos[keys.PRM_REWARD]
                prm_scores[t] = infos[keys.PRM_SCORE]
            terminated[t], truncated[t] = term & valid[t], trunc & valid[t]
            successes[t] = np.asarray(infos.get(keys.SUCCESS, np.zeros(N, bool)), bool) & valid[t]
            if keys.PROGRESS in infos:
                progress[t] = np.where(np.asarray(infos.get(f"_{keys.PROGRESS}", True)), infos[keys.PROGRESS], np.nan)
            if keys.DROPPED in infos:  # a crashed env worker: its episodes' steps are not transitions
                dropped[t] = np.asarray(infos[keys.DROPPED], bool) & np.asarray(infos[f"_{keys.DROPPED}"], bool)
                for i in np.flatnonzero(dropped[t]):
                    valid[episode_start[i] : t + 1, i] = False
                    terminated[t, i] = truncated[t, i] = successes[t, i] = False
            episode_start[term | trunc] = t + 1
            self.instructions = list(infos[keys.INSTRUCTION])
            self._read_handover(infos, self.ending & ~finished)  # a reset step: its info is the new episode's
            self.ending = term | trunc
            finished |= (term | trunc | dropped[t]) & episodic
        if episodic and not finished.all():
            raise RuntimeError(f"an episode ran past {self.num_steps} steps; raise the rollout's step bound.")
        images, states = images[:T], states[:T]
        prm_images = None if prm_images is None else prm_images[:T]
        env_rewards, prm_rewards, prm_scores = env_rewards[:T], prm_rewards[:T], prm_scores[:T]
        terminated, truncated, valid = terminated[:T], truncated[:T], valid[:T]
        successes, progress, dropped, handover = successes[:T], progress[:T], dropped[:T], handover[:T]
        start = time.perf_counter()
        if episodic:  # every episode has ended: nothing to bootstrap from
            last_values = torch.zeros(N)
        else:
            last_values = self.policy.values_of(
                self.observations[keys.IMAGE], self.instructions, self.observations[keys.STATE]
            ).cpu()
        timing["policy"] += time.perf_counter() - start
        if self.prm:
            start = time.perf_counter()
            scored = self.env.flush()
            timing["prm"] += time.perf_counter() - start
            prm_rewards = np.asarray(scored[keys.PRM_REWARD], np.float64) * valid
            prm_scores = np.where(valid, scored[keys.PRM_SCORE], np.nan).astype(np.float32)
        values_t = torch.stack(values)
        next_values = torch.cat([values_t[1:], last_values[None]], 0)
        episodes = self._episodes(
            env_rewards, prm_rewards, terminated, truncated, valid, successes, progress, dropped, handover
        )
        return RolloutBatch(
            images,
            states,
            instructions,
            torch.stack(token_ids),
            torch.stack(logprobs),
            values_t,
            next_values,
            env_rewards,
            prm_rewards,
            prm_scores,
            terminated,
            truncated,
            valid,
            episodes,
            int(dropped.sum()),
            timing,
            prm_images,
        )

    def _act(self, images, instructions, states, rows) -> dict:
        """The policy's actions for every sub-env; with ``rows`` (a mask) only those run the
        policy, the others get zero actions and zero token ids, log-probs and values."""
        if rows is None or rows.all():
            return self.policy.act(images, instructions, states, temperature=self.temperature)
        index = np.flatnonzero(rows)
        out = self.policy.act(
            images[index], [instructions[i] for i in index], states[index], temperature=self.temperature
        )
        full = {}
        for name, value in out.items():
            if isinstance(value, torch.Tensor):
                full[name] = torch.zeros((len(rows), *value.shape[1:]), dtype=value.dtype)
                full[name][torch.from_numpy(index)] = value.cpu()
            else:
                full[name] = np.zeros((len(rows), *np.shape(value)[1:]), np.asarray(value).dtype)
                full[name][index] = value
        return full

    def _episodes(
        self, env_rewards, prm_rewards, terminated, truncated, valid, successes, progress, dropped, handover
    ) -> list[dict]:
        """Finished-episode records (episodes may span rollouts: running sums are kept); ``progress``
        is the simulator's privileged progress at the episode's last step (NaN where the env has none),
        ``handover_steps`` the expert steps before the policy took over (0: a normal start)."""
        finished = []
        for t in range(len(valid)):
            for i in np.flatnonzero(dropped[t]):
                self.returns[i] = self.env_returns[i] = 0.0
                self.lengths[i] = 0
            for i in np.flatnonzero(valid[t]):
                self.returns[i] += env_rewards[t, i] + prm_rewards[t, i]
                self.env_returns[i] += env_rewards[t, i]
                self.lengths[i] += 1
                if terminated[t, i] or truncated[t, i]:
                    finished.append(
                        {
                            "task": self.tasks[i],
                            "success": bool(successes[t, i]),
                            "length": int(self.lengths[i]),
                            "return": float(self.returns[i]),
                            "env_return": float(self.env_returns[i]),
                            "progress": float(progress[t, i]),
                            "handover_steps": int(handover[t, i]),
                        }
                    )
                    self.returns[i] = self.env_returns[i] = 0.0
                    self.lengths[i] = 0
        return finished


def rollout_metrics(batch, rollout_seconds: float, episodes: list | None = None, dropped: int | None = None) -> dict:
    """Metrics of one rollout; ``episodes``/``dropped`` default to the batch's (FSDP ranks pass
    every rank's); the per-step figures are this process's."""
    metrics = {}
    episodes = batch.episodes if episodes is None else episodes
    if episodes:
        metrics["rollout/success_rate"] = float(np.mean([e["success"] for e in episodes]))
        metrics["rollout/env_return"] = float(np.mean([e["env_return"] for e in episodes]))
        metrics["rollout/return"] = float(np.mean([e["return"] for e in episodes]))
        metrics["rollout/episode_length"] = float(np.mean([e["length"] for e in episodes]))
        for task in sorted({e["task"] for e in episodes}):
            rows = [e["success"] for e in episodes if e["task"] == task]
            metrics[f"rollout/success_rate/{task}"] = float(np.mean(rows))
            metrics[f"rollout/episodes/{task}"] = float(len(rows))  # to weight the rates over iterations
            # Privileged progress at the episode's end: moves before the success rate does.
            final = [e.get("progress", np.nan) for e in episodes if e["task"] == task]
            if np.isfinite(final).any():
                metrics[f"rollout/final_progress/{task}"] = float(np.nanmean(final))
        handed = [e.get("handover_steps", 0) > 0 for e in episodes]
        if any(handed):  # a reverse curriculum (--handover_probability): the success of normal starts too
            metrics["rollout/handover_episodes"] = float(sum(handed))
            normal = [e["success"] for e, h in zip(episodes, handed, strict=True) if not h]
            if normal:
                metrics["rollout/success_rate/from_start"] = float(np.mean(normal))
    metrics["rollout/episodes"] = float(len(episodes))
    metrics["rollout/dropped_episodes"] = float(batch.dropped_episodes if dropped is None else dropped)
    valid = batch.valid
    scores = batch.prm_scores[valid]
    if np.isfinite(scores).any():
        metrics["rollout/prm_score_mean"] = float(np.nanmean(scores))
        metrics["reward/prm_reward_mean"] = float(batch.prm_rewards[valid].mean())
    metrics["reward/env_reward_mean"] = float(batch.env_rewards[valid].mean())
    metrics["rollout/value_mean"] = float(batch.values.numpy()[valid].mean())
    steps = int(valid.sum())
    metrics["perf/env_steps_per_s"] = steps / max(rollout_seconds, 1e-9)
    return metrics


def step_limit(tasks: list[str], max_env_length: int = 0) -> int:
    """The longest episode of ``tasks``: ``max_env_length`` if set, else the tasks' own limit."""
    import envs

    if max_env_length:
        return max_env_length
    return max(gym.spec(envs.task_id(task)).max_episode_steps for task in tasks)
