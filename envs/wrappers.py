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


class ExpertHandover(gym.Wrapper):
    """Starts some episodes part-way along the scripted expert's trajectory: a reverse
    curriculum for tasks whose policy seldom gets far enough on its own to see a success.

    On reset, with probability ``probability``, the task's scripted expert
    (:func:`envs.experts.make_expert`) acts for ``k`` steps, ``k`` uniform in
    ``1..max_steps``, and the episode is handed over from there. The expert's steps count
    towards the episode's step limit (wrap the env made by ``gym.make``, whose ``TimeLimit``
    is inside), so a handed-over episode has ``k`` steps fewer left. If the expert ends the
    episode within its ``k`` steps, the env is reset again and that episode starts normally.
    The reset info carries ``handover_steps`` (0: a normal start). The wrapper's random
    generator is seeded by the first seeded reset, so a seeded run is deterministic.

    Args:
        env: a built-in task env made with ``gym.make``.
        probability: chance that an episode is handed over; :meth:`set_handover_probability`
            changes it during a run (the trainer anneals it).
        max_steps: the most expert steps before a hand-over.
        action_noise: std of the expert's action noise (0: its planned actions).
        enabled: ``False`` makes the wrapper a pass-through whose probability stays 0, so a
            vector env can wrap every sub-env and set the probability on all of them.
    """

    def __init__(
        self,
        env: gym.Env,
        probability: float = 0.0,
        max_steps: int = 30,
        action_noise: float = 0.0,
        enabled: bool = True,
    ):
        super().__init__(env)
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}.")
        if action_noise < 0:
            raise ValueError(f"action_noise must be >= 0, got {action_noise}.")
        if enabled:
            from envs.experts import make_expert

            make_expert(env)  # a task without a scripted expert fails here, not at the first reset
        self.enabled = enabled
        self.max_steps = int(max_steps)
        self.action_noise = float(action_noise)
        self.probability = 0.0
        self.set_handover_probability(probability)
        self._rng = np.random.default_rng()

    def set_handover_probability(self, probability: float) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"the hand-over probability must be in [0, 1], got {probability}.")
        self.probability = float(probability) if self.enabled else 0.0

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self._rng = np.random.default_rng([int(seed), 0x4A0D])
        observation, info = self.env.reset(seed=seed, options=options)
        steps = 0
        if self.probability > 0 and self._rng.random() < self.probability:
            from envs.experts import make_expert

            steps = int(self._rng.integers(1, self.max_steps + 1))
            expert = make_expert(self.env, self.action_noise, seed=int(self._rng.integers(2**31)))
            for _ in range(steps):
                observation, _, terminated, truncated, info = self.env.step(expert.act())
                if terminated or truncated:  # the expert finished it: start this episode normally
                    observation, info = self.env.reset(options=options)
                    steps = 0
                    break
        return observation, {**info, keys.HANDOVER_STEPS: steps}
