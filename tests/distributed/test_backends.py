"""Choosing Ray / vLLM / FSDP from the auto flags, and sizing the Ray actors."""

import os

import pytest

from vla_rl.config import parse_config
from vla_rl.distributed import backends
from vla_rl.distributed.backends import resolve_backends
from vla_rl.distributed.ray_setup import plan_resources


def test_auto_uses_ray_only_where_it_helps(monkeypatch):
    monkeypatch.setattr(backends, "_cuda", lambda: False)
    monkeypatch.setattr(backends, "installed", lambda name: name == "ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    small = resolve_backends("auto", "auto", "auto", "auto")
    assert not small.use_ray and "Ray would not help" in small.describe()
    assert small.rollout == small.prm == "hf" and "no CUDA device" in small.describe()
    assert resolve_backends("auto", "auto", "auto", "auto", ray_address="10.0.0.1:6379").use_ray
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert resolve_backends("auto", "hf", "hf", "auto").use_ray
    assert not resolve_backends("False", "hf", "hf", "auto").use_ray


def test_auto_picks_vllm_with_cuda_and_vllm(monkeypatch):
    monkeypatch.setattr(backends, "_cuda", lambda: True)
    monkeypatch.setattr(backends, "installed", lambda name: True)
    chosen = resolve_backends("False", "auto", "hf", "auto")
    assert (chosen.rollout, chosen.prm) == ("vllm", "hf")
    assert "rollout: vLLM; PRM: transformers" in chosen.describe()


def test_explicit_choices_that_cannot_work_fail_with_the_fix(monkeypatch, capsys):
    monkeypatch.setattr(backends, "_cuda", lambda: False)
    monkeypatch.setattr(backends, "installed", lambda name: name == "ray")
    with pytest.raises(ImportError, match=r"--prm_backend vllm: vLLM is not installed: pip install '.\[vllm\]'"):
        resolve_backends("auto", "hf", "vllm", "auto")
    monkeypatch.setattr(backends, "installed", lambda name: True)
    with pytest.raises(ValueError, match="--rollout_backend vllm needs a CUDA device"):
        resolve_backends("auto", "vllm", "hf", "auto")
    with pytest.raises(ValueError, match="--fsdp True needs several processes: torchrun"):
        resolve_backends("auto", "hf", "hf", "True")
    monkeypatch.setattr(backends, "installed", lambda name: name != "ray")
    with pytest.raises(ImportError, match="--fsdp_ranks 2 launches Ray Train workers: pip install"):
        resolve_backends("False", "hf", "hf", "auto", fsdp_ranks=2)
    monkeypatch.setattr(backends, "installed", lambda name: True)
    with pytest.raises(ValueError, match="--use_ray must be one of"):
        resolve_backends("yes", "hf", "hf", "auto")
    monkeypatch.setenv("WORLD_SIZE", "2")  # a torchrun launch
    with pytest.raises(ValueError, match="--fsdp False but torchrun started 2 processes"):
        resolve_backends("auto", "hf", "hf", "False")
    with pytest.raises(ValueError, match="--fsdp_ranks 2 under torchrun"):
        resolve_backends("auto", "hf", "hf", "auto", fsdp_ranks=2)
    monkeypatch.setattr(backends, "_cuda", lambda: True)
    with pytest.raises(ValueError, match="--rollout_backend vllm with FSDP is not supported"):
        resolve_backends("False", "vllm", "hf", "True")


def test_a_torchrun_launch_trains_with_fsdp_and_ray_env_workers_where_ray_helps(monkeypatch):
    monkeypatch.setattr(backends, "_cuda", lambda: True)
    monkeypatch.setattr(backends, "installed", lambda name: True)
    monkeypatch.setenv("WORLD_SIZE", "4")
    chosen = resolve_backends("auto", "auto", "auto", "auto")
    assert chosen.fsdp and chosen.use_ray and chosen.ranks == 4  # each rank steps its own Ray env workers
    assert (chosen.rollout, chosen.prm) == ("hf", "vllm")  # the vLLM rollout is not wired to FSDP ranks
    assert "training: FSDP over 4 processes" in chosen.describe()
    assert "FSDP ranks roll out with transformers" in chosen.describe()
    monkeypatch.setattr(backends, "_cuda", lambda: False)
    monkeypatch.setattr(backends.os, "cpu_count", lambda: 2)
    assert not resolve_backends("auto", "hf", "hf", "auto").use_ray  # 2 CPUs: in-process envs per rank
    assert resolve_backends("True", "hf", "hf", "auto").use_ray


def test_fsdp_ranks_launch_ray_train_workers_from_one_process(monkeypatch):
    monkeypatch.setattr(backends, "_cuda", lambda: False)
    monkeypatch.setattr(backends, "installed", lambda name: name == "ray")
    chosen = resolve_backends("auto", "auto", "auto", "auto", fsdp_ranks=3)
    assert chosen.fsdp and chosen.launch_ranks == 3 and chosen.ranks == 3
    assert "FSDP over 3 processes (" in chosen.describe() and "3 Ray Train workers (--fsdp_ranks)" in chosen.describe()
    assert resolve_backends("auto", "auto", "auto", "auto").launch_ranks == 0


def test_flags_are_validated_before_anything_loads(capsys):
    for flags, message in (
        (["--rollout_backend", "trt"], "--rollout_backend must be one of"),
        (["--num_env_workers", "9", "--num_envs", "8"], "--num_env_workers (9) must be <= --num_envs"),
        (["--prm_server_wait_ms", "-1"], "--prm_server_wait_ms must be >= 0"),
        (["--fsdp", "True"], "--fsdp True needs several processes"),
    ):
        with pytest.raises(SystemExit):
            parse_config(flags)
        assert message in capsys.readouterr().err


def test_actor_shares_always_fit_the_cluster():
    plan = plan_resources(cpus=2, gpus=0, num_workers=2, prm_server=True, prm_on_gpu=True)
    total = sum(o["num_cpus"] for o in plan.worker_options) + plan.prm_options["num_cpus"]
    assert total <= 2 and plan.bundles is None and "num_gpus" not in plan.prm_options
    plan = plan_resources(cpus=16, gpus=1, num_workers=4, prm_server=True, prm_on_gpu=True)
    assert [o["num_cpus"] for o in plan.worker_options] == [1.0] * 4
    assert plan.prm_options == {"num_cpus": 1.0, "num_gpus": 1}
    assert plan.bundles == [{"CPU": 1.0}] * 4 + [{"CPU": 1.0, "GPU": 1}]
    with pytest.raises(ValueError, match="--num_env_workers"):
        plan_resources(cpus=2, gpus=0, num_workers=0, prm_server=False, prm_on_gpu=False)
