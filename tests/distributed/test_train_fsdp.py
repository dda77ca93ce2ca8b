"""PPO with FSDP over 2 gloo ranks: the update equals single-process training on the union of
the ranks' batches, and ``torchrun -m vla_rl.train`` runs end to end."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from tests.distributed.test_fsdp import free_port
from vla_rl.config import parse_config
from vla_rl.distributed.ranks import Ranks

pytestmark = pytest.mark.timeout(600)
RNG = np.random.default_rng(11)
PER_RANK = 6
VALID = (5, 2)  # valid samples of rank 0 and rank 1: rank 1 pads its forward passes
TASKS = ["touch the red block", "touch the blue block", "touch the green block"]


def rank_batch(rank: int) -> tuple:
    """``(batch, advantages, returns)`` of one rank: one step of ``PER_RANK`` envs."""
    generator = np.random.default_rng(100 + rank)
    valid = np.zeros((1, PER_RANK), bool)
    valid[0, : VALID[rank]] = True
    batch = SimpleNamespace(
        valid=valid,
        images=generator.integers(0, 256, (1, PER_RANK, 56, 56, 3), dtype=np.uint8),
        states=generator.normal(size=(1, PER_RANK, 8)).astype(np.float32),
        instructions=[[TASKS[i % 3] for i in range(PER_RANK)]],
        token_ids=None,
        logprobs=torch.from_numpy(generator.normal(-30.0, 1.0, (1, PER_RANK))).float(),
        values=torch.from_numpy(generator.normal(0.0, 0.1, (1, PER_RANK))).float(),
    )
    advantages = torch.from_numpy(generator.normal(size=(1, PER_RANK))).float()
    returns = torch.from_numpy(generator.normal(size=(1, PER_RANK))).float()
    return batch, advantages, returns


def union(parts: list) -> tuple:
    """The ranks' batches side by side, as one single-process batch."""
    batches = [p[0] for p in parts]
    batch = SimpleNamespace(
        valid=np.concatenate([b.valid for b in batches], 1),
        images=np.concatenate([b.images for b in batches], 1),
        states=np.concatenate([b.states for b in batches], 1),
        instructions=[sum((b.instructions[0] for b in batches), [])],
        token_ids=torch.cat([b.token_ids for b in batches], 1),
        logprobs=torch.cat([b.logprobs for b in batches], 1),
        values=torch.cat([b.values for b in batches], 1),
    )
    return batch, torch.cat([p[1] for p in parts], 1), torch.cat([p[2] for p in parts], 1)


def update_config(checkpoint: str):
    return parse_config(
        ["--vla_path", checkpoint, "--num_epochs", "1", "--num_minibatches", "1"]
        + ["--local_rollout_forward_batch_size", "2", "--max_grad_norm", "0.5", "--norm_adv", "False"]
    )


def policy_and_optimizer(checkpoint: str, lora: bool = False):
    from tests.policies import tiny_vla_policy
    from vla_rl.checkpointing import apply_lora

    torch.manual_seed(0)
    policy = tiny_vla_policy(checkpoint, max_batch=2)
    torch.nn.init.normal_(policy.value_head.weight, std=0.01)
    if lora:
        apply_lora(policy, rank=4, alpha=8)
        for name, param in policy.model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero; non-zero B gives A a gradient in the first step
                torch.nn.init.normal_(param, std=0.02)
    return policy


def optimizer_of(policy):
    return torch.optim.AdamW(list(policy.model.parameters()) + list(policy.value_head.parameters()), lr=1e-3)


def with_tokens(part, policy, rank):
    generator = torch.Generator().manual_seed(7 + rank)
    part[0].token_ids = policy.action_tokenizer.first_id + torch.randint(0, 256, (1, PER_RANK, 7), generator=generator)
    return part


def fsdp_update(rank, world, port, checkpoint, out, lora):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from vla_rl.distributed.fsdp import (
        full_state_dicts,
        init_distributed,
        lora_template,
        save_full_policy,
        shard_policy,
    )
    from vla_rl.trainer import ppo_update

    init_distributed()
    policy = policy_and_optimizer(checkpoint, lora)
    template = lora_template(policy) if lora else None
    policy = shard_policy(policy)
    batch, advantages, returns = with_tokens(rank_batch(rank), policy, rank)
    metrics = ppo_update(
        policy, optimizer_of(policy), batch, advantages, returns, update_config(checkpoint), ranks=Ranks(rank, world)
    )
    model_state, head_state = full_state_dicts(policy)
    if rank == 0:
        torch.save({"metrics": metrics, "model": model_state, "head": head_state}, os.path.join(out, "fsdp.pt"))
    if lora:  # the checkpoint format of a sharded LoRA run: adapter/ and the merged policy/
        for name in ("policy", "adapter"):
            os.makedirs(os.path.join(out, name), exist_ok=True)
        save_full_policy(policy, os.path.join(out, "policy"), template=template, adapter_directory=f"{out}/adapter")
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_fsdp_ppo_update_equals_the_single_process_update_on_the_union(tiny_qwen, tmp_path, lora):
    from vla_rl.trainer import ppo_update

    mp.spawn(fsdp_update, args=(2, free_port(), tiny_qwen, str(tmp_path), lora), nprocs=2, join=True)
    fsdp = torch.load(tmp_path / "fsdp.pt")

    policy = policy_and_optimizer(tiny_qwen, lora)
    start = {k: v.clone() for k, v in policy.model.state_dict().items()}
    batch, advantages, returns = union([with_tokens(rank_batch(r), policy, r) for r in range(2)])
    metrics = ppo_update(policy, optimizer_of(policy), batch, advantages, returns, update_config(tiny_qwen))
    assert set(fsdp["metrics"]) == set(metrics)
    for key, value in metrics.items():
        assert fsdp["metrics"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    changed = 0
    for name, tensor in policy.model.state_dict().items():
        torch.testing.assert_close(fsdp["model"][name], tensor, atol=2e-5, rtol=1e-4, msg=name)
        changed += not torch.equal(start[name], tensor)
    assert changed > 0  # the update did something
    torch.testing.assert_close(fsdp["head"]["weight"], policy.value_head.weight.detach(), atol=2e-5, rtol=1e-4)
    if lora:
        from peft import PeftModel

        from vla_rl.checkpointing import exported_model
        from vla_rl.policy.checkpoint import load_policy

        trained = [n for n, t in policy.model.state_dict().items() if not torch.equal(start[n], t)]
        assert trained and all("lora_" in n for n in trained)  # only the adapter trains; the base stays frozen
        merged = load_policy(str(tmp_path / "policy")).model.state_dict()
        expected = exported_model(policy, lora=True).state_dict()
        assert set(merged) == set(expected)
        for name, tensor in expected.items():
            torch.testing.assert_close(merged[name], tensor, atol=2e-5, rtol=1e-4, msg=name)
        base = policy_and_optimizer(tiny_qwen).model
        adapter = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).state_dict()
        for name in trained:
            torch.testing.assert_close(adapter[name], policy.model.state_dict()[name], atol=2e-5, rtol=1e-4, msg=name)


def fsdp_run_flags(checkpoint: str, root, minibatches: int = 2, eval_episodes: int = 1) -> list[str]:
    """``vla_rl.train`` flags of a one-iteration FSDP run: 2 reach envs per rank, 5-step episodes."""
    flags = ["--vla_path", checkpoint, "--task_ids", "reach", "--num_envs", "2", "--num_steps", "6"]
    flags += ["--max_env_length", "5", "--image_size", "56", "--max_iterations", "1", "--total_episodes", "100"]
    flags += ["--num_minibatches", str(minibatches), "--local_rollout_forward_batch_size", "4"]
    flags += ["--prm_model_name_or_path", "oracle_progress", "--prm_reward_mode", "prob", "--progress", "False"]
    flags += ["--eval_episodes", str(eval_episodes)]
    return flags + ["--run_root_dir", str(root), "--exp_name", "run", "--threads", "1", "--fsdp", "True"]


def launch(command: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(command, capture_output=True, text=True, timeout=500, env=env)


def torchrun(flags: list[str], *extra: str) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 -m vla_rl.train FLAGS EXTRA``."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port"]
    return launch([*launcher, str(free_port()), "-m", "vla_rl.train", *flags, *extra])


def test_torchrun_trains_with_fsdp_end_to_end(tiny_qwen, tmp_path):
    from vla_rl.policy.checkpoint import load_policy

    flags = fsdp_run_flags(tiny_qwen, tmp_path)
    result = torchrun(flags)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "training: FSDP over 2 processes" in result.stdout
    assert result.stdout.count("final evaluation") == 1  # rank 0 alone logs and evaluates
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert len(rows) == 1
    # 2 ranks x 2 envs, each env finishes one 5-step episode in the 6 steps: every rank's episodes count.
    assert rows[0]["rollout/episodes"] == 4.0 and rows[0]["progress/episodes"] == 4
    assert np.isfinite(rows[0]["train/policy_loss"]) and rows[0]["train/policy_loss"] != 0.0
    summary = json.load(open(tmp_path / "run" / "summary.json"))
    assert summary["eval"]["tasks"]["reach"]["episodes"] == 1
    policy = load_policy(os.path.join(summary["final_checkpoint"], "policy"))  # the single-process format
    assert policy.action_tokenizer.action_dim == 7
    start = load_policy(tiny_qwen)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(policy.model.state_dict().values(), start.model.state_dict().values(), strict=True)
    )
    # The checkpoint holds the optimizer state gathered to full tensors, keyed by parameter name,
    # and each rank's RNG state; a resumed torchrun run continues from it.
    saved = torch.load(os.path.join(summary["final_checkpoint"], "trainer_state.pt"), weights_only=False)
    assert saved["fsdp_world_size"] == 2 and len(saved["rng_per_rank"]) == 2
    full_shapes = {f"model.{k}": v.shape for k, v in start.model.state_dict().items()}
    moments = saved["optimizer_full"]["state"]
    assert moments and all(m["exp_avg"].shape == full_shapes.get(k, m["exp_avg"].shape) for k, m in moments.items())
    assert sum(k in full_shapes for k in moments) > 10 and "value_head.weight" in moments
    resumed = torchrun(flags, "--resume", "True", "--max_iterations", "2")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert resumed.stdout.count("resumed from") == 1
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [row["progress/iteration"] for row in rows] == [1, 2] and rows[1]["progress/episodes"] == 8


def test_torchrun_trains_a_lora_policy_with_fsdp_and_resumes(tiny_qwen, tmp_path):
    from vla_rl.policy.checkpoint import load_policy

    flags = fsdp_run_flags(tiny_qwen, tmp_path, minibatches=1, eval_episodes=0)
    flags += ["--lora_rank", "4", "--learning_rate", "1e-2"]
    result = torchrun(flags)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "training: FSDP over 2 processes" in result.stdout
    checkpoint = json.load(open(tmp_path / "run" / "summary.json"))["final_checkpoint"]
    assert os.path.isfile(os.path.join(checkpoint, "adapter", "adapter_config.json"))
    start = load_policy(tiny_qwen).model.state_dict()
    merged = load_policy(os.path.join(checkpoint, "policy")).model.state_dict()  # LoRA merged, plain format
    assert set(merged) == set(start)
    changed = {name for name in start if not torch.equal(start[name], merged[name])}
    assert changed and all("language_model" in name and name.endswith("proj.weight") for name in changed)
    resumed = torchrun(flags, "--resume", "True", "--max_iterations", "2")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert resumed.stdout.count("resumed from") == 1
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [row["progress/iteration"] for row in rows] == [1, 2]
