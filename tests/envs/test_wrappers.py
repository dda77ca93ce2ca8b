"""AddInstruction brings a third-party env (Gymnasium's Pusher-v5) under the contract."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs.wrappers import AddInstruction
from vla_rl import keys


def _object_at_goal(env, radius=0.05):
    return np.linalg.norm(env.get_body_com("object") - env.get_body_com("goal")) < radius


def _pusher(**kwargs):
    inner = gym.make("Pusher-v5", render_mode="rgb_array", width=64, height=64)
    return AddInstruction(inner, "push the white cylinder onto the red target", **kwargs)


def test_contract_on_pusher():
    env = _pusher(success_fn=_object_at_goal)
    try:
        check_env(env, skip_render_check=True)
        obs, info = env.reset(seed=0)
        assert obs[keys.IMAGE].shape == (64, 64, 3) and obs[keys.STATE].dtype == np.float32
        assert info[keys.INSTRUCTION].startswith("push") and info[keys.SUCCESS] is False
        obs, reward, terminated, _, info = env.step(env.action_space.sample())
        assert reward == 0.0 and not terminated and env.observation_space.contains(obs)
    finally:
        env.close()


def test_success_gives_sparse_reward_and_terminates():
    env = _pusher(success_fn=lambda e: _object_at_goal(e, radius=10.0), progress_fn=lambda e: 0.5)
    try:
        env.reset(seed=0)
        _, reward, terminated, _, info = env.step(np.zeros(7, np.float32))
        assert reward == 1.0 and terminated and info[keys.SUCCESS] and info[keys.PROGRESS] == 1.0
    finally:
        env.close()


def test_requires_rgb_array_and_instruction():
    with pytest.raises(ValueError, match="rgb_array"):
        AddInstruction(gym.make("Pusher-v5"), "push it")
    with pytest.raises(ValueError, match="instruction"):
        AddInstruction(gym.make("Pusher-v5", render_mode="rgb_array", width=32, height=32), " ")
