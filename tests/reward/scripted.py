"""A tiny scripted env and a deterministic fake PRM for exact reward arithmetic."""

import gymnasium as gym
import numpy as np

from reward.base import ProcessRewardModel


class ScriptedEnv(gym.Env):
    """Frame t is filled with ``values[t]``; reward ``rewards[t-1]``; ends as scripted.

    ``values`` has one more entry than steps (the reset frame first)."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, values, rewards=None, terminate_at=None, truncate_at=None):
        self.values = list(values)
        self.rewards = list(rewards) if rewards is not None else [0.0] * (len(values) - 1)
        self.terminate_at, self.truncate_at = terminate_at, truncate_at
        self.observation_space = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (4, 4, 3), np.uint8)})
        self.action_space = gym.spaces.Box(-1, 1, (1,), np.float32)
        self.instruction = "finish the script"
        self.t = 0

    def _obs(self):
        return {"image": np.full((4, 4, 3), self.values[self.t], np.uint8)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {"instruction": self.instruction, "success": False}

    def step(self, action):
        self.t += 1
        terminated = self.t == self.terminate_at
        truncated = self.t == self.truncate_at
        info = {"instruction": self.instruction, "success": terminated}
        return self._obs(), self.rewards[self.t - 1], terminated, truncated, info


class PixelRM(ProcessRewardModel):
    """Score = first pixel / 255; counts its calls and the frames it saw."""

    def __init__(self):
        self.calls, self.frames_seen = 0, 0

    def _score(self, frames, instructions, infos):
        self.calls += 1
        self.frames_seen += len(frames)
        return frames[:, 0, 0, 0].astype(np.float32) / 255.0
