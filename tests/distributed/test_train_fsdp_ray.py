"""FSDP with Ray: torchrun ranks that step Ray env workers in one shared cluster with one PRM
server, and FSDP ranks launched as Ray Train workers (``--fsdp_ranks``)."""

import json
import os
import sys

import pytest
import torch

from tests.distributed.test_train_fsdp import fsdp_run_flags, launch, torchrun

pytestmark = pytest.mark.timeout(600)


def ray_flags(checkpoint: str, root) -> list[str]:
    return fsdp_run_flags(checkpoint, root) + ["--use_ray", "True", "--num_env_workers", "1"]


def check_run(result, run_dir, tiny_qwen):
    """One logged iteration counting both ranks' episodes, one evaluation, a trained checkpoint."""
    from vla_rl.policy.checkpoint import load_policy

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    assert len(rows) == 1 and rows[0]["rollout/episodes"] == 4.0  # 2 ranks x 2 envs, one 5-step episode each
    assert rows[0]["perf/env_worker_restarts"] == 0.0  # the Ray env workers stepped the envs
    assert rows[0]["reward/prm_reward_mean"] > 0.0  # the shared PRM server scored the frames
    summary = json.load(open(run_dir / "summary.json"))
    assert summary["eval"]["tasks"]["reach"]["episodes"] == 1
    trained = load_policy(os.path.join(summary["final_checkpoint"], "policy")).model.state_dict()
    start = load_policy(tiny_qwen).model.state_dict()
    assert any(not torch.equal(trained[k], start[k]) for k in start)


def test_torchrun_ranks_share_one_ray_cluster_and_prm_server(tiny_qwen, tmp_path):
    result = torchrun(ray_flags(tiny_qwen, tmp_path))
    out = result.stdout + result.stderr
    assert "env workers: Ray actors" in out and "FSDP over 2 processes (no CUDA device; 2 torchrun ranks)" in out
    assert "1 env worker actors per rank, PRM server (oracle_progress)" in out
    assert out.count("Connected to Ray cluster") >= 1  # rank 1 joined the cluster rank 0 started
    check_run(result, tmp_path / "run", tiny_qwen)


def test_fsdp_ranks_launched_as_ray_train_workers(tiny_qwen, tmp_path):
    result = launch([sys.executable, "-m", "vla_rl.train", *ray_flags(tiny_qwen, tmp_path), "--fsdp_ranks", "2"])
    out = result.stdout + result.stderr
    assert "launching 2 FSDP ranks as Ray Train workers" in out
    assert "FSDP over 2 processes (no CUDA device; 2 Ray Train ranks)" in out
    check_run(result, tmp_path / "run", tiny_qwen)


def test_fsdp_ranks_flag_is_checked_before_anything_starts(capsys):
    from vla_rl.config import parse_config

    for value, message in (("1", "--fsdp_ranks must be 0"), ("-2", "--fsdp_ranks must be 0")):
        with pytest.raises(SystemExit):
            parse_config(["--fsdp_ranks", value])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_config(["--fsdp_ranks", "2", "--fsdp", "False"])
    assert "--fsdp False with --fsdp_ranks 2" in capsys.readouterr().err
