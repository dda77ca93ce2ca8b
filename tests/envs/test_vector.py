"""Vector envs: gymnasium.make_vec and the spawn-based helper, sync and async."""

import gymnasium as gym
import numpy as np
import pytest

import envs
from vla_rl import keys


def _check_batch(vec, num_envs, size):
    obs, info = vec.reset(seed=3)
    assert obs[keys.IMAGE].shape == (num_envs, size, size, 3) and obs[keys.IMAGE].dtype == np.uint8
    assert obs[keys.STATE].shape == (num_envs, 8)
    assert len(info[keys.INSTRUCTION]) == num_envs
    actions = np.zeros((num_envs, 7), np.float32)
    for _ in range(3):
        obs, reward, terminated, truncated, info = vec.step(actions)
    assert reward.shape == terminated.shape == truncated.shape == (num_envs,)
    return obs, info


def test_make_vec_sync_matches_single_envs():
    vec = gym.make_vec("VLARL/PickPlace-v0", num_envs=2, vectorization_mode="sync", image_size=32)
    try:
        obs, info = _check_batch(vec, 2, 32)
    finally:
        vec.close()
    # Sub-env i is seeded with seed + i, as Gymnasium documents.
    single = gym.make("VLARL/PickPlace-v0", image_size=32)
    first, single_info = single.reset(seed=4)
    for _ in range(3):
        first, *_ = single.step(np.zeros(7, np.float32))
    single.close()
    np.testing.assert_array_equal(obs[keys.IMAGE][1], first[keys.IMAGE])
    assert info[keys.INSTRUCTION][1] == single_info[keys.INSTRUCTION]


def test_async_vector_env_with_spawn_workers():
    vec = envs.make_vector_env("stack", num_envs=2, asynchronous=True, image_size=32)
    try:
        obs, _ = _check_batch(vec, 2, 32)
        assert obs[keys.IMAGE].any()
    finally:
        vec.close()


def test_vector_autoreset_after_truncation():
    vec = envs.make_vector_env("reach", num_envs=2, asynchronous=False, image_size=16, render_obs=False)
    limit = envs.TASKS["reach"][2]
    vec.reset(seed=0)
    actions = np.zeros((2, 7), np.float32)
    for _step in range(limit):
        _, _, terminated, truncated, _ = vec.step(actions)
    assert truncated.all() and not terminated.any()
    # Gymnasium 1.x next-step autoreset: the following step resets, with zero reward.
    _, reward, terminated, truncated, info = vec.step(actions)
    assert not truncated.any() and np.all(reward == 0)
    assert np.all(np.array(info[keys.PROGRESS]) < 1)
    vec.close()


def test_make_vector_env_rejects_bad_count():
    with pytest.raises(ValueError, match="num_envs"):
        envs.make_vector_env("reach", num_envs=0)
