"""The Meta-World adapter (skipped when the metaworld extra is not installed)."""

import numpy as np
import pytest

metaworld = pytest.importorskip("metaworld")

import gymnasium as gym  # noqa: E402
from gymnasium.utils.env_checker import check_env  # noqa: E402

import envs  # noqa: E402, F401  (registers the VLARL ids)
from vla_rl import keys  # noqa: E402

pytestmark = pytest.mark.metaworld


def test_contract_and_determinism():
    env = gym.make("VLARL/MetaWorld-v0", task="pick-place-v3", image_size=48)
    try:
        check_env(env.unwrapped)
        obs, info = env.reset(seed=0)
        assert obs[keys.IMAGE].shape == (48, 48, 3) and obs[keys.STATE].shape == (4,)
        assert info[keys.INSTRUCTION] == "pick up the puck and place it at the goal"
        assert info[keys.SUCCESS] is False
    finally:
        env.close()


def test_scripted_policy_succeeds_through_the_adapter():
    from metaworld.policies import SawyerPickPlaceV3Policy

    env = gym.make("VLARL/MetaWorld-v0", task="pick-place-v3", image_size=32)
    policy = SawyerPickPlaceV3Policy()
    try:
        env.reset(seed=1)
        progress = []
        for _ in range(150):
            native = policy.get_action(env.unwrapped.raw_observation)
            action = np.array([*native[:3], 0, 0, 0, native[3]], np.float32)
            _, reward, terminated, truncated, info = env.step(action)
            progress.append(info[keys.PROGRESS])
            if terminated or truncated:
                break
        assert terminated and reward == 1.0 and info[keys.SUCCESS]
        assert progress[-1] == 1.0 and max(progress[:-1]) < 1.0 and max(progress[:-1]) > 0.3
    finally:
        env.close()


def test_unknown_task_and_bad_action():
    with pytest.raises(ValueError, match="unknown Meta-World task"):
        gym.make("VLARL/MetaWorld-v0", task="fly-v3")
    env = gym.make("VLARL/MetaWorld-v0", task="reach-v3", image_size=32)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.unwrapped.step(np.zeros(4))
    env.close()


def test_prm_frames_at_their_own_size():
    env = gym.make("VLARL/MetaWorld-v0", task="reach-v3", image_size=32, prm_image_size=64)
    try:
        check_env(env.unwrapped)
        obs, _ = env.reset(seed=2)
        assert obs[keys.IMAGE].shape == (32, 32, 3) and obs[keys.PRM_IMAGE].shape == (64, 64, 3)
        # The same camera: the larger frame, averaged down to the policy's size, matches it closely.
        small = obs[keys.PRM_IMAGE].reshape(32, 2, 32, 2, 3).mean((1, 3))
        assert np.abs(small - obs[keys.IMAGE].astype(float)).mean() < 20
        obs, *_ = env.step(np.zeros(7, np.float32))
        assert obs[keys.PRM_IMAGE].shape == (64, 64, 3) and obs[keys.PRM_IMAGE].std() > 0
    finally:
        env.close()
    same = gym.make("VLARL/MetaWorld-v0", task="reach-v3", image_size=32, prm_image_size=32)
    assert keys.PRM_IMAGE not in same.observation_space.spaces  # one size: no second frame
    same.close()
    with pytest.raises(ValueError, match="prm_image_size=8"):
        gym.make("VLARL/MetaWorld-v0", task="reach-v3", image_size=32, prm_image_size=8)
    with pytest.raises(ValueError, match="prm_camera='wrist': Meta-World tasks render only"):
        gym.make("VLARL/MetaWorld-v0", task="reach-v3", image_size=32, prm_camera="wrist")
    with pytest.raises(ValueError, match="render one camera, not several side by side"):
        gym.make("VLARL/MetaWorld-v0", task="reach-v3", image_size=32, camera="corner+gripperPOV")
