"""Bring any Gymnasium env under the vla-rl contract (image observation + language task info)."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

from vla_rl import keys


class AddInstruction(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Adds ``{"image", "state"}`` observations and the ``instruction``/``success``/``progress``
    info keys to an env made with ``render_mode="rgb_array"``.

    Args:
        env: the env; its own observation becomes ``obs["state"]`` (float32).
        instruction: the language instruction for every episode.
        success_fn: ``f(env.unwrapped) -> bool``; when it turns true the step reward is 1.0
            and the episode terminates (the sparse reward of the built-in tasks). ``None``
            keeps the env's own reward and termination and reports ``success=False``.
        progress_fn: optional ``f(env.unwrapped) -> float`` in [0, 1]; 0.0 when absent.
    """

    def __init__(
        self, env: gym.Env, instruction: str, success_fn: Callable | None = None, progress_fn: Callable | None = None
    ):
        gym.utils.RecordConstructorArgs.__init__(
            self, instruction=instruction, success_fn=success_fn, progress_fn=progress_fn
        )
        gym.Wrapper.__init__(self, env)
        if env.render_mode != "rgb_array":
            raise ValueError(f"AddInstruction needs an env made with render_mode='rgb_array', got {env.render_mode!r}.")
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError("instruction must be a non-empty string.")
        self.instruction = instruction
        self.success_fn, self.progress_fn = success_fn, progress_fn
        env.reset(seed=0)
        frame = env.render()
        inner = env.observation_space
        self.observation_space = gym.spaces.Dict(
            {
                keys.IMAGE: gym.spaces.Box(0, 255, frame.shape, np.uint8),
                keys.STATE: gym.spaces.Box(
                    inner.low.astype(np.float32), inner.high.astype(np.float32), dtype=np.float32
                ),
            }
        )

    def _wrap(self, state, info: dict):
        success = bool(self.success_fn(self.env.unwrapped)) if self.success_fn else False
        progress = 1.0 if success else float(self.progress_fn(self.env.unwrapped)) if self.progress_fn else 0.0
        info = {
            **info,
            keys.INSTRUCTION: self.instruction,
            keys.SUCCESS: success,
            keys.PROGRESS: min(progress, 1.0) if success else min(progress, 0.99),
        }
        obs = {keys.IMAGE: np.asarray(self.env.render(), np.uint8), keys.STATE: np.asarray(state, np.float32)}
        return obs, info

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        return self._wrap(*self.env.reset(seed=seed, options=options))

    def step(self, action):
        state, reward, terminated, truncated, info = self.env.step(action)
        obs, info = self._wrap(state, info)
        if self.success_fn is not None:
            reward, terminated = float(info[keys.SUCCESS]), info[keys.SUCCESS]
        return obs, reward, terminated, truncated, info
