"""The PPO trainer with Ray env workers and a PRM server gives the same run as without Ray."""

import json

import pytest

from tests.vla_rl.test_trainer import one_rewarded_iteration
from vla_rl.trainer import train

pytestmark = pytest.mark.timeout(600)


def metrics(run_dir):
    with open(f"{run_dir}/metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def test_ray_run_equals_in_process_run(ray_cluster, tiny_qwen, tmp_path):
    runs = {}
    for use_ray in ("False", "True"):
        config = one_rewarded_iteration(
            tiny_qwen,
            tmp_path / use_ray,
            "--use_ray",
            use_ray,
            "--num_env_workers",
            "2",
            "--task_ids",
            "reach",
            "push",
            "--num_envs",
            "4",
        )
        assert config.scale.backends.use_ray == (use_ray == "True")
        runs[use_ray] = train(config)
    local, remote = (metrics(runs[k]["run_dir"]) for k in ("False", "True"))
    assert len(local) == len(remote) == 1
    compared = [k for k in local[0] if k.startswith(("rollout/", "reward/", "train/"))]
    assert "train/policy_loss" in compared and "rollout/prm_score_mean" in compared
    for key in compared:
        assert remote[0][key] == pytest.approx(local[0][key], rel=1e-6, abs=1e-7), key
    assert local[0]["train/policy_loss"] != 0.0  # the dense reward gave the update a signal
    assert remote[0]["perf/env_worker_restarts"] == 0.0 and "perf/env_worker_restarts" not in local[0]
