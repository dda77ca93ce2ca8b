"""``VectorRewardWrapper``: the process reward for ``gymnasium.vector.VectorEnv``.

All sub-envs are scored in ONE batched PRM call per step. Gymnasium 1.x's next-step autoreset
is handled: the step after an episode ends is a reset step, which gets no PRM reward (and, in
potential mode, starts the new episode's potential from the reset frame's score).

With ``deferred=True`` nothing is scored while stepping: the frames to score are kept, and
:meth:`VectorRewardWrapper.flush` scores a whole rollout in large batches and returns its
PRM rewards — the same numbers as the per-step mode from the same scores, with the PRM off
the action-selection path. In this mode the reward returned by ``step`` is the env reward.
"""

from __future__ import annotations

import logging

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from envs import sub_env_info
from reward.base import ProcessRewardModel, require_prm
from reward.shaping import Shaping, ShapingState
from vla_rl import keys

logger = logging.getLogger("vla_rl.prm")


class VectorRewardWrapper(gym.vector.VectorWrapper):
    """Adds ``weight * f(PRM score)`` to every sub-env's reward; see ``RewardWrapper``.

    Args:
        env: a vector env whose observations have an ``"image"`` entry (the PRM scores
            ``"prm_image"`` instead where there is one) and whose infos (or sub-envs) give the
            instruction.
        prm, weight, mode, threshold, gamma, score_every, log_every, window: as in ``RewardWrapper``.
        deferred: score at :meth:`flush` instead of every step.
    """

    def __init__(
        self,
        env: gym.vector.VectorEnv,
        prm: ProcessRewardModel,
        weight: float = 0.1,
        mode: str = "binary",
        threshold: float = 0.5,
        gamma: float = 0.99,
        score_every: int = 1,
        log_every: int = 0,
        deferred: bool = False,
        window: int = 1,
    ):
        super().__init__(env)
        autoreset = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if autoreset not in (AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED):
            raise ValueError(f"VectorRewardWrapper supports next-step or disabled autoreset, not {autoreset}.")
        self.prm = require_prm(prm)
        self.shaping = Shaping(weight, mode, threshold, gamma, score_every, window)
        self.state = ShapingState(self.shaping, self.num_envs)
        self.deferred = deferred
        self.log_every = log_every
        self.pending: list = []
        self._ending = np.zeros(self.num_envs, bool)  # the next step of these envs is a reset step
        self._steps = 0

    def _instructions(self, infos: dict) -> list[str]:
        if keys.INSTRUCTION in infos:
            return list(infos[keys.INSTRUCTION])
        return list(self.env.get_attr("instruction"))

    def _record(self, observations, infos, active, begin, terminated, truncated):
        return self.state.record(
            observations[keys.PRM_IMAGE] if keys.PRM_IMAGE in observations else observations[keys.IMAGE],
            self._instructions(infos),
            lambda i: sub_env_info(infos, i),
            active=active,
            begin=begin,
            terminated=terminated,
            truncated=truncated,
        )

    def reset(self, *, seed=None, options=None):
        observations, infos = self.env.reset(seed=seed, options=options)
        mask = np.ones(self.num_envs, bool)
        if options is not None and "reset_mask" in options:
            mask = np.asarray(options["reset_mask"], bool)
        record = self._record(observations, infos, np.zeros(self.num_envs, bool), mask, ~mask, ~mask)
        self._submit(record, from_reset=True)
        self._ending[mask] = False
        return observations, infos

    def _submit(self, record, from_reset: bool = False):
        if self.deferred:
            self.pending.append((from_reset, record))
            return None
        return self.state.resolve([record], self.prm)[0]

    def step(self, actions):
        observations, env_rewards, terminated, truncated, infos = self.env.step(actions)
        begin = self._ending.copy()
        active = ~begin
        record = self._record(observations, infos, active, begin, terminated & active, truncated & active)
        self._ending = terminated | truncated
        infos = dict(infos)
        infos[keys.ENV_REWARD] = np.asarray(env_rewards, np.float64).copy()
        infos[f"_{keys.ENV_REWARD}"] = np.ones(self.num_envs, bool)
        result = self._submit(record)
        self._steps += 1
        if result is None:
            return observations, env_rewards, terminated, truncated, infos
        score, prm_reward = result
        infos.update(
            {
                keys.PRM_SCORE: score,
                keys.PRM_REWARD: prm_reward,
                f"_{keys.PRM_SCORE}": active.copy(),
                f"_{keys.PRM_REWARD}": active.copy(),
            }
        )
        if self.log_every and self._steps % self.log_every == 0:
            logger.info(
                "[PRM] step %d: scores %s, weighted PRM rewards %s",
                self._steps,
                np.array2string(score, precision=3),
                np.array2string(prm_reward, precision=4),
            )
        return observations, env_rewards + prm_reward, terminated, truncated, infos

    def flush(self) -> dict[str, np.ndarray]:
        """Score everything recorded since the last flush (deferred mode) in large batches.

        Returns ``{"prm_score": (T, N) float32, "prm_reward": (T, N) float64}`` for the ``T``
        ``step`` calls since the last flush (reset calls are folded in, not returned)."""
        if not self.deferred:
            raise RuntimeError("flush() is for deferred=True; per-step mode adds the PRM reward in step().")
        pending, self.pending = self.pending, []
        results = self.state.resolve([record for _, record in pending], self.prm)
        steps = [result for (from_reset, _), result in zip(pending, results, strict=True) if not from_reset]
        if not steps:
            return {
                keys.PRM_SCORE: np.zeros((0, self.num_envs), np.float32),
                keys.PRM_REWARD: np.zeros((0, self.num_envs)),
            }
        return {keys.PRM_SCORE: np.stack([s for s, _ in steps]), keys.PRM_REWARD: np.stack([r for _, r in steps])}
