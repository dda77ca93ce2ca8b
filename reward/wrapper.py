"""``RewardWrapper``: a Gymnasium wrapper that adds the process reward to any env.

It scores the frame observed *after* each action, returns ``r_env + weight * f(p)``, never
touches ``terminated``/``truncated``, and puts ``env_reward``, ``prm_score`` and ``prm_reward``
in ``info`` (success metrics must come from ``env_reward``/``info["success"]``, not from the
shaped reward)::

    env = RewardWrapper(gym.make("VLARL/PickPlace-v0", image_size=112), QwenProcessRM(path), weight=0.1)
"""

from __future__ import annotations

import logging
from collections import deque

import gymnasium as gym
import numpy as np

from reward.base import ProcessRewardModel, require_prm
from reward.shaping import Shaping
from vla_rl import keys

logger = logging.getLogger("vla_rl.prm")


def frame_of(observation, env: gym.Env) -> np.ndarray:
    """The frame the PRM scores: ``obs["prm_image"]`` (the camera at the PRM's own size, where
    the env renders one), else ``obs["image"]``, else ``env.render()``."""
    if isinstance(observation, dict):
        for key in (keys.PRM_IMAGE, keys.IMAGE):
            if key in observation:
                return observation[key]
    frame = env.render()
    if frame is None:
        raise ValueError(
            "the env has no image observation and render() returned None; make it with "
            "render_mode='rgb_array' (or wrap it with envs.wrappers.AddInstruction)."
        )
    return frame


def instruction_of(info: dict, env: gym.Env) -> str:
    """The language instruction: ``info["instruction"]``, else ``env.unwrapped.instruction``."""
    text = info.get(keys.INSTRUCTION) or getattr(env.unwrapped, "instruction", None)
    if not text:
        raise ValueError(
            "the env gives no instruction (info['instruction'] or env.unwrapped.instruction); "
            "wrap it with envs.wrappers.AddInstruction(env, instruction=...)."
        )
    return str(text)


class RewardWrapper(gym.Wrapper):
    """Adds ``weight * f(PRM score)`` to the env reward (modes: see ``reward.shaping``).

    Args:
        env: any env whose observation has an ``"image"`` (or that renders ``rgb_array``)
            and that provides an instruction.
        prm: a :class:`~reward.base.ProcessRewardModel`.
        weight: ``--prm_reward_weight``, finite and >= 0.
        mode: ``"binary"`` (default), ``"prob"`` or ``"potential"``.
        threshold: score threshold of the binary mode.
        gamma: discount of the potential mode.
        score_every: score every N-th step (and the last step of an episode); steps between
            reuse the last score.
        window: causal score window (``reward.shaping``): each scored frame's P(completed) is
            the mean of it and the episode's ``window - 1`` scores before it.
        log_every: log scores and weighted PRM rewards every N steps (0: never).
    """

    def __init__(
        self,
        env: gym.Env,
        prm: ProcessRewardModel,
        weight: float = 0.1,
        mode: str = "binary",
        threshold: float = 0.5,
        gamma: float = 0.99,
        score_every: int = 1,
        log_every: int = 0,
        window: int = 1,
    ):
        super().__init__(env)
        self.prm = require_prm(prm)
        self.shaping = Shaping(weight, mode, threshold, gamma, score_every, window)
        self.log_every = log_every
        self._steps = 0
        self._previous = self._held = 0.0  # score before the action; last computed score
        self._count = 0  # steps since reset
        self._recent: deque[float] = deque(maxlen=self.shaping.window)  # the episode's last scores

    def _score(self, observation, info: dict) -> float:
        frame = frame_of(observation, self.env)
        self._recent.append(float(self.prm.score(frame[None], [instruction_of(info, self.env)], [info])[0]))
        return sum(self._recent) / len(self._recent)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        observation, info = self.env.reset(seed=seed, options=options)
        instruction_of(info, self.env)  # fail at reset, not mid-episode, if there is none
        self._recent.clear()
        self._previous = self._score(observation, info) if self.shaping.mode == "potential" else 0.0
        self._held = self._previous
        self._count = 0
        return observation, info

    def step(self, action):
        # Scalar book-keeping (the vector wrapper's ShapingState does the same over arrays;
        # tests check that both give equal rewards): a few microseconds per step.
        observation, env_reward, terminated, truncated, info = self.env.step(action)
        self._count += 1
        if self._count % self.shaping.score_every == 0 or terminated or truncated:
            self._held = self._score(observation, info)
        score = self._held
        prm_reward = float(self.shaping.weight * self.shaping.term(score, self._previous, terminated))
        self._previous = score
        info = {**info, keys.ENV_REWARD: float(env_reward), keys.PRM_SCORE: score, keys.PRM_REWARD: prm_reward}
        self._steps += 1
        if self.log_every and self._steps % self.log_every == 0:
            logger.info("[PRM] step %d: score %.3f, weighted PRM reward %.4f", self._steps, score, prm_reward)
        return observation, float(env_reward) + prm_reward, terminated, truncated, info
