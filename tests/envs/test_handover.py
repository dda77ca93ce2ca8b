"""ExpertHandover: episodes that start part-way along the scripted expert's trajectory."""

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.wrappers import ExpertHandover
from vla_rl import keys


def _push(**kwargs):
    return ExpertHandover(gym.make(envs.task_id("push"), image_size=32), **kwargs)


def test_a_handed_over_episode_starts_where_the_expert_left_it():
    env = _push(probability=1.0, max_steps=12)
    plain = gym.make(envs.task_id("push"), image_size=32)
    observation, info = env.reset(seed=7)
    steps = info[keys.HANDOVER_STEPS]
    assert 1 <= steps <= 12
    start, _ = plain.reset(seed=7)
    assert not np.array_equal(observation[keys.IMAGE], start[keys.IMAGE])  # the arm has moved
    # The expert's steps count towards the step limit: the episode has that many fewer left.
    assert env.get_wrapper_attr("_elapsed_steps") == steps
    limit = env.spec.max_episode_steps
    taken = 0
    for _ in range(limit - steps):
        *_, terminated, truncated, _ = env.step(np.zeros(7, np.float32))
        taken += 1
        assert not terminated
        if truncated:
            break
    assert truncated and taken == limit - steps
    # Seeded: the same seed gives the same hand-over and the same frame.
    again, again_info = _push(probability=1.0, max_steps=12).reset(seed=7)
    assert again_info[keys.HANDOVER_STEPS] == steps
    assert np.array_equal(again[keys.IMAGE], observation[keys.IMAGE])
    for e in (env, plain):
        e.close()


def test_probability_zero_and_disabled_wrappers_are_normal_starts():
    plain = gym.make(envs.task_id("push"), image_size=32)
    expected, _ = plain.reset(seed=3)
    for env in (_push(probability=0.0), _push(probability=1.0, enabled=False)):
        env.set_handover_probability(1.0)  # no effect on a disabled wrapper
        if env.enabled:
            env.set_handover_probability(0.0)
        observation, info = env.reset(seed=3)
        assert info[keys.HANDOVER_STEPS] == 0
        assert np.array_equal(observation[keys.IMAGE], expected[keys.IMAGE])
        env.close()
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        _push().set_handover_probability(1.5)
    with pytest.raises(ValueError, match="max_steps"):
        _push(max_steps=0)


def test_an_episode_the_expert_finishes_starts_again_normally():
    # The reach expert touches its block in well under 200 steps: that episode is not handed over.
    env = ExpertHandover(gym.make(envs.task_id("reach"), image_size=32), probability=1.0, max_steps=200)
    counts = []
    for seed in range(6):
        observation, info = env.reset(seed=seed)
        counts.append(info[keys.HANDOVER_STEPS])
        if info[keys.HANDOVER_STEPS] == 0:
            assert not info[keys.SUCCESS] and env.get_wrapper_attr("_elapsed_steps") == 0
    assert 0 in counts and any(c > 0 for c in counts)
    env.close()
