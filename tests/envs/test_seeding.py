"""Seeding: same seed, same scene and trajectory; different seeds, different scenes."""

import numpy as np
import pytest

import envs
from vla_rl import keys

TASKS = sorted(envs.TASKS)


def _rollout(env, seed, actions):
    obs, info = env.reset(seed=seed)
    frames, states, infos = [obs[keys.IMAGE]], [obs[keys.STATE]], [info]
    for action in actions:
        obs, _, terminated, truncated, info = env.step(action)
        frames.append(obs[keys.IMAGE])
        states.append(obs[keys.STATE])
        infos.append(info)
        if terminated or truncated:
            break
    return np.stack(frames), np.stack(states), infos


@pytest.mark.parametrize("task", TASKS)
def test_same_seed_same_first_frame_and_trajectory(make_env, task):
    env_a, env_b = make_env(task, image_size=48), make_env(task, image_size=48)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(25, 7)).astype(np.float32)
    frames_a, states_a, infos_a = _rollout(env_a, 7, actions)
    _rollout(env_a, 99, actions[:5])  # a different episode in between must not leak into the next
    frames_b, states_b, infos_b = _rollout(env_b, 7, actions)
    frames_c, states_c, _ = _rollout(env_a, 7, actions)
    np.testing.assert_array_equal(frames_a, frames_b)
    np.testing.assert_array_equal(states_a, states_b)
    np.testing.assert_array_equal(frames_a, frames_c)
    np.testing.assert_array_equal(states_a, states_c)
    assert [i[keys.INSTRUCTION] for i in infos_a] == [i[keys.INSTRUCTION] for i in infos_b]
    assert [i[keys.PROGRESS] for i in infos_a] == [i[keys.PROGRESS] for i in infos_b]


@pytest.mark.parametrize("task", TASKS)
def test_seeds_randomise_layout_and_instruction(make_env, task):
    env = make_env(task, image_size=32, render_obs=False)
    instructions, layouts = set(), set()
    for seed in range(12):
        env.reset(seed=seed)
        u = env.unwrapped
        instructions.add(u.instruction)
        layouts.add(tuple(np.round(u.blocks.pos(0)[:2], 3)))
    assert len(instructions) >= 4, instructions
    assert len(layouts) == 12
