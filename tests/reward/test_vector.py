"""VectorRewardWrapper: one PRM call per step, autoreset, equality with the single-env wrapper,
and the deferred mode."""

import gymnasium as gym
import numpy as np
import pytest

import envs
from reward.base import OracleRM
from reward.vector import VectorRewardWrapper
from reward.wrapper import RewardWrapper
from tests.reward.scripted import PixelRM, ScriptedEnv
from vla_rl import keys

MODES = ["binary", "prob", "potential"]


def _actions(steps, num_envs):
    return np.random.default_rng(0).uniform(-1, 1, (steps, num_envs, 7)).astype(np.float32)


def _vector_rewards(mode, actions, prm_factory, deferred=False, window=1):
    vec = VectorRewardWrapper(
        envs.make_vector_env("reach", actions.shape[1], asynchronous=False, image_size=16),
        prm_factory(),
        weight=0.5,
        mode=mode,
        deferred=deferred,
        window=window,
    )
    vec.reset(seed=10)
    rewards, infos = [], []
    for action in actions:
        _, reward, _, _, info = vec.step(action)
        rewards.append(reward)
        infos.append(info)
    flushed = vec.flush() if deferred else None
    vec.close()
    return np.array(rewards), infos, flushed


def _single_rewards(mode, actions, index, prm_factory, window=1):
    """The same episode sequence on one env, with the vector env's autoreset step (reward 0)."""
    env = RewardWrapper(gym.make("VLARL/Reach-v0", image_size=16), prm_factory(), weight=0.5, mode=mode, window=window)
    env.reset(seed=10 + index)
    rewards, t = [], 0
    while t < len(actions):
        _, reward, terminated, truncated, _ = env.step(actions[t, index])
        rewards.append(reward)
        t += 1
        if (terminated or truncated) and t < len(actions):
            env.reset()
            rewards.append(0.0)
            t += 1
    env.close()
    return np.array(rewards[: len(actions)])


@pytest.mark.parametrize("window", [1, 3])
@pytest.mark.parametrize("mode", MODES)
def test_vector_equals_single_env_wrapper_across_autoresets(mode, window):
    actions = _actions(70, 2)  # the reach step limit is 60: every env autoresets once
    vector, infos, _ = _vector_rewards(mode, actions, lambda: OracleRM("progress"), window=window)
    for i in range(2):
        single = _single_rewards(mode, actions, i, lambda: OracleRM("progress"), window)
        np.testing.assert_array_equal(vector[:, i], single)
    reset_step = envs.TASKS["reach"][2]  # the step after truncation resets both envs
    assert not infos[reset_step][f"_{keys.PRM_REWARD}"].any()
    assert np.all(vector[reset_step] == 0)


def test_one_batched_prm_call_per_step():
    prm = PixelRM()
    vec = VectorRewardWrapper(envs.make_vector_env("stack", 3, asynchronous=False, image_size=16), prm, mode="prob")
    vec.reset(seed=0)
    for _ in range(5):
        vec.step(np.zeros((3, 7), np.float32))
    assert prm.calls == 5 and prm.frames_seen == 15
    vec.close()


def test_potential_mode_restarts_per_episode_on_a_scripted_vector_env():
    values = [0, 51, 102, 153]  # episode of 2 steps: truncated at 2, then autoreset
    vec = gym.vector.SyncVectorEnv([lambda: ScriptedEnv(values, truncate_at=2)])
    wrapped = VectorRewardWrapper(vec, PixelRM(), weight=1.0, mode="potential", gamma=1.0)
    wrapped.reset(seed=0)
    rewards = [wrapped.step(np.zeros((1, 1), np.float32))[1][0] for _ in range(5)]
    p = np.array(values) / 255.0
    # steps 1-2: episode 1; step 3: autoreset (0); steps 4-5: episode 2 starts again from p0.
    np.testing.assert_allclose(rewards, [p[1] - p[0], p[2] - p[1], 0.0, p[1] - p[0], p[2] - p[1]], rtol=1e-6)


@pytest.mark.parametrize("window", [1, 3])
@pytest.mark.parametrize("mode", MODES)
def test_deferred_rewards_are_bit_identical_to_per_step(mode, window):
    actions = _actions(70, 2)
    per_step, infos, _ = _vector_rewards(mode, actions, PixelRM, window=window)
    env_only, deferred_infos, flushed = _vector_rewards(mode, actions, PixelRM, deferred=True, window=window)
    env_rewards = np.array([info[keys.ENV_REWARD] for info in infos])
    np.testing.assert_array_equal(env_only, env_rewards)  # deferred step() returns the env reward
    assert flushed[keys.PRM_REWARD].shape == (70, 2)
    np.testing.assert_array_equal(env_only + flushed[keys.PRM_REWARD], per_step)
    np.testing.assert_array_equal(flushed[keys.PRM_SCORE], np.array([info[keys.PRM_SCORE] for info in infos]))


def test_deferred_scores_a_whole_rollout_in_one_call():
    prm = PixelRM()
    vec = VectorRewardWrapper(
        envs.make_vector_env("push", 2, asynchronous=False, image_size=16), prm, mode="prob", deferred=True
    )
    vec.reset(seed=0)
    for _ in range(8):
        vec.step(np.zeros((2, 7), np.float32))
    assert prm.calls == 0
    out = vec.flush()
    assert prm.calls == 1 and prm.frames_seen == 16 and out[keys.PRM_SCORE].shape == (8, 2)
    assert vec.flush()[keys.PRM_REWARD].shape == (0, 2)
    vec.close()


def test_flush_needs_deferred_mode():
    vec = VectorRewardWrapper(envs.make_vector_env("reach", 1, asynchronous=False, image_size=16), PixelRM())
    with pytest.raises(RuntimeError, match="deferred"):
        vec.flush()
    vec.close()


class ShapeRM(PixelRM):
    """PixelRM that also records the shape of the frames it scores."""

    def __init__(self):
        super().__init__()
        self.shapes = set()

    def _score(self, frames, instructions, infos):
        self.shapes.add(frames.shape[1:])
        return super()._score(frames, instructions, infos)


@pytest.mark.parametrize("deferred", [False, True])
def test_the_prm_scores_its_own_frames_where_the_env_renders_them(deferred):
    prm = ShapeRM()
    vec = VectorRewardWrapper(
        envs.make_vector_env("reach", 2, asynchronous=False, image_size=16, prm_image_size=32), prm, deferred=deferred
    )
    observations, _ = vec.reset(seed=0)
    assert observations[keys.IMAGE].shape == (2, 16, 16, 3)
    vec.step(_actions(1, 2)[0])
    if deferred:
        vec.flush()
    vec.close()
    assert prm.shapes == {(32, 32, 3)}
    single_prm = ShapeRM()
    env = RewardWrapper(gym.make("VLARL/Reach-v0", image_size=16, prm_image_size=32), single_prm, mode="potential")
    env.reset(seed=0)
    env.step(_actions(1, 1)[0, 0])
    env.close()
    assert single_prm.shapes == {(32, 32, 3)}
