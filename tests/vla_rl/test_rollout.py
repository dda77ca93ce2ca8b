"""Episodic group rollouts (GRPO, RLOO): one episode per sub-env, one initial state per group."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from tests.policies import tiny_vla_policy
from vla_rl import keys
from vla_rl.rollout import Rollout, assign_tasks

pytestmark = pytest.mark.timeout(300)


def env_fns(assigned, limits):
    def make(task, limit):
        return lambda: gym.make(envs.task_id(task), image_size=56, max_episode_steps=limit)

    return [make(task, limit) for task, limit in zip(assigned, limits, strict=True)]


def test_group_rollouts_run_one_episode_per_env_from_shared_initial_states(tiny_qwen):
    policy = tiny_vla_policy(tiny_qwen, max_batch=4).eval()
    assigned = assign_tasks(["reach", "push"], 4, group_size=2)
    assert assigned == ["reach", "reach", "push", "push"]
    limits = [3, 5, 4, 2]  # episodes of different lengths in one rollout
    env = gym.vector.SyncVectorEnv(env_fns(assigned, limits))
    rollout = Rollout(env, policy, assigned, num_steps=5, seed=5, group_size=2)
    torch.manual_seed(0)
    batches = [rollout.collect(), rollout.collect()]
    for batch in batches:
        assert batch.valid.shape == (5, 4)  # the longest episode, not num_steps + 1
        assert batch.valid.sum(0).tolist() == limits  # each column: its episode, then nothing
        for i, limit in enumerate(limits):
            assert batch.valid[:limit, i].all() and batch.truncated[limit - 1, i]
        assert sorted(e["length"] for e in batch.episodes) == sorted(limits)
        assert [e["task"] for e in batch.episodes].count("push") == 2
        # One initial state per group: same first frame and instruction inside it, another across.
        for a, b in ((0, 1), (2, 3)):
            assert np.array_equal(batch.images[0, a], batch.images[0, b])
            assert batch.instructions[0][a] == batch.instructions[0][b]
        assert not np.array_equal(batch.images[0, 0], batch.images[0, 2])
        # Sampled actions: the episodes of a group part ways.
        assert not np.array_equal(batch.images[2, 0], batch.images[2, 1])
    # Every rollout starts from fresh initial states.
    assert not np.array_equal(batches[0].images[0, 0], batches[1].images[0, 0])
    env.close()


def test_an_episode_longer_than_the_bound_is_an_error(tiny_qwen):
    policy = tiny_vla_policy(tiny_qwen, max_batch=4).eval()
    env = gym.vector.SyncVectorEnv(env_fns(["reach", "reach"], [4, 4]))
    with pytest.raises(ValueError, match="divide"):
        Rollout(env, policy, ["reach", "reach"], num_steps=4, group_size=3)
    rollout = Rollout(env, policy, ["reach", "reach"], num_steps=2, group_size=2)
    with pytest.raises(RuntimeError, match="ran past 2 steps"):
        rollout.collect()
    env.close()


def test_rollout_records_which_episodes_were_handed_over(tiny_qwen):
    from vla_rl.distributed.env_workers import sync_env
    from vla_rl.rollout import rollout_metrics, task_env_fns

    policy = tiny_vla_policy(tiny_qwen, max_batch=4).eval()
    assigned = ["reach", "push"]
    handover = {"tasks": ["push"], "max_steps": 5}
    env = gym.vector.SyncVectorEnv(task_env_fns(assigned, 56, max_env_length=8, handover=handover))
    assert sync_env(env).call("set_handover_probability", 1.0) == (None, None)
    rollout = Rollout(env, policy, assigned, num_steps=20, seed=11)
    torch.manual_seed(0)
    batch = rollout.collect()
    push = [e for e in batch.episodes if e["task"] == "push"]
    reach = [e for e in batch.episodes if e["task"] == "reach"]
    assert push and reach
    assert all(1 <= e["handover_steps"] <= 5 for e in push)  # push hands over, reach does not
    assert all(e["handover_steps"] == 0 for e in reach)
    # A handed-over episode has the expert's steps fewer left of the 8-step limit.
    assert all(e["length"] == 8 - e["handover_steps"] for e in push if not e["success"])
    metrics = rollout_metrics(batch, 1.0)
    assert metrics["rollout/handover_episodes"] == len(push)
    assert metrics["rollout/success_rate/from_start"] == np.mean([e["success"] for e in reach])
    env.close()


def test_env_options_follow_the_policys_view():
    """A policy that sees another view gets it from every env; the PRM's frame is added only
    where the PRM's camera is not that view (a front-camera PRM beside a wrist policy)."""
    from vla_rl.rollout import env_options

    assert env_options(56, camera=keys.FRONT_CAMERA) == env_options(56) == {"image_size": 56}
    both = env_options(56, prm_camera=keys.FRONT_CAMERA, camera=keys.FRONT_WRIST)
    assert both == {"image_size": 56, "camera": keys.FRONT_WRIST, "prm_camera": keys.FRONT_CAMERA}
    assert "prm_camera" not in env_options(56, prm_camera=keys.WRIST_CAMERA, camera=keys.WRIST_CAMERA)


def test_prm_frames_come_from_the_prms_camera():
    from vla_rl.rollout import env_options, task_env_fns

    assert "prm_camera" not in env_options(56, prm_camera=keys.FRONT_CAMERA)  # the policy's own view
    (with_prm,) = task_env_fns(["push"], 32, prm_camera=keys.WRIST_CAMERA)
    (env, wrist) = with_prm(), gym.make(envs.task_id("push"), image_size=32, camera=keys.WRIST_CAMERA)
    try:
        observation, expected = env.reset(seed=4)[0], wrist.reset(seed=4)[0]
        assert observation[keys.IMAGE].shape == (32, 32, 3)
        np.testing.assert_array_equal(observation[keys.PRM_IMAGE], expected[keys.IMAGE])
    finally:
        env.close()
        wrist.close()
