"""RewardWrapper arithmetic for every mode, on a scripted env with a deterministic PRM."""

import logging

import gymnasium as gym
import numpy as np
import pytest

from reward.base import DummyRM
from reward.wrapper import RewardWrapper
from tests.reward.scripted import PixelRM, ScriptedEnv
from vla_rl import keys

VALUES = [0, 51, 153, 102, 255]  # scores 0.0, 0.2, 0.6, 0.4, 1.0
P = np.array(VALUES) / 255.0


def _run(env, steps):
    env.reset(seed=0)
    out = []
    for _ in range(steps):
        out.append(env.step(np.zeros(1, np.float32)))
    return out


def test_binary_mode_adds_weight_above_threshold():
    env = RewardWrapper(ScriptedEnv(VALUES, rewards=[0, 0, 0, 1]), PixelRM(), weight=0.5, mode="binary", threshold=0.5)
    rewards = [r for _, r, *_ in _run(env, 4)]
    np.testing.assert_allclose(rewards, [0.0, 0.5, 0.0, 1.5])


def test_prob_mode_adds_weighted_score():
    env = RewardWrapper(ScriptedEnv(VALUES), PixelRM(), weight=0.1, mode="prob")
    results = _run(env, 4)
    np.testing.assert_allclose([r for _, r, *_ in results], 0.1 * P[1:], rtol=1e-6)
    info = results[1][4]
    assert info[keys.ENV_REWARD] == 0.0 and info[keys.PRM_SCORE] == pytest.approx(0.6)
    assert info[keys.PRM_REWARD] == pytest.approx(0.06)


def test_potential_mode_uses_the_reset_frame_and_zero_terminal_potential():
    gamma, weight = 0.9, 2.0
    env = RewardWrapper(ScriptedEnv(VALUES, terminate_at=4), PixelRM(), weight=weight, mode="potential", gamma=gamma)
    rewards = [r for _, r, *_ in _run(env, 4)]
    expected = [weight * (gamma * P[t + 1] - P[t]) for t in range(3)]
    expected.append(weight * (gamma * 0.0 - P[3]))  # terminated: the terminal potential is 0
    np.testing.assert_allclose(rewards, expected, rtol=1e-6)


def test_potential_mode_bootstraps_truncation_with_the_score():
    env = RewardWrapper(ScriptedEnv(VALUES, truncate_at=2), PixelRM(), weight=1.0, mode="potential", gamma=1.0)
    rewards = [r for _, r, *_ in _run(env, 2)]
    np.testing.assert_allclose(rewards, [P[1] - P[0], P[2] - P[1]], rtol=1e-6)


def test_termination_flags_and_env_reward_are_untouched():
    scripted = ScriptedEnv(VALUES, rewards=[0, 0, 1, 0], terminate_at=3)
    env = RewardWrapper(scripted, PixelRM(), weight=1.0, mode="prob")
    results = _run(env, 3)
    assert [(te, tr) for _, _, te, tr, _ in results] == [(False, False), (False, False), (True, False)]
    assert [info[keys.ENV_REWARD] for *_, info in results] == [0, 0, 1]


def test_score_every_reuses_the_last_score_and_scores_the_last_step():
    prm = PixelRM()
    env = RewardWrapper(ScriptedEnv(VALUES, truncate_at=3), prm, weight=1.0, mode="prob", score_every=2)
    results = _run(env, 3)
    scores = [info[keys.PRM_SCORE] for *_, info in results]
    np.testing.assert_allclose(scores, [0.0, P[2], P[3]], rtol=1e-6)  # step 1 holds the reset value 0
    assert prm.calls == 2  # steps 2 and 3 (the episode's last)


def test_score_window_averages_the_episodes_last_scores_and_restarts_at_reset():
    env = RewardWrapper(ScriptedEnv(VALUES, truncate_at=4), PixelRM(), weight=1.0, mode="prob", window=2)
    scores = [info[keys.PRM_SCORE] for *_, info in _run(env, 4)]
    np.testing.assert_allclose(scores, [P[1], (P[1] + P[2]) / 2, (P[2] + P[3]) / 2, (P[3] + P[4]) / 2])
    again = [info[keys.PRM_SCORE] for *_, info in _run(env, 2)]  # a new episode: nothing carried over
    np.testing.assert_allclose(again, [P[1], (P[1] + P[2]) / 2])
    # potential mode scores the reset frame: it opens the window
    env = RewardWrapper(ScriptedEnv(VALUES, truncate_at=4), PixelRM(), weight=1.0, mode="potential", window=2, gamma=1)
    rewards = [r for _, r, *_ in _run(env, 2)]
    mean = [P[0], (P[0] + P[1]) / 2, (P[1] + P[2]) / 2]
    np.testing.assert_allclose(rewards, [mean[1] - mean[0], mean[2] - mean[1]])


def test_the_prm_sees_the_frame_after_the_action():
    prm = PixelRM()
    env = RewardWrapper(ScriptedEnv(VALUES), prm, weight=1.0, mode="prob")
    _, reward, *_ = _run(env, 1)[0]
    assert reward == pytest.approx(P[1])


@pytest.mark.parametrize("weight", [-0.1, float("nan"), float("inf")])
def test_bad_weight_is_rejected(weight):
    with pytest.raises(ValueError, match="prm_reward_weight"):
        RewardWrapper(ScriptedEnv(VALUES), PixelRM(), weight=weight)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"mode": "sparse"}, ValueError),
        ({"threshold": 2.0}, ValueError),
        ({"gamma": -1.0}, ValueError),
        ({"score_every": 0}, ValueError),
        ({"window": 0}, ValueError),
        ({"weight": "0.1"}, TypeError),
    ],
)
def test_bad_shaping_arguments(kwargs, error):
    with pytest.raises(error):
        RewardWrapper(ScriptedEnv(VALUES), PixelRM(), **kwargs)


def test_prm_must_follow_the_contract():
    with pytest.raises(TypeError, match="ProcessRewardModel"):
        RewardWrapper(ScriptedEnv(VALUES), lambda frames: frames)


def test_env_without_instruction_gets_a_clear_error():
    env = gym.make("Pusher-v5", render_mode="rgb_array", width=32, height=32)
    wrapped = RewardWrapper(env, DummyRM())
    with pytest.raises(ValueError, match="AddInstruction"):
        wrapped.reset(seed=0)
    env.close()


def test_works_on_our_task_with_a_real_env_and_logs(caplog):
    import envs  # noqa: F401

    with caplog.at_level(logging.INFO, logger="vla_rl.prm"):
        env = RewardWrapper(gym.make("VLARL/Reach-v0", image_size=32), PixelRM(), weight=0.1, log_every=2)
        env.reset(seed=0)
        for _ in range(4):
            _, reward, _, _, info = env.step(np.zeros(7, np.float32))
            assert reward == pytest.approx(info[keys.ENV_REWARD] + info[keys.PRM_REWARD])
    assert caplog.text.count("weighted PRM reward") == 2
    env.close()
