"""Env workers as Ray actors: same batch as the in-process vector env, and a crashed worker
does not stop the rollout."""

import os
import signal
import time

import gymnasium as gym
import numpy as np
import pytest
import torch

from reward.vector import VectorRewardWrapper
from vla_rl.distributed.env_workers import RayVectorEnv, concat_infos
from vla_rl.distributed.prm_server import PRMSpec, start_prm_server
from vla_rl.rollout import Rollout, make_env_fns

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.timeout(600)
TASKS = ["reach", "push"]
SHAPING = {"weight": 0.5, "mode": "prob", "deferred": True}


def collect_twice(env, policy, assigned):
    rollout = Rollout(env, policy, assigned, num_steps=7, temperature=1.0, seed=11)
    torch.manual_seed(0)
    return [rollout.collect() for _ in range(2)]


def test_ray_rollout_equals_the_in_process_rollout(ray_cluster, tiny_policy):
    fns, assigned = make_env_fns(TASKS, 4, 56, max_env_length=5)
    spec = PRMSpec("oracle_progress")
    local = VectorRewardWrapper(gym.vector.SyncVectorEnv(fns), spec.build(), **SHAPING)
    expected = collect_twice(local, tiny_policy, assigned)
    local.close()
    server, client = start_prm_server(spec, max_batch_size=64, max_wait_ms=50)
    remote = RayVectorEnv(assigned, 56, 5, num_workers=2, prm=client, shaping=SHAPING)
    try:
        got = collect_twice(remote, tiny_policy, assigned)
        stats = ray.get(server.stats.remote())
    finally:
        remote.close()
        ray.kill(server)
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_array_equal(a.images, b.images)
        torch.testing.assert_close(a.token_ids, b.token_ids, rtol=0, atol=0)
        for name in ("env_rewards", "prm_rewards", "terminated", "truncated", "valid"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        np.testing.assert_array_equal(a.prm_scores, b.prm_scores)
        assert a.episodes == b.episodes
    assert any(batch.terminated.any() or batch.truncated.any() for batch in got)  # episodes crossed resets
    assert np.isfinite(got[0].prm_scores[got[0].valid]).all() and (got[0].prm_rewards != 0).any()
    # Both workers flushed concurrently into a server that merges requests: fewer PRM calls than requests.
    assert stats["requests"] >= 4 and stats["calls"] < stats["requests"]


class KillWorkerAt(gym.vector.VectorWrapper):
    """Kills env worker ``worker`` (SIGKILL to its process) right before step ``at``."""

    def __init__(self, env, at: int, worker: int):
        super().__init__(env)
        self.at, self.worker, self.steps = at, worker, 0
        self.flush, self.deferred = env.flush, env.deferred

    def step(self, actions):
        if self.steps == self.at:
            os.kill(self.env.worker_pids()[self.worker], signal.SIGKILL)
        self.steps += 1
        return self.env.step(actions)


def test_a_killed_worker_is_restarted_and_the_rollout_goes_on(ray_cluster, tiny_policy):
    assigned = ["reach", "push", "reach", "push"]
    server, client = start_prm_server(PRMSpec("oracle_progress"), max_batch_size=16, max_wait_ms=5)
    remote = RayVectorEnv(assigned, 56, 0, num_workers=2, prm=client, shaping=SHAPING)
    env = KillWorkerAt(remote, at=4, worker=1)
    rollout = Rollout(env, tiny_policy, assigned, num_steps=8, seed=3)
    try:
        torch.manual_seed(0)
        first = rollout.collect()
        second = rollout.collect()
    finally:
        env.close()
        ray.kill(server)
    assert remote.restarts == [0, 1]
    assert first.dropped_episodes == 2 and remote.dropped_episodes == 2
    # Worker 1 holds sub-envs 2 and 3: their episode (steps 0..4) is dropped, step 5 is the reset step.
    assert not first.valid[:6, 2:].any() and first.valid[6:, 2:].all()
    assert first.valid[:, :2].all()  # worker 0 is untouched
    assert remote.unscored_steps == 6 * 2  # the restarted worker's deferred records before the reset
    assert np.isfinite(first.prm_scores[6:, 2:]).all()
    # The next rollout runs on the restarted worker as usual.
    assert second.valid.all() and np.isfinite(second.prm_scores).all() and second.dropped_episodes == 0
    assert len({frame.tobytes() for frame in second.images[:, 3]}) > 1  # the restarted env moves


def test_concat_infos_fills_missing_keys_with_false_masks():
    parts = [
        {"success": np.array([True]), "_success": np.array([True])},
        {"progress": np.array([0.5, 0.2]), "_progress": np.array([True, False])},
    ]
    merged = concat_infos(parts, [1, 2])
    np.testing.assert_array_equal(merged["success"], [True, False, False])
    np.testing.assert_array_equal(merged["_success"], [True, False, False])
    np.testing.assert_array_equal(merged["progress"], [0.0, 0.5, 0.2])
    np.testing.assert_array_equal(merged["_progress"], [False, True, False])


def test_workers_start_inside_a_placement_group(ray_cluster):
    from vla_rl.distributed.ray_setup import ResourcePlan, placement

    plan = ResourcePlan([{"num_cpus": 0.5}] * 2, {"num_cpus": 0.5}, bundles=[{"CPU": 0.5}] * 3)
    worker_options, prm_options, group = placement(plan)
    assert "scheduling_strategy" in prm_options
    env = RayVectorEnv(["reach", "push"], 32, 3, num_workers=2, actor_options=worker_options)
    try:
        observations, infos = env.reset(seed=[5, 6])
        assert observations["image"].shape == (2, 32, 32, 3) and list(infos["instruction"])
    finally:
        env.close()
        ray.util.remove_placement_group(group)
    for _ in range(100):  # the reservation is released (asynchronously)
        if ray.available_resources().get("CPU", 0) >= 1.5:
            break
        time.sleep(0.1)
    assert ray.available_resources().get("CPU", 0) >= 1.5


def test_ray_env_sets_the_handover_probability_on_every_sub_env(ray_cluster):
    from vla_rl import keys

    handover = {"tasks": ["push"], "max_steps": 4}
    remote = RayVectorEnv(["reach", "push", "push"], 32, 10, num_workers=2, handover=handover)
    try:
        assert remote.call("set_handover_probability", 1.0) == (None, None, None)
        assert remote.call("get_wrapper_attr", "probability") == (0.0, 1.0, 1.0)  # reach does not hand over
        _, infos = remote.reset(seed=[1, 2, 3])
        steps = infos[keys.HANDOVER_STEPS]
        assert steps[0] == 0 and all(1 <= s <= 4 for s in steps[1:])
    finally:
        remote.close()
